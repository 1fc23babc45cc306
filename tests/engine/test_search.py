"""A real Olive search over a ModelBuilder int4 parameter, with Grove's evaluator as Olive's metric and goals."""

from __future__ import annotations

import pytest

from engine.errors import SpecError
from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.spec import recipes
from engine.spec.schema import parse_spec

from .helpers import run_to_end

pytestmark = pytest.mark.slow


def search_spec(demo, size_goal_mb: float) -> dict:
    d = recipes.lab_recipe(demo["model"], demo["dataset"], name="search int4 block size")
    d["passes"][1]["search"] = {"int4_block_size": [16, 32, 128]}
    d["search"] = {"sampler": "sequential"}
    d["evaluation"] = {
        "enabled": True, "max_eval_samples": 10, "generation_length": 16, "repeats": 1,
        "metrics": [{"name": "rouge_l", "priority": 1}, {"name": "size_mb", "priority": 2, "goal": {"type": "threshold", "value": size_goal_mb}}],
    }
    return d


@pytest.fixture(scope="module")
def search_run(demo, demo_run):
    # the demo run shares the LoRA pass through Olive's cache; a size goal between the candidates' sizes
    run = service.submit(parse_spec(search_spec(demo, size_goal_mb=5.0)))
    done = run_to_end(run["id"], timeout=600)
    assert done["status"] == "succeeded", done["error_message"]
    return done


def test_search_yields_distinct_candidates_with_metrics(search_run):
    cands = Registry().candidates(search_run["id"])
    final = [c for c in cands if c["pass_chain"][-1:] == ["extractadapters"]]
    assert len(final) == 3
    sizes = {round(c["metrics"]["size_mb"], 3) for c in final}
    assert len(sizes) == 3  # block sizes 16/32/128 give different models (NOTES C.6)
    blocks = sorted(next(x for x in cands if x["model_id"] == c["parent_model_id"])["pass_params"]["int4_block_size"] for c in final)
    assert blocks == [16, 32, 128]
    for c in final:
        assert set(c["metrics"]) >= {"rouge_l", "decode_tps", "size_mb", "perplexity"}
        assert c["fingerprint_id"]
    assert any(c["pareto"] for c in final)
    baseline = [c for c in cands if c["pass_chain"] == []]
    assert baseline and baseline[0]["metrics"]["size_mb"] > 10  # the input model, evaluated as the baseline


def test_goals_exclude_candidates_and_pick_the_best(search_run):
    final = [c for c in Registry().candidates(search_run["id"]) if c["pass_chain"][-1:] == ["extractadapters"]]
    met = {c["model_id"]: c["goals_met"] for c in final}
    assert set(met.values()) == {0, 1}  # some meet the size goal, some do not
    for c in final:
        assert c["goals_met"] == int(c["metrics"]["size_mb"] <= 5.0)
    best = [c for c in final if c["is_output"]]
    assert len(best) == 1 and best[0]["goals_met"] == 1


def test_unknown_metric_and_bad_percent_goal_are_refused(demo):
    d = search_spec(demo, 5.0)
    d["evaluation"]["metrics"][0]["name"] = "bleu"
    with pytest.raises(SpecError, match=r"metrics\.0\.name: unknown metric 'bleu'") as e:
        parse_spec(d)
    assert "evaluation.metrics" in [p for p, _ in e.value.problems]
    d = search_spec(demo, 5.0)
    d["evaluation"]["metrics"][0]["goal"] = {"type": "percent-max-degradation", "value": 150}
    with pytest.raises(SpecError, match=r"metrics\.0\.goal\.value: 150.0 is out of range"):
        parse_spec(d)
