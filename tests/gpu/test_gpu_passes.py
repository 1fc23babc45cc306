"""The GPU passes through Grove's engine (worker -> runner -> registry) on the demo model, on CUDA."""

from __future__ import annotations

import json
from pathlib import Path

from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.spec import recipes
from engine.spec.schema import parse_spec

from ..engine.helpers import generate
from .conftest import gpu_spec, run_log, run_on_gpus


def _run(spec_dict):
    run = service.submit(parse_spec(spec_dict))
    (done,) = run_on_gpus([run["id"]])
    assert done["status"] == "succeeded", f"{done['error_message']}\n{run_log(done)}"
    assert json.loads(done["gpus"]) == [0] or len(json.loads(done["gpus"])) == 1
    return done


def _memory(run_id):
    return {e["data"]["name"]: e["data"] for e in Registry().events(run_id, kinds=["pass_memory"])}


def test_lab_order_awq_then_lora_then_onnx_on_cuda(demo):
    spec = gpu_spec(recipes.lab_recipe("m", "d", device="gpu"), demo)
    assert [p["type"] for p in spec["passes"]][:3] == ["AutoAWQQuantizer", "AwqDequantize", "LoRA"]
    done = _run(spec)
    cands = Registry().candidates(done["id"])
    chains = sorted(" > ".join(c["pass_chain"]) for c in cands)
    assert chains[-1] == "autoawqquantizer > awqdequantize > lora > modelbuilder > extractadapters"
    awq = next(c for c in cands if c["pass_chain"] == ["autoawqquantizer"])
    q = json.loads(Path(awq["path"], "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "awq" and q["bits"] == 4
    final = next(c for c in cands if c["is_output"])
    gcfg = json.loads(Path(final["path"], "genai_config.json").read_text())
    assert "cuda" in json.dumps(gcfg["model"]["decoder"]["session_options"]).lower()
    assert generate(final["path"], "travel").strip()
    mem = _memory(done["id"])
    assert mem["lora"]["torch_peak_allocated"] > 0 and mem["autoawqquantizer"]["device_peak_used"] > 0


def test_qlora_on_cuda(demo):
    done = _run(gpu_spec(recipes.qlora(), demo))
    final = next(c for c in Registry().candidates(done["id"]) if c["is_output"])
    assert generate(final["path"], "travel").strip()
    assert _memory(done["id"])["qlora"]["torch_peak_allocated"] > 0


def test_gptq_on_cuda_and_evaluated(demo):
    from engine.evaluate.evaluator import evaluate
    from engine.spec.evaluation import EvalConfig

    done = _run(gpu_spec(recipes.gptq(), demo))
    final = next(c for c in Registry().candidates(done["id"]) if c["is_output"])
    q = json.loads(Path(final["path"], "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "olive" and q["bits"] == 4
    ev = evaluate(final["path"], EvalConfig(eval_path=str(Path(done["data_dir"]) / "eval.jsonl"), text_template=recipes.LAB_TEXT_TEMPLATE,
                                            max_samples=8, answer_tokens=8, generation_length=16, repeats=1, device="gpu"))
    assert ev.metrics["loss"] > 0 and not ev.failed.get("loss"), ev.failed
