"""Targets as environments of their own (engine/targets/): the known targets and what they lack, the refusal at
submit, the import of other vendors' recipes, the default environment's check; and (slow) the OpenVINO environment
created from its pinned list, checked, and one small OpenVINO recipe run end to end in it on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import ResourceError
from engine.olive import importer
from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.spec import recipes
from engine.spec.schema import parse_spec
from engine.targets import env as tenv

from .helpers import run_to_end

REPO = Path(__file__).resolve().parents[2]
INPUTS = REPO / "tests" / "inputs" / "olive"


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _ov_spec(demo: dict, steps: int = 6) -> dict:
    r = recipes.openvino_int4()
    r["model"] = {"name": demo["model"]}
    r["dataset"]["path"] = demo["dataset"]
    r["passes"][0]["params"]["training_args"]["max_steps"] = steps
    r["evaluation"] = {"enabled": True, "max_eval_samples": 4, "prompt_length": 16, "generation_length": 8,
                       "repeats": 1, "metrics": [{"name": "loss", "priority": 1}, {"name": "decode_tps", "priority": 2}]}
    return r


def test_target_ls_lists_every_known_target_with_its_state(grove_home):
    p = _cli("target", "ls")
    assert p.returncode == 0, p.stderr
    rows = {ln.split()[0]: ln for ln in p.stdout.splitlines()}
    assert set(rows) == {"default", "openvino", "qnn", "vitisai", "nvtensorrtrtx"}
    assert "OpenVINOExecutionProvider" in rows["openvino"]
    assert rows["qnn"].split()[1] == "unavailable" and "no Snapdragon NPU" in rows["qnn"]
    assert rows["vitisai"].split()[1] == "unavailable" and "Ryzen AI" in rows["vitisai"]
    p = _cli("target", "add", "directml")
    assert p.returncode == 2 and "'directml' is not a target Grove knows" in p.stderr and "Traceback" not in p.stderr


def test_the_default_environment_check_runs_a_real_graph():
    chk = tenv.check("default")
    assert chk["ok"], chk
    assert "ran on CPUExecutionProvider" in chk["detail"] and "matched numpy" in chk["detail"]


def test_a_known_target_this_machine_cannot_run_imports_and_is_refused_at_launch_with_what_it_lacks(demo):
    d, notes = importer.import_text((INPUTS / "qnn_npu.json").read_text(), None)
    assert d["target"] == {"device": "npu", "execution_provider": "QNNExecutionProvider", "precision": "int4"}
    assert [p["type"] for p in d["passes"]][-1] == "EPContextBinaryGenerator"  # its passes are kept
    assert any("target qnn" in n and "this machine cannot run it" in n for n in notes), notes
    spec = parse_spec({**_ov_spec(demo), "passes": [{"type": "LoRA"}],
                       "target": {"device": "npu", "execution_provider": "QNNExecutionProvider"}})
    n_before = len(Registry().list_runs(limit=1000))
    with pytest.raises(ResourceError) as e:
        service.submit(spec)
    assert "target qnn (QNNExecutionProvider) cannot run on this machine" in str(e.value)
    assert "It would need a Snapdragon device" in str(e.value)
    assert len(Registry().list_runs(limit=1000)) == n_before  # nothing queued


def test_an_olive_recipes_openvino_config_imports_for_the_openvino_target(demo):
    text = json.dumps({
        "input_model": {"type": "HfModel", "model_path": "Qwen/Qwen2.5-0.5B-Instruct"},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "gpu", "execution_providers": ["OpenVINOExecutionProvider"]}]}},
        "passes": {
            "optimum_convert": {"type": "OpenVINOOptimumConversion",
                                "extra_args": {"device": "gpu", "task": "text-generation-with-past"},
                                "ov_quant_config": {"weight_format": "int4", "group_size": 128, "ratio": 0.8}},
            "io_update": {"type": "OpenVINOIoUpdate", "static": False, "reuse_cache": True},
            "encapsulation": {"type": "OpenVINOEncapsulation", "target_device": "gpu", "keep_ov_dynamic_dims": True,
                              "ov_version": "2025.1", "reuse_cache": True}},
        "search_strategy": False, "target": "local_system", "output_dir": "model/qwen2_5"})  # qwen2_5_ov_config.json
    d, notes = importer.import_text(text, None)
    assert [p["type"] for p in d["passes"]] == ["OpenVINOOptimumConversion", "OpenVINOIoUpdate", "OpenVINOEncapsulation"]
    assert d["target"] == {"device": "cpu", "execution_provider": "OpenVINOExecutionProvider", "precision": "int4"}
    assert d["passes"][0]["params"]["extra_args"]["device"] == "cpu" and d["passes"][2]["params"]["target_device"] == "cpu"
    text_notes = "\n".join(notes)
    assert "OpenVINO device 'gpu' → cpu" in text_notes and "target openvino" in text_notes
    # the same config as a CPU version still drops the OpenVINO passes, each named
    d, notes = importer.import_text(text, None, target="cpu")
    assert d["passes"] == [] and "(OpenVINOEncapsulation) dropped" in "\n".join(notes)
    # a provider of no known target is still refused in one sentence
    bad = text.replace("OpenVINOExecutionProvider", "DmlExecutionProvider").replace("OpenVINO", "Onnx")
    with pytest.raises(Exception) as e:
        importer.import_text(bad, None)
    assert "this config targets DmlExecutionProvider" in str(e.value)


def test_a_target_with_no_environment_yet_is_refused_at_submit_with_the_command_to_create_it(demo, monkeypatch,
                                                                                               tmp_path):
    monkeypatch.setenv("GROVE_TARGETS_DIR", str(tmp_path / "targets"))  # where no target environment was made
    with pytest.raises(ResourceError) as e:
        service.submit(parse_spec(_ov_spec(demo)))
    assert "target openvino (OpenVINOExecutionProvider) has no environment yet" in str(e.value)
    assert "grove target add openvino" in str(e.value)


# -- the OpenVINO environment, for real ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def openvino_env(grove_home):
    lines: list[str] = []
    existed = tenv.status("openvino")["state"] == "ready"  # GROVE_TEST_HOME / GROVE_TARGETS_DIR may hold one
    t0 = time.perf_counter()
    st = tenv.add("openvino", progress=lambda msg, frac: lines.append(f"{frac} {msg}"))
    return {"status": st, "lines": lines, "seconds": time.perf_counter() - t0, "existed": existed}


@pytest.mark.slow
def test_openvino_environment_is_created_with_progress_checked_and_listed(openvino_env):
    st = openvino_env["status"]
    assert st["state"] == "ready", st
    assert st["check"]["ok"] and "ran on OpenVINOExecutionProvider" in st["check"]["detail"]
    assert "no CPU fallback" in st["check"]["detail"] and "the OpenVINO runtime" in st["check"]["detail"]
    pins = dict(tenv.pins(tenv.get("openvino")))
    for pkg in ("openvino", "openvino-genai", "onnxruntime-openvino", "optimum-intel", "nncf", "olive-ai"):
        assert st["packages"].get(pkg) == pins[pkg], pkg  # installed exactly as pinned
    if not openvino_env["existed"]:  # created here: counted off package by package, then checked
        assert any(f"[{len(pins)}/{len(pins)}]" in ln for ln in openvino_env["lines"]), openvino_env["lines"][-5:]
        assert any("checking: a graph on OpenVINOExecutionProvider" in ln for ln in openvino_env["lines"])
    assert openvino_env["lines"][-1].startswith("1.0 target openvino is ready")
    assert tenv.add("openvino")["state"] == "ready"  # a second add finds it ready and installs nothing
    p = _cli("target", "ls")
    assert "openvino       ready" in p.stdout


@pytest.mark.slow
def test_openvino_recipe_runs_in_its_environment_and_is_measured_like_every_candidate(openvino_env, demo):
    assert openvino_env["status"]["state"] == "ready"
    spec = _ov_spec(demo)
    # a seed of this session's own: an identical spec finished before (a kept GROVE_TEST_HOME) would be reused, not run
    spec["passes"][0]["params"]["training_args"]["seed"] = os.getpid()
    run = service.submit(parse_spec(spec))
    t0 = time.perf_counter()
    done = run_to_end(run["id"], timeout=1800)
    wall = time.perf_counter() - t0
    assert done["status"] == "succeeded", (done["error_message"], Path(done["log_path"]).read_text()[-3000:])
    reg = Registry()
    started = [e["data"]["message"] for e in reg.events(run["id"], kinds=["log"]) if "runner started" in e["data"].get("message", "")]
    assert started and str(tenv.venv_python("openvino")) in started[0]  # the runner ran in the target's interpreter
    cands = reg.candidates(run["id"])
    final = next(c for c in cands if c["is_output"])
    assert final["pass_chain"][-1] == "openvinoencapsulation"
    out = Path(final["path"])
    assert (out / "genai_config.json").is_file() and list(out.glob("openvino_model*.xml"))
    gc = json.loads((out / "genai_config.json").read_text())
    assert "OpenVINO" in gc["model"]["decoder"]["session_options"]["provider_options"][0]
    m = final["metrics"]
    for k in ("loss", "rouge_l", "ttft_ms", "decode_tps", "size_mb", "peak_memory_mb"):
        assert isinstance(m.get(k), (int, float)), (k, m, final.get("failed"))
    assert m["decode_tps"] > 0 and m["size_mb"] > 0.1 and 0 < m["loss"] < 20
    print(f"OpenVINO recipe on the tiny model: {wall:.0f} s; environment {openvino_env['seconds']:.0f} s")
    # Chat talks to it: a server in the OpenVINO environment (engine.chat.ov_model), listed among the chat candidates
    from engine.chat import models as chat_models
    from engine.chat.adapters import adapter_name
    from engine.views.candidates import chat_ready

    assert final["id"] in [c["id"] for c in chat_ready(reg.candidates(run["id"]), adapter_name)]
    m = chat_models.load(final)
    try:
        text, stats = m.answer([{"role": "user", "content": "What should I see in Lisbon?"}], max_new_tokens=8)
        # the tiny model after 6 steps may answer in blank lines: the answer's tokens are what this checks
        assert m.backend == "openvino" and stats.new_tokens == 8 and stats.ttft_s and text, (text, stats)
    finally:
        m.close()
