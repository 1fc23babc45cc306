"""Importing Olive configs of the older (Phi-3 cookbook) and current shapes: never a crash, every meaningful field
mapped with a note, the rest dropped with a note naming it; code and trust_remote_code only with an explicit opt-in;
the imported draft is checked as a submit checks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.olive import catalog, importer

HERE = Path(__file__).resolve().parent.parent / "inputs" / "olive"


@pytest.fixture(scope="module")
def passes():
    return catalog.load()["passes"]


def test_older_cookbook_config_is_mapped_with_notes(passes):
    text = (HERE / "phi3_cookbook_old.json").read_text()
    with pytest.raises(SpecError, match="trust_remote_code"):  # not copied silently
        importer.import_text(text, passes)
    d, notes = importer.import_text(text, passes, allow_code=True)
    all_notes = "\n".join(notes)
    assert d["model"] == {"name": "microsoft/Phi-3-mini-4k-instruct", "trust_remote_code": True, "revision": None}
    assert d["target"]["device"] == "gpu" and d["target"]["execution_provider"] == "CUDAExecutionProvider"
    assert d["resources"]["gpus"] == 1 and d["target"]["precision"] == "int4"
    assert d["dataset"]["path"] == "dataset/dataset-classification.json"
    assert d["dataset"]["text_template"].startswith("### Text: {phrase}") and d["dataset"]["eval_split"] == 0.3
    assert d["dataset"]["max_seq_len"] == 1024
    lora = d["passes"][0]["params"]
    assert lora["r"] == 32 and lora["alpha"] == 64 and "lora_r" not in lora and "double_quant" not in lora
    assert lora["training_args"]["eval_strategy"] == "steps" and "made_up_arg" not in lora["training_args"]
    assert [p["type"] for p in d["passes"]] == ["LoRA", "MergeAdapterWeights", "ModelBuilder"]
    for expected in ("lora_r → r", "lora_alpha → alpha", "evaluation_strategy → eval_strategy", "double_quant",
                     "made_up_arg", "accelerators ['gpu']", "execution_providers", "WARNING",
                     "hf_config.model_name", "eval_dataset_size 0.3 → dataset.eval_split", "corpus_strategy"):
        assert expected in all_notes, expected
    # the draft's only remaining problems name their field: the dataset file is not here
    assert [n for n in notes if n.startswith("to fix")] == [
        n for n in notes if n.startswith("to fix: dataset.path")
    ]


def test_current_config_round_trips_without_fixes(passes):
    d, notes = importer.import_text((HERE / "current.yaml").read_text(), passes)
    assert d["passes"][0]["params"] == {"r": 16, "alpha": 32, "training_args": {"max_steps": 20}}
    assert d["dataset"]["path"] == "data/train.jsonl" and d["dataset"]["max_seq_len"] == 256
    assert d["target"]["execution_provider"] == "CUDAExecutionProvider"
    assert not [n for n in notes if n.startswith("to fill in")]


def test_code_and_remote_stores_are_refused_unless_opted_in(passes):
    text = (HERE / "remote_and_code.yaml").read_text()
    with pytest.raises(SpecError) as e:
        importer.import_text(text, passes)
    msg = str(e.value)
    assert "passes.conv.user_script" in msg and "data_configs.train" in msg
    d, notes = importer.import_text(text, passes, allow_code=True)
    all_notes = "\n".join(notes)
    assert d["passes"][0]["params"] == {"user_script": "loader.py"} and d["allow_user_code"] is True
    assert "AzureML (remote) dropped" in all_notes and "remote data store" in all_notes
    assert "type2" in all_notes


def test_odd_shapes_never_crash(passes):
    for text in ("passes: {a: 3}", "input_model: 5\npasses: {}", "systems: [1]\npasses: {p: {type: LoRA}}",
                 "engine: {execution_providers: [1]}\npasses: {p: [{}]}", "data_configs: {x: 1}\npasses: {}"):
        importer.import_text(text, passes)


def test_yaml_unclosed_quote_points_at_its_line():
    with pytest.raises(SpecError, match="line 2, column"):
        importer.import_text('passes: {}\ninput_model: {model_path: "abc}\nx: 1\n')


# -- Olive's own recipes (issue 19): configs of our own writing in the shapes of microsoft/olive-recipes ------------
def _spec_check(draft: dict, passes: dict, model: str) -> list[str]:
    """The errors a submit would find in the imported draft with its model replaced by a local one (the recipes'
    Hub models are not here). [] means launchable."""
    from engine.olive import validate
    from engine.spec.drafts import to_spec_dict
    from engine.spec.schema import parse_spec

    d = {**draft, "model": {**draft["model"], "name": model}}
    try:
        spec = parse_spec(to_spec_dict(d))
    except SpecError as e:
        return [f"{w}: {m}" for w, m in e.problems]
    return [f"{f['where']}: {f['message']}" for f in validate.problems(spec, catalog=passes) if f["level"] == "error"]


def test_pass_types_are_read_as_olive_reads_them_and_their_parameters_checked(passes, demo):
    d, notes = importer.import_text((HERE / "cpu_int4_lowercase.json").read_text(), passes)
    assert [p["type"] for p in d["passes"]] == ["SelectiveMixedPrecision", "Gptq", "Rtn", "ModelBuilder",
                                                "GraphSurgeries"]
    text = "\n".join(notes)
    assert "gptq → Gptq (Olive reads pass types without regard to case)" in text
    assert "Rtn in this Olive has no parameter 'bogus_knob'" in text  # checked against the canonical pass
    assert d["passes"][2]["params"] == {"bits": 8, "group_size": 64, "lm_head": True}
    assert _spec_check(d, passes, demo["model"]) == []
    # the spec and the one check read them the same way, with parameters checked
    from engine.olive import validate
    from engine.spec.schema import parse_spec

    spec = parse_spec({"model": {"name": demo["model"]}, "passes": [
        {"type": "rtn", "params": {"bits": "eight"}}, {"type": "olive.passes.pytorch.gptq.GPTQ"},
        {"type": "Gptqq"}]})
    assert [p.type for p in spec.passes] == ["Rtn", "Gptq", "Gptqq"]
    found = {f["where"]: f["message"] for f in validate.problems(spec, catalog=passes) if f["level"] == "error"}
    assert found["passes.0.params.bits"] == "'eight' is not one of 2, 4, 8, 16, 32"
    assert "'Gptqq' is not a pass of this Olive (did you mean Gptq" in found["passes.2.type"]


def test_the_device_comes_from_the_execution_provider_as_olive_infers_it(passes, demo):
    from olive.hardware.accelerator import AcceleratorLookup

    for eps in (["CUDAExecutionProvider"], ["CPUExecutionProvider"], ["QNNExecutionProvider"],
                ["CPUExecutionProvider", "CUDAExecutionProvider"], ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                ["DmlExecutionProvider"], ["OpenVINOExecutionProvider"], ["VitisAIExecutionProvider"]):
        try:
            olive = AcceleratorLookup.infer_single_device_from_execution_providers(eps)
        except AssertionError:
            olive = None
        assert importer.olive_device(eps) == olive, eps
    d, notes = importer.import_text((HERE / "cuda_provider_only.json").read_text(), passes)
    assert d["target"]["device"] == "gpu" and d["target"]["execution_provider"] == "CUDAExecutionProvider"
    assert d["resources"]["gpus"] == 1 and [p["type"] for p in d["passes"]] == ["QuaRot", "ModelBuilder"]
    assert "Olive infers 'gpu' from CUDAExecutionProvider" in "\n".join(notes)
    assert not any("needs device" in e for e in _spec_check(d, passes, demo["model"]))
    d, notes = importer.import_text((HERE / "device_only_gpu.yaml").read_text(), passes)  # device, no provider
    assert d["target"]["execution_provider"] == "CUDAExecutionProvider" and d["target"]["precision"] == "fp16"
    assert not [n for n in notes if n.startswith(("to fix", "to fill in"))]


def test_a_hub_data_config_relying_on_olive_defaults_reads_the_text_column(passes, demo):
    d, notes = importer.import_text((HERE / "hub_data_defaults.json").read_text(), passes)
    ds = d["dataset"]
    assert ds["hf_name"] == "example-org/chat-snippets" and ds["hf_split"] == "train[:512]"
    assert ds["text_template"] == "{text}" and ds["max_seq_len"] == 1024  # Olive's TextGenParams defaults
    text = "\n".join(notes)
    assert "Olive's default pre-processing reads the 'text' column" in text and "loha → LoHa" in text
    assert "passes.adapter.eval_data_config (a data config) dropped" not in text or True
    assert [p["type"] for p in d["passes"]] == ["LoHa", "ModelBuilder"]
    assert _spec_check(d, passes, demo["model"]) == []


def test_known_targets_import_for_themselves_others_are_refused_in_one_sentence_or_imported_as_cpu_or_cuda(passes, demo):
    # a target Grove knows (engine.targets) imports for that target with its passes; launching says what is missing
    for name, ep, tname, first in (("qnn_npu.json", "QNNExecutionProvider", "qnn", "QuaRot"),
                                   ("openvino_provider.json", "OpenVINOExecutionProvider", "openvino",
                                    "OpenVINOOptimumConversion")):
        d, notes = importer.import_text((HERE / name).read_text(), passes)
        assert d["target"]["execution_provider"] == ep and d["passes"][0]["type"] == first
        assert any(f"{ep} → target {tname}" in n for n in notes), notes
    # a provider of no known target: refused in one sentence
    with pytest.raises(SpecError) as e:
        importer.import_text((HERE / "directml_gpu.json").read_text(), passes)
    (where, msg), = e.value.problems  # one sentence
    assert where == "systems" and "this config targets DmlExecutionProvider on 'gpu'" in msg
    assert "Grove runs CPU (CPUExecutionProvider) and NVIDIA GPUs" in msg and "target 'cpu' or 'cuda'" in msg
    assert "openvino, qnn, vitisai, nvtensorrtrtx" in msg
    d, notes = importer.import_text((HERE / "qnn_npu.json").read_text(), passes, target="cpu")
    assert [p["type"] for p in d["passes"]] == ["QuaRot", "GptqModel", "ModelBuilder"]
    assert d["target"] == {"device": "cpu", "execution_provider": "CPUExecutionProvider", "precision": "int4"}
    text = "\n".join(notes)
    for dropped in ("MatMulNBitsToQDQ", "SplitModel", "StaticLLM", "EPContextBinaryGenerator"):
        assert f"({dropped}) dropped: it exists for another target" in text
    assert "imported as a CPU version of it" in text
    d, _ = importer.import_text((HERE / "qnn_npu.json").read_text(), passes, target="cuda")
    assert d["target"]["execution_provider"] == "CUDAExecutionProvider" and d["resources"]["gpus"] == 1
    # a CPU recipe asked for as a CUDA version, and a bad target value
    d, _ = importer.import_text((HERE / "cpu_int4_lowercase.json").read_text(), passes, target="cuda")
    assert d["target"]["device"] == "gpu" and _spec_check(d, passes, demo["model"]) == []
    with pytest.raises(SpecError, match="'npu' is not a target this Grove runs"):
        importer.import_text((HERE / "qnn_npu.json").read_text(), passes, target="npu")


def test_olive_accuracy_and_latency_metrics_map_onto_grove_evaluation(passes, demo):
    text = (HERE / "baseline_metrics.yaml").read_text().replace("MODEL", demo["model"]).replace("DATA", demo["dataset"])
    d, notes = importer.import_text(text, passes)
    assert d["passes"] == [] and d["evaluation"]["enabled"] is True
    assert d["evaluation"]["metrics"] == [
        {"name": "perplexity", "priority": 1, "goal": {"type": "max-degradation", "value": 0.5}},
        {"name": "ttft_ms", "priority": 2},
    ]
    assert d["dataset"]["path"] == demo["dataset"] and d["dataset"]["max_seq_len"] == 64  # the metrics' data config
    all_notes = "\n".join(notes)
    assert "quality.accuracy_score (accuracy) not mapped: it scores predicted labels" in all_notes
    assert "speed.p90 (latency) not mapped" in all_notes and "tput.avg (throughput) not mapped" in all_notes
    assert not [n for n in notes if n.startswith(("to fix", "to fill in"))]
    assert _spec_check(d, passes, demo["model"]) == []
    # LMEvaluator: its tasks become Grove's benchmark tasks (engine/olive/import_lmeval.py), a baseline run of them
    d, notes = importer.import_text((HERE / "baseline_lm_eval.json").read_text(), passes)
    assert d["passes"] == [] and d["evaluation"]["enabled"] is True
    assert d["evaluation"]["benchmarks"] == [{"task": "arc_easy", "limit": 8, "num_fewshot": 0, "include_path": None}]
    assert any(n.startswith("LMEvaluator tasks imported as benchmarks: arc_easy (limit 8)") for n in notes), notes
    assert any("evaluators.score.batch_size not imported" in n for n in notes), notes


def test_no_pass_spec_is_a_baseline_run_and_pydantic_never_speaks(demo):
    from engine.olive import config as olive_config
    from engine.spec.drafts import new_draft
    from engine.spec.schema import parse_spec
    from engine.views import preflight

    with pytest.raises(SpecError) as e:
        parse_spec({"model": {"name": demo["model"]}, "passes": []})
    assert e.value.problems == [("passes", "the workflow has no passes: add passes, or enable evaluation to measure "
                                           "the input model as it is (a baseline run)")]
    spec = parse_spec({"model": {"name": demo["model"]},
                       "dataset": {"path": demo["dataset"], "text_template": "{prompt} {response}"},
                       "evaluation": {"enabled": True, "metrics": [{"name": "perplexity"}]}})
    cfg = olive_config.build(spec, output_dir=Path("/tmp/out"), eval_path=Path("/tmp/eval.jsonl"))
    assert cfg["passes"] == {} and cfg["evaluate_input_model"] is True and cfg["evaluator"] == olive_config.EVALUATOR
    # the empty draft: one finding for one cause, and no pydantic wording anywhere
    found = preflight.check(new_draft(demo["model"]), catalog=None)
    assert [f["message"] for f in found if f["where"] == "passes"] == [
        "the workflow has no passes: add passes, or enable evaluation to measure the input model as it is "
        "(a baseline run)"]
    bad = [
        {"model": {"name": demo["model"]}, "passes": [{"type": "LoRA"}], "target": {"execution_provider": "QNNExecutionProvider"}},
        {"model": {}, "passes": "x", "resources": {"gpus": "two"}, "dataset": {"path": "a.jsonl", "eval_split": 2}},
        {"model": {"name": ""}, "passes": [{"type": "LoRA", "bogus": 1}], "evaluation": {"max_eval_samples": 0}},
    ]
    for b in bad:
        with pytest.raises(SpecError) as e:
            parse_spec(b)
        words = "\n".join(m for _, m in e.value.problems)
        for pyd in ("Input should be", "Value error", "List should have", "Field required", "String should have",
                    "Extra inputs are not permitted", "after validation"):
            assert pyd not in words, (pyd, words)
    with pytest.raises(SpecError) as e:
        parse_spec({"model": "m", "passes": [{"type": "LoRA"}], "resources": {"gpus": 1.5},
                    "evaluation": {"enabled": "maybe"}})
    assert sorted(e.value.problems) == [("evaluation.enabled", "must be true or false, not 'maybe'"),
                                        ("model", "must be a mapping, not 'm'"),
                                        ("resources.gpus", "must be a whole number, not 1.5")]
    with pytest.raises(SpecError) as e:
        parse_spec(bad[0])
    assert e.value.problems == [("target", "execution_provider QNNExecutionProvider runs on device 'npu' (target qnn), "
                                           "not 'cpu'")]
    with pytest.raises(SpecError) as e:
        parse_spec({**bad[0], "target": {"execution_provider": "DmlExecutionProvider"}})
    assert e.value.problems == [("target.execution_provider", "'DmlExecutionProvider' is not an execution provider "
                                 "Grove knows; it knows CPUExecutionProvider, CUDAExecutionProvider, "
                                 "TensorrtExecutionProvider, OpenVINOExecutionProvider, QNNExecutionProvider, "
                                 "VitisAIExecutionProvider, NvTensorRTRTXExecutionProvider")]


def test_cli_import_refuses_a_foreign_target_in_one_sentence_and_writes_a_cpu_version(tmp_path, python):
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([python, "-m", "engine.cli", "import", str(HERE / "directml_gpu.json")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 2 and "this config targets DmlExecutionProvider" in p.stderr
    assert "Traceback" not in p.stderr
    out = tmp_path / "spec.yaml"
    p = subprocess.run([python, "-m", "engine.cli", "import", str(HERE / "qnn_npu.json"), "--target", "cpu", "-o",
                        str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    import yaml

    spec = yaml.safe_load(out.read_text())
    assert [x["type"] for x in spec["passes"]] == ["QuaRot", "GptqModel", "ModelBuilder"]
    assert "StaticLLM) dropped" in p.stderr and "to fill in" not in p.stderr


@pytest.mark.slow
def test_a_baseline_run_measures_the_input_model_with_olive(demo):
    """A real Olive run of a workflow with no passes, imported from an Olive config of a baseline recipe's shape:
    Olive evaluates the input model with Grove's evaluator; the run succeeds with that one candidate, measured, and
    Compare lists it."""
    from engine.runs import submit as service
    from engine.runs.registry import Registry
    from engine.spec.drafts import to_spec_dict
    from engine.spec.schema import parse_spec
    from engine.views.comparison import Comparison

    from .helpers import run_to_end

    text = (HERE / "baseline_metrics.yaml").read_text().replace("MODEL", demo["model"]).replace("DATA", demo["dataset"])
    d, _ = importer.import_text(text, catalog.load()["passes"])
    d["name"] = "baseline of the tiny model"
    d["evaluation"].update(max_eval_samples=4, prompt_length=16, generation_length=4, repeats=1)
    run = service.submit(parse_spec(to_spec_dict(d)))
    done = run_to_end(run["id"], timeout=600)
    assert done["status"] == "succeeded", done["error_message"]
    cands = Registry().candidates(done["id"])
    assert len(cands) == 1
    c = cands[0]
    assert c["from_pass"] == "input" and c["is_output"] == 1 and c["path"] == demo["model"]
    assert c["metrics"]["perplexity"] > 1 and c["metrics"]["ttft_ms"] > 0 and c["fingerprint_id"]
    cmp = Comparison.read(Registry(), [done["id"]], {done["id"]: done["name"]})
    assert len(cmp.ids) == 1 and {"perplexity", "ttft_ms"} <= set(cmp.metric_names)


def test_grove_added_lora_exclusions_are_dropped_and_the_users_own_kept(passes):
    lora_nodes = [f"/model/layers.{i}/attn/qkv_proj/lora_{ab}/MatMul" for i in range(2) for ab in "AB"]
    text = (
        "input_model: {type: HfModel, model_path: m}\n"
        "passes:\n"
        "  lora: {type: LoRA, r: 8}\n"
        f"  mb: {{type: ModelBuilder, precision: int4, int4_nodes_to_exclude: {['/lm_head/MatMul', *lora_nodes]}}}\n"
    )
    d, _ = importer.import_text(text, passes)
    assert d["passes"][1]["params"]["int4_nodes_to_exclude"] == ["/lm_head/MatMul"]
    only_grove = text.replace("'/lm_head/MatMul', ", "")
    d, _ = importer.import_text(only_grove, passes)
    assert "int4_nodes_to_exclude" not in d["passes"][1]["params"]
