"""Benchmark tasks (lm-evaluation-harness) as metrics: the spec names bad entries by field, Olive's LMEvaluator
imports as benchmarks, the local travel task is lm-eval's own format and is fingerprinted by its files, and real
lm-eval runs on the tiny model's candidates (PyTorch with and without the LoRA adapter, onnxruntime-genai with the
adapter on and off), cached per candidate and task."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.data.benchmark_task import TRAVEL_TASK, build_travel_mc, load_task_yaml, travel_mc_docs
from engine.errors import SpecError
from engine.evaluate import benchmark_run, benchmarks
from engine.evaluate.evaluator import EvalResult, model_identity
from engine.evaluate.fingerprint import task_fingerprint
from engine.olive.importer import from_olive_config
from engine.runs.registry import Registry
from engine.spec.drafts import to_spec_dict
from engine.spec.evaluation import EvalConfig
from engine.spec.schema import parse_spec

BASE = {"model": {"name": "x"}, "passes": [{"type": "LoRA"}]}


def _spec(**evaluation):
    return parse_spec({**BASE, "evaluation": evaluation})


# -- the spec ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entries, says", [
    ([{"task": "hellaswag"}], "benchmarks.0.limit: missing; say how many examples"),
    ([{"task": "hellaswag", "limit": 0}], "benchmarks.0.limit: must be a whole number of examples from 1"),
    ([{"task": "hellaswag", "limit": "ten"}], "benchmarks.0.limit: must be a whole number"),
    ([{"task": "hellaswag", "limit": 5}, {"task": "hellaswag", "limit": 5}], "benchmarks.1.task: 'hellaswag' is listed twice"),
    ([{"task": "hella swag", "limit": 5}], "benchmarks.0.task: needs an lm-eval task name"),
    ([{"task": "arc_easy", "limit": 5, "shots": 2}], "benchmarks.0: unknown field(s) shots"),
    (["hellaswag"], "benchmarks.0: give the task with a limit, e.g. {task: hellaswag, limit: 100}"),
    ([{"task": "arc_easy", "limit": 5, "num_fewshot": -1}], "benchmarks.0.num_fewshot: must be a whole number from 0"),
])
def test_bad_benchmark_entries_are_named_in_groves_words(entries, says):
    with pytest.raises(SpecError) as e:
        _spec(benchmarks=entries)
    msg = str(e.value)
    assert says in msg, msg
    assert "Input should" not in msg and "Value error" not in msg


def test_goal_on_a_benchmark_accuracy_needs_the_task():
    s = _spec(benchmarks=[{"task": "arc_easy", "limit": 50}],
              metrics=[{"name": "acc:arc_easy", "priority": 1, "goal": {"type": "max-degradation", "value": 0.01}}])
    assert s.evaluation.metrics[0].name == "acc:arc_easy"
    with pytest.raises(SpecError) as e:
        _spec(benchmarks=[{"task": "arc_easy", "limit": 50}], metrics=[{"name": "acc:mmlu", "priority": 1}])
    assert "metrics.0.name: 'acc:mmlu' measures the task 'mmlu', which is not in evaluation.benchmarks" in str(e.value)


def test_olive_config_carries_benchmarks_and_their_goal(tmp_path):
    from engine.olive.config import evaluator

    task = build_travel_mc(tmp_path)
    spec = parse_spec({**BASE, "dataset": {"path": "d.jsonl", "chat_template": True},
                       "evaluation": {"enabled": True, "benchmarks": [{"task": TRAVEL_TASK, "limit": 20,
                                                                        "include_path": str(task.parent)}],
                                      "metrics": [{"name": "acc:travel_mc", "priority": 1,
                                                   "goal": {"type": "max-degradation", "value": 0.01}}]}})
    ev = evaluator(spec, tmp_path / "eval.jsonl", "k")["metrics"][0]
    sub = {s["name"]: s for s in ev["sub_types"]}
    # Olive's goal on the accuracy: "at most 1 point below the baseline"
    assert sub["acc:travel_mc"] == {"name": "acc:travel_mc", "higher_is_better": True, "priority": 1,
                                    "goal": {"type": "max-degradation", "value": 0.01}}
    assert sub["acc_stderr:travel_mc"] == {"name": "acc_stderr:travel_mc", "higher_is_better": False, "priority": -1}
    cfg = ev["user_config"]["evaluate_func_kwargs"]["config"]
    assert cfg["benchmarks"] == [{"task": "travel_mc", "limit": 20, "num_fewshot": 0, "include_path": str(task.parent)}]


# -- the local task ---------------------------------------------------------------------------------------------------
def test_travel_task_is_lm_evals_format_seeded_with_answers_to_other_questions(tmp_path):
    y = build_travel_mc(tmp_path)
    doc = load_task_yaml(y.read_text())
    assert doc["task"] == TRAVEL_TASK and doc["output_type"] == "multiple_choice"
    data = Path(doc["dataset_kwargs"]["data_files"]["test"])
    docs = [json.loads(ln) for ln in data.read_text().splitlines()]
    rows = [json.loads(ln) for ln in Path("engine/assets/travel_sample.jsonl").read_text().splitlines() if ln.strip()]
    assert len(docs) == len(rows) == 400
    answers = {r["response"] for r in rows}
    for d, r in zip(docs, rows, strict=True):
        assert d["question"] == r["prompt"] and d["choices"][d["label"]] == r["response"]
        assert len(set(d["choices"])) == 4 and set(d["choices"]) <= answers  # distractors: other questions' answers
    assert len({d["label"] for d in docs}) == 4  # the right answer is not always in one place
    assert travel_mc_docs(rows) == docs  # seeded: the same task on every machine
    before = y.stat().st_mtime_ns
    build_travel_mc(tmp_path)
    assert y.stat().st_mtime_ns == before  # rewritten only when it changes (its hash is in the fingerprint)


def test_task_fingerprint_follows_the_task_files(tmp_path):
    build_travel_mc(tmp_path)
    cfg = EvalConfig(eval_path="x", benchmarks=[{"task": TRAVEL_TASK, "limit": 10, "include_path": str(tmp_path)}])
    fp = task_fingerprint(cfg.benchmarks[0], cfg)
    assert fp["task"] == TRAVEL_TASK and fp["limit"] == 10 and fp["task_version"] == 1.0
    assert fp["task_hash"] and fp["data_hash"] and "lm_eval" in fp["versions"]
    data = tmp_path / "travel_mc.jsonl"
    data.write_text(data.read_text().replace("Paris", "Lyon", 1))
    assert task_fingerprint(cfg.benchmarks[0], cfg)["data_hash"] != fp["data_hash"]
    other = EvalConfig(eval_path="x", benchmarks=[{"task": TRAVEL_TASK, "limit": 11, "include_path": str(tmp_path)}])
    assert task_fingerprint(other.benchmarks[0], other)["limit"] == 11
    assert task_fingerprint({"task": "hellaswag", "limit": 5}, cfg)["task_file"] == "hellaswag.yaml"


# -- import -----------------------------------------------------------------------------------------------------------
def test_lm_evaluator_config_imports_as_benchmarks():
    cfg = {
        "input_model": {"type": "HfModel", "model_path": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "passes": {"builder": {"type": "ModelBuilder", "precision": "int4"}},
        "evaluators": {
            "lm": {"type": "LMEvaluator", "tasks": ["hellaswag", "arc_easy"], "limit": 250, "batch_size": 16,
                   "model_class": "ortgenai", "max_length": 1024},
            "size": {"metrics": [{"name": "latency", "type": "latency"}]},
        },
        "evaluator": "lm",
    }
    draft, notes = from_olive_config(cfg, {})
    ev = draft["evaluation"]
    # the config gives no dataset: candidates are measured on the tasks alone, and the draft is a valid spec
    assert ev["enabled"] is True
    assert any(n.startswith("evaluation: no dataset, so candidates are measured on the benchmark tasks only")
               for n in notes), notes
    assert parse_spec(to_spec_dict(draft)).dataset is None
    assert ev["benchmarks"] == [
        {"task": "hellaswag", "limit": 250, "num_fewshot": 0, "include_path": None},
        {"task": "arc_easy", "limit": 250, "num_fewshot": 0, "include_path": None},
    ]
    text = "\n".join(notes)
    assert "evaluators.lm.batch_size not imported" in text and "evaluators.lm.model_class not imported" in text
    # Olive measures with the chosen evaluator ("evaluator": "lm") alone: it is mapped whole, nothing of it "not mapped"
    assert not any(n.startswith("evaluators.lm") and "not mapped" in n for n in notes), notes
    no_limit, notes = from_olive_config({**cfg, "evaluators": {"lm": {"type": "LMEvaluator", "tasks": ["mmlu"]}}}, {})
    assert no_limit["evaluation"]["benchmarks"][0]["limit"] == 100
    assert any("no limit given; 100 examples per task used" in n for n in notes)
    assert not any("evaluators are not imported" in n for n in notes)


# -- real lm-eval on the tiny model's candidates ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return build_travel_mc(tmp_path_factory.mktemp("bench")).parent


def _cfg(task_dir: Path, limit: int = 12) -> EvalConfig:
    return EvalConfig(eval_path="x", benchmarks=[{"task": TRAVEL_TASK, "limit": limit, "num_fewshot": 0,
                                                  "include_path": str(task_dir)}])


def _candidates(demo_run: dict) -> dict[str, dict]:
    cands = Registry().candidates(demo_run["id"])
    out = {}
    for c in cands:
        chain = c.get("pass_chain") or []
        if not chain:
            out["base"] = c
        elif (c.get("model_type") or "").lower().startswith(("hf", "pytorch")) and c.get("adapter_path"):
            out["lora"] = c
        elif Path(c.get("path") or "", "adapter_weights.onnx_adapter").is_file() and not c["model_id"].endswith("-no-adapter"):
            out["onnx"] = c
    return out


@pytest.mark.slow
def test_lm_eval_runs_every_candidate_kind_with_standard_errors(demo, demo_run, task_dir):
    cands = _candidates(demo_run)
    assert {"lora", "onnx"} <= set(cands), sorted(cands)
    cands.setdefault("base", {"path": demo["model"]})  # the input model (a candidate when the run evaluated it)
    cfg = _cfg(task_dir)
    entries = list(cfg.benchmarks)
    runs = {
        "pytorch": (cands["base"]["path"], None),
        "pytorch + LoRA": (cands["lora"]["path"], cands["lora"]["adapter_path"]),
        "genai, adapter on": (cands["onnx"]["path"], "adapter"),
        "genai, adapter off": (cands["onnx"]["path"], None),
    }
    res = {k: benchmark_run.measure(p, a, cfg, entries)[TRAVEL_TASK] for k, (p, a) in runs.items()}
    for k, r in res.items():
        assert "error" not in r, (k, r)
        assert r["metric"] == "acc" and 0.0 <= r["acc"] <= 1.0 and r["examples"] == 12
        assert r["acc_stderr"] > 0 or r["acc"] in (0.0, 1.0), (k, r)
    # the adapter is really active in onnxruntime-genai: the same request scores differently with it on and off
    req = ("Question: How do I get around Paris without a car?\nAnswer:", " The Métro is fast.")
    on = benchmark_run.make_lm(cands["onnx"]["path"], "adapter", cfg)
    off = benchmark_run.make_lm(cands["onnx"]["path"], None, cfg)
    from lm_eval.api.instance import Instance

    def ll(lm):
        return lm.loglikelihood([Instance("loglikelihood", {}, req, 0)], disable_tqdm=True)[0][0]

    assert abs(ll(on) - ll(off)) > 1e-4
    with pytest.raises(FileNotFoundError, match="no adapter 'nope'"):
        benchmark_run.make_lm(cands["onnx"]["path"], "nope", cfg)


@pytest.mark.slow
def test_second_evaluation_reuses_each_task(demo_run, task_dir):
    cands = _candidates(demo_run)
    reg = Registry()
    cfg = _cfg(task_dir, limit=8)
    path = cands["onnx"]["path"]
    ident = model_identity(path, "adapter")
    first = EvalResult(path, "adapter", "onnxruntime-genai")
    t0 = time.perf_counter()
    assert benchmarks.add_benchmarks(first, path, cfg, adapter="adapter", reg=reg, identity=ident) == {TRAVEL_TASK: False}
    took = time.perf_counter() - t0
    assert 0 <= first.metrics["acc:travel_mc"] <= 1 and "acc_stderr:travel_mc" in first.metrics
    again = EvalResult(path, "adapter", "onnxruntime-genai")
    t0 = time.perf_counter()
    assert benchmarks.add_benchmarks(again, path, cfg, adapter="adapter", reg=reg, identity=ident) == {TRAVEL_TASK: True}
    assert time.perf_counter() - t0 < took / 3  # no lm-eval, no model load: a registry read
    assert again.metrics == first.metrics
    # another limit is another fingerprint: measured again, not mixed up with the first
    more = EvalResult(path, "adapter", "onnxruntime-genai")
    assert benchmarks.add_benchmarks(more, path, _cfg(task_dir, limit=9), adapter="adapter", reg=reg,
                                     identity=ident) == {TRAVEL_TASK: False}
    # a task that cannot run fails that metric only, with the reason
    bad = EvalResult(path, None, "onnxruntime-genai")
    broken = EvalConfig(eval_path="x", benchmarks=[{"task": "no_such_task", "limit": 2, "include_path": str(task_dir)}])
    benchmarks.add_benchmarks(bad, path, broken, adapter=None, reg=reg, identity=model_identity(path, None))
    assert "acc:no_such_task" in bad.failed and "acc:no_such_task" not in bad.metrics


# -- Compare and the report -------------------------------------------------------------------------------------------
def _cmp():
    from engine.views.comparison import Comparison

    def cand(i, chain, acc, se, tps):
        return {"id": i, "run_id": "r1", "run_name": "demo", "pass_chain": chain, "adapter_path": None,
                "size_bytes": 1e6, "is_output": 0, "goals_met": 0, "fingerprint_id": "f",
                "metrics": {"acc:travel_mc": acc, "acc_stderr:travel_mc": se, "decode_tps": tps, "rouge_l": 0.1}}

    return Comparison.from_candidates([cand(1, [], 0.30, 0.05, 100.0), cand(2, ["lora"], 0.55, 0.06, 90.0),
                                       cand(3, ["lora", "int4"], 0.50, 0.06, 400.0)])


def test_compare_and_report_chart_the_accuracy_with_its_error_bar():
    import numpy as np

    from engine.views import charts, comparison, report

    cmp = _cmp()
    assert report.axes(cmp.metric_names)[0] == ("decode_tps", "acc:travel_mc")  # the first quality axis
    front = comparison.pareto(cmp, "decode_tps", "acc:travel_mc")
    assert front.tolist() == [False, True, True]  # higher accuracy is better, like any quality metric
    bounds, met, _ = comparison.goals(cmp, {"r1": json.dumps({"evaluation": {"metrics": [
        {"name": "acc:travel_mc", "goal": {"type": "max-degradation", "value": 0.01}}]}})})
    assert bounds["r1"]["acc:travel_mc"]["bound"] == pytest.approx(0.29)  # the input model's accuracy - 1 point
    assert met.tolist() == [True, True, True]
    fig = charts.pareto_figure(cmp, np.ones(3), "decode_tps", "acc:travel_mc", front, np.arange(3), bounds, met)
    bars = [t.error_y for t in fig.data if t.error_y is not None and t.error_y.array is not None]
    assert sorted(v for b in bars for v in b.array) == [0.05, 0.06, 0.06]
    assert all(t.error_x.array is None for t in fig.data)  # speed has no standard error


# -- benchmarks only: an evaluation without a dataset ------------------------------------------------------------------
NO_DATA = {"model": {"name": "x"}, "passes": [{"type": "ModelBuilder", "params": {"precision": "int4"}}]}


def test_an_evaluation_of_benchmark_tasks_needs_no_dataset(tmp_path):
    from engine.evaluate.compare import comparability_of
    from engine.evaluate.fingerprint import NO_DATASET, fingerprint, fingerprint_id
    from engine.olive import config as olive_config

    bench = [{"task": "arc_easy", "limit": 20}]
    spec = parse_spec({**NO_DATA, "evaluation": {"enabled": True, "benchmarks": bench, "metrics": [
        {"name": "acc:arc_easy", "priority": 1}, {"name": "decode_tps", "priority": 2}]}})
    assert spec.dataset is None
    # without tasks there is nothing to measure candidates on; a held-out metric cannot rank without held-out rows
    with pytest.raises(SpecError, match=r"dataset: evaluation needs a dataset .* or benchmark tasks"):
        parse_spec({**NO_DATA, "evaluation": {"enabled": True}})
    with pytest.raises(SpecError) as e:
        parse_spec({**NO_DATA, "evaluation": {"enabled": True, "benchmarks": bench, "metrics": [
            {"name": "acc:arc_easy", "priority": 1}, {"name": "rouge_l", "priority": 2}]}})
    assert "evaluation.metrics.1.name: 'rouge_l' is measured on a dataset's held-out split" in str(e.value)
    # Olive gets Grove's evaluator with no held-out file; the fingerprint says so and names the speed prompts
    cfg = olive_config.build(spec, output_dir=tmp_path)["evaluators"]["grove"]["metrics"][0]["user_config"]
    ec = EvalConfig(**cfg["evaluate_func_kwargs"]["config"])
    assert ec.eval_path is None and ec.benchmarks[0]["task"] == "arc_easy"
    fp = fingerprint(ec)
    assert fp["dataset"] == NO_DATASET and fp["eval_rows"] == 0 and fp["speed_prompts"].startswith("built-in ")
    held = fingerprint(EvalConfig(eval_path=build_travel_mc(tmp_path).with_suffix(".jsonl").as_posix(),
                                  benchmarks=ec.benchmarks))
    ok, why = comparability_of({fingerprint_id(fp): 1, fingerprint_id(held): 1},
                               {fingerprint_id(fp): fp, fingerprint_id(held): held})
    assert not ok and "dataset" in why and "speed_prompts" in why


@pytest.mark.slow
def test_benchmark_runs_through_the_worker_with_and_without_a_dataset(demo):
    """Two real Olive runs through Grove's worker on the tiny model: (1) int4 ONNX with a dataset and travel_mc as a
    ranked metric: every candidate carries its accuracy and standard error in the registry and in Compare's data;
    (2) a baseline with no dataset measuring travel_mc alone: the input model's accuracy comes from the first run's
    cached result, held-out metrics are skipped (not failed), speed is timed on the built-in prompts, and Compare
    says the two runs were measured differently."""
    from engine.evaluate.compare import comparability_of
    from engine.evaluate.fingerprint import NO_DATASET
    from engine.runs import submit as service
    from engine.spec import recipes
    from engine.views.comparison import Comparison

    from .helpers import run_to_end

    task_dir = build_travel_mc().parent  # GROVE_HOME/benchmarks, inside the allowed roots (as the Workflow page writes it)
    bench = [{"task": TRAVEL_TASK, "limit": 6, "include_path": str(task_dir)}]
    small = {"max_eval_samples": 4, "prompt_length": 16, "generation_length": 4, "repeats": 1}
    reg = Registry()
    with_data = parse_spec({
        "name": "int4 + travel_mc", "model": {"name": demo["model"]}, "dataset": {"path": demo["dataset"], "text_template": recipes.LAB_TEXT_TEMPLATE},
        "passes": [{"type": "ModelBuilder", "params": {"precision": "int4"}}],
        "evaluation": {"enabled": True, **small, "benchmarks": bench, "metrics": [
            {"name": "acc:travel_mc", "priority": 1, "goal": {"type": "max-degradation", "value": 1.0}},
            {"name": "loss", "priority": 2}]}})
    a = run_to_end(service.submit(with_data)["id"], timeout=900)
    assert a["status"] == "succeeded", a["error_message"]
    cands = reg.candidates(a["id"])
    assert len(cands) == 2  # the input model (PyTorch) and the int4 ONNX model
    for c in cands:
        m = c["metrics"]
        assert 0 <= m["acc:travel_mc"] <= 1 and m["acc_stderr:travel_mc"] >= 0 and m["loss"] > 0, c
        assert not c.get("failed"), c
    cmp = Comparison.read(reg, [a["id"]], {a["id"]: a["name"]})
    assert {"acc:travel_mc", "acc_stderr:travel_mc", "loss", "decode_tps"} <= set(cmp.metric_names)
    assert sorted(m["acc:travel_mc"] for m in cmp.metrics) == sorted(c["metrics"]["acc:travel_mc"] for c in cands)

    only = parse_spec({
        "name": "travel_mc only", "model": {"name": demo["model"]}, "passes": [],
        "evaluation": {"enabled": True, **small, "benchmarks": bench, "metrics": [
            {"name": "acc:travel_mc", "priority": 1}, {"name": "decode_tps", "priority": 2}]}})
    b = run_to_end(service.submit(only)["id"], timeout=900)
    assert b["status"] == "succeeded", b["error_message"]
    (base,) = reg.candidates(b["id"])
    first_base = next(c for c in cands if not (c.get("pass_chain") or []))
    assert base["metrics"]["acc:travel_mc"] == first_base["metrics"]["acc:travel_mc"]  # cached per candidate and task
    assert base["metrics"]["ttft_ms"] > 0 and base["metrics"]["size_mb"] > 0
    assert not {"loss", "perplexity", "rouge_l", "exact_match"} & set(base["metrics"]), base["metrics"]
    assert not base.get("failed"), base["failed"]
    fps = reg.fingerprints([base["fingerprint_id"], first_base["fingerprint_id"]])
    assert fps[base["fingerprint_id"]]["dataset"] == NO_DATASET
    ok, why = comparability_of({base["fingerprint_id"]: 1, first_base["fingerprint_id"]: 2}, fps)
    assert not ok and "dataset" in why
