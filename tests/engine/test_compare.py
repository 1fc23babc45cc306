"""Compare's engine side: goal bounds (Olive's goal types), per-example comparison, where answers diverge, the
A/B leaderboard, votes stored as feedback rows, the lineage graph and the self-contained report."""

from __future__ import annotations

import json

import pytest

from engine.evaluate import compare
from engine.views import candidates as cand_views
from engine.views import lineage


@pytest.mark.parametrize(
    ("metric", "kind", "value", "bound"),
    [
        ("rouge_l", "threshold", 0.3, 0.3),
        ("rouge_l", "max-degradation", 0.05, 0.35),
        ("rouge_l", "min-improvement", 0.05, 0.45),
        ("rouge_l", "percent-max-degradation", 10, 0.36),
        ("loss", "max-degradation", 0.5, 2.5),
        ("loss", "percent-min-improvement", 10, 1.8),
    ],
)
def test_goal_bounds_follow_olive_goal_types(metric, kind, value, bound):
    base = {"rouge_l": 0.4, "loss": 2.0}
    assert compare.goal_bound(metric, {"type": kind, "value": value}, base) == pytest.approx(bound)


def test_meets_every_goal_and_undecided_without_a_baseline():
    b = compare.goal_bounds({"rouge_l": {"type": "max-degradation", "value": 0.05},
                             "decode_tps": {"type": "threshold", "value": 50}}, {"rouge_l": 0.4})
    assert compare.meets({"rouge_l": 0.36, "decode_tps": 60}, b) is True
    assert compare.meets({"rouge_l": 0.34, "decode_tps": 60}, b) is False
    assert compare.meets({"rouge_l": 0.36, "decode_tps": 40}, b) is False
    assert compare.meets({"rouge_l": 0.5}, compare.goal_bounds({"rouge_l": {"type": "min-improvement", "value": 1}}, None)) is None
    spec = {"evaluation": {"metrics": [{"name": "rouge_l", "priority": 1, "goal": {"type": "threshold", "value": 0.2}}]}}
    cands = [{"id": 1, "run_id": "r", "pass_chain": [], "metrics": {"rouge_l": 0.1}},
             {"id": 2, "run_id": "r", "pass_chain": ["lora"], "metrics": {"rouge_l": 0.3}}]
    bounds, meets = cand_views.goal_context({"r": json.dumps(spec)}, cands)
    assert bounds["r"]["rouge_l"]["bound"] == 0.2 and meets == [False, True]


def ex(i, answer, rl, loss=1.0):
    return {"index": i, "prompt": f"p{i}", "reference": f"r{i}", "answer": answer, "rouge_l": rl, "exact_match": 0.0, "loss": loss}


def test_per_example_sorted_by_largest_difference():
    a = [ex(0, "x", 0.5), ex(1, "y", 0.2), ex(2, "z", 0.9)]
    b = [ex(2, "z", 0.1), ex(0, "x", 0.5), ex(1, "w", 0.6)]
    rows = compare.per_example(a, b, "rouge_l")
    assert [r["example"] for r in rows] == [2, 1, 0]
    assert rows[0]["B better by"] == pytest.approx(-0.8) and rows[1]["answer B"] == "w"
    loss = compare.per_example([ex(0, "x", 0, loss=2.0)], [ex(0, "x", 0, loss=1.5)], "loss")
    assert loss[0]["B better by"] == pytest.approx(0.5)  # lower loss is better: positive means B is better


def test_first_divergence_and_disagreements():
    assert compare.first_divergence(["Visit the Alfama at dusk", "Visit the castle", "Visit the Alfama"]) == (
        2, "Visit the", ["Alfama", "castle", "Alfama"])
    assert compare.first_divergence(["same words", "same words"])[0] == -1
    assert compare.first_divergence(["a b", "a b c"]) == (2, "a b", ["", "c"])
    rows = compare.disagreements([[ex(0, "a b", 0), ex(1, "same", 0)], [ex(1, "same", 0), ex(0, "a c", 0)]])
    assert [r["diverge at word"] for r in rows] == [1, -1] and rows[0]["A then"] == "b" and rows[0]["B then"] == "c"


def test_leaderboard_elo_and_win_rate():
    votes = [{"a": "x", "b": "y", "winner": "a"}] * 3 + [{"a": "y", "b": "x", "winner": "tie"}]
    board = compare.leaderboard(votes)
    assert [r["contestant"] for r in board] == ["x", "y"]
    assert board[0]["votes"] == 4 and board[0]["win rate"] == pytest.approx(3.5 / 4) and board[0]["Elo"] > 1000


def test_votes_are_feedback_rows_and_reach_the_leaderboard(fresh_home):
    from engine.chat.feedback import save_vote
    from engine.runs.registry import Registry

    reg = Registry()
    a = {"id": 1, "run_id": "r1", "path": "/m/a", "adapter": "adapter"}
    b = {"id": 2, "run_id": "r2", "path": "/m/b", "adapter": "none"}
    save_vote("b", prompt="Lisbon?", a=a, b=b, answers=("x", "y"), registry=reg)
    save_vote("tie", prompt="Porto?", a=a, b=b, answers=("x", "y"), registry=reg)
    assert len(reg.feedback()) == 2 and [v["rating"] for v in reg.ab_votes()] == [-1, 0]
    board = compare.leaderboard(cand_views.vote_rows(reg.ab_votes()))
    assert board[0]["contestant"] == "#2 · none" and board[0]["win rate"] == pytest.approx(0.75)
    with pytest.raises(Exception, match="winner"):
        save_vote("c", prompt="", a=a, b=b, registry=reg)


def test_lineage_marks_reuse_and_time_saved():
    cands = [
        {"model_id": "m-lora", "parent_model_id": "input", "run_id": "r1", "from_pass": "lora", "pass_chain": ["lora"], "created_at": 1},
        {"model_id": "m-int4", "parent_model_id": "m-lora", "run_id": "r1", "from_pass": "mb", "pass_chain": ["lora", "mb"], "created_at": 2},
        {"model_id": "m-lora", "parent_model_id": "input", "run_id": "r2", "from_pass": "lora", "pass_chain": ["lora"], "created_at": 3},
    ]
    events = {
        "r1": [{"kind": "pass_finished", "data": {"name": "lora", "seconds": 42.0}}],
        "r2": [{"kind": "pass_cached", "data": {"name": "lora", "model_id": "m-lora"}}],
    }
    names = {"r1": 'first "run"', "r2": "second"}
    reused = lineage.reuses(cands, events, names)
    assert reused == [{"run": "second", "pass": "lora", "model id": "m-lora", "first made in": 'first "run"', "seconds saved": 42.0}]
    dot = lineage.dot(cands, reused, names)
    assert "saved 42 s" in dot and '"m-lora" -> "m-int4"' in dot and 'first \\"run\\"' in dot and "input model" in dot


def test_report_is_self_contained(ui_home_like):
    from engine.views import report

    reg, rid = ui_home_like
    html = report.build(reg, [rid])
    assert html.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in html and "<script src=\"http" not in html
    assert "&lt;b&gt;bold run&lt;/b&gt;" in html and "<b>bold run</b>" not in html  # user text is escaped
    assert "Kept samples (2)" in html and "Package versions" in html and "Run specs" in html


@pytest.fixture
def ui_home_like(fresh_home):
    from engine.runs.registry import Registry

    reg = Registry()
    run = reg.create_run(spec_json=json.dumps({"evaluation": {"metrics": [
        {"name": "rouge_l", "priority": 1, "goal": {"type": "threshold", "value": 0.2}}]}}),
        spec_hash="h", name="<b>bold run</b>", olive_config="{}", gpus_wanted=0)
    fp = {"dataset": "d", "versions": {}}
    reg.save_evaluation("k1", {"model_path": "/m", "form": "onnx", "fingerprint": fp, "metrics": {},
                               "samples": [ex(0, "a", 0.1), ex(1, "b", 0.3)]}, "fp1")
    reg.upsert_candidates(run["id"], [
        {"model_id": "m1", "pass_chain": ["lora"], "metrics": {"rouge_l": 0.3, "decode_tps": 40.0, "size_mb": 5.0},
         "eval_key": "k1", "fingerprint_id": "fp1", "is_output": 1, "path": "/m"},
        {"model_id": "m2", "pass_chain": ["lora", "mb"], "metrics": {"rouge_l": 0.1, "decode_tps": 90.0, "size_mb": 2.0},
         "fingerprint_id": "fp1", "path": "/m2"},
    ])
    return reg, run["id"]


# -- Compare's columns: the registry read, the front, the goal marks, the table and the chart sample ------------------
def test_compare_columns_keep_the_runs_order_and_the_opened_candidate_reads_its_whole_row(fresh_home):
    from engine.runs.registry import Registry
    from engine.views import comparison

    reg = Registry()
    runs = [reg.create_run(spec_json="{}", spec_hash=f"h{k}", name=f"run {k}", olive_config="{}", gpus_wanted=0)
            for k in range(2)]
    for k, run in enumerate(runs):
        reg.upsert_candidates(run["id"], [
            {"model_id": f"m{k}{i}", "pass_chain": ["lora", "mb"][: i + 1], "pass_params": {"lora": {"r": 8 * (i + 1)}},
             "metrics": {"rouge_l": 0.1 * i + k, "decode_tps": float("nan") if i else 50.0}, "size_bytes": 2_000_000,
             "adapter_path": f"/a/{k}/adapter_weights.onnx_adapter" if i else None}
            for i in range(2)])  # fmt: skip
    reg.upsert_candidates(runs[0]["id"], [{"model_id": "bare", "pass_chain": []}])  # never measured
    cols = reg.compare_columns([runs[1]["id"], runs[0]["id"]])
    assert cols["run"] == [0, 0, 1, 1, 1]  # the runs in the order asked for
    assert cols["metrics"][0] == {"rouge_l": 1.0, "decode_tps": 50.0} and cols["metrics"][-1] == {}
    assert json.loads(cols["pass_chain"][1]) == ["lora", "mb"] and "pass_params" not in cols  # read for the points drawn
    assert json.loads(reg.pass_params([cols["id"][0]])[cols["id"][0]]) == {"lora": {"r": 8}}
    cmp = comparison.Comparison.read(reg, [runs[1]["id"], runs[0]["id"]], {r["id"]: r["name"] for r in runs})
    assert cmp.metric_names == ["decode_tps", "rouge_l"] and cmp.fingerprint_counts() == {"unknown": 4}
    df = comparison.table(cmp, comparison.pareto(cmp, "decode_tps", "rouge_l"), *comparison.goals(cmp, {})[1:])
    assert list(df.columns) == ["id", "run", "pass chain", "candidate", "adapter", "decode_tps", "rouge_l", "size_mb",
                                "goals met", "Olive's best", "Pareto"]
    # each candidate's build in words (engine.views.labels), the same words Chat and the report use
    assert list(df["candidate"]) == ["PyTorch + LoRA", "ONNX + adapter", "PyTorch + LoRA", "ONNX + adapter", "base PyTorch"]
    assert list(df["pass chain"]) == ["lora", "lora > mb", "lora", "lora > mb", "(input)"]
    assert list(df["adapter"])[:2] == ["—", "adapter_weights.onnx_adapter"] and list(df["size_mb"])[:2] == [2.0, 2.0]
    assert list(df["Pareto"]) == [True, True, False, True, False]  # NaN speed: beaten by nothing, beats nothing
    opened = reg.candidates_by_id([int(df["id"][1])])[int(df["id"][1])]
    assert opened["pass_params"] == {"lora": {"r": 16}} and opened["model_id"] == "m11"


def test_columnar_goal_marks_follow_compare_meets_row_by_row():
    """comparison.goals marks every candidate as compare.meets does (met, missed, undecided), goal order included."""
    import random

    from engine.views import comparison

    rnd = random.Random(3)
    goal_sets = [
        {},
        {"rouge_l": {"type": "threshold", "value": 0.5}},
        {"rouge_l": {"type": "max-degradation", "value": 0.1}, "decode_tps": {"type": "threshold", "value": 40}},
        {"decode_tps": {"type": "threshold", "value": 40}, "loss": {"type": "min-improvement", "value": 0.2}},
    ]
    values = [0.0, 0.4, 0.6, 30.0, 50.0, float("nan"), float("inf"), None, "n/a"]
    for trial in range(200):
        cands = []
        for r in range(3):
            for i in range(rnd.randint(0, 6)):
                m = {k: rnd.choice(values) for k in ("rouge_l", "decode_tps", "loss") if rnd.random() < 0.8}
                cands.append({"id": len(cands), "run_id": f"r{r}", "pass_chain": ["lora"] if i or rnd.random() < 0.3 else [],
                              "metrics": m, "goals_met": rnd.random() < 0.5})  # fmt: skip
        specs = {f"r{r}": json.dumps({"evaluation": {"metrics": [
            {"name": k, "priority": n + 1, "goal": g} for n, (k, g) in enumerate(rnd.choice(goal_sets).items())]}})
            for r in range(3)}  # fmt: skip
        bounds, met, decided = comparison.goals(comparison.Comparison.from_candidates(cands), specs)
        for i, c in enumerate(cands):
            want = compare.meets(c["metrics"], bounds[c["run_id"]])
            assert (bool(met[i]) if decided[i] else None) == want, (trial, c, bounds[c["run_id"]])


def test_the_chart_sample_keeps_the_whole_front_and_100000_candidates_stay_fast():
    import random
    import time

    import numpy as np

    from engine.views import comparison

    rnd = random.Random(0)
    cands = [{"id": i, "run_id": f"r{i % 50}", "pass_chain": ["lora"], "metrics": {
        "decode_tps": rnd.uniform(10, 100), "rouge_l": rnd.random(), "size_mb": rnd.uniform(1, 50)}}
        for i in range(100_000)]  # fmt: skip
    cmp = comparison.Comparison.from_candidates(cands)
    t = time.perf_counter()
    front = comparison.pareto(cmp, "decode_tps", "rouge_l")
    _, met, decided = comparison.goals(cmp, {})
    df = comparison.table(cmp, front, met, decided)
    pts, sampled = comparison.chart_points(cmp, "decode_tps", "rouge_l", front, 2000)
    elapsed = time.perf_counter() - t
    assert set(np.flatnonzero(front)) == compare.pareto(cands, "decode_tps", "rouge_l")
    assert sampled and len(pts) == 2000 and set(np.flatnonzero(front)) <= set(pts) and list(pts) == sorted(pts)
    assert len(df) == 100_000 and int(df["Pareto"].sum()) == int(front.sum())
    assert elapsed < 5.0, f"front, goal marks, table and chart sample of 100,000 candidates took {elapsed:.2f} s"


def test_a_chart_point_hover_names_the_deciding_parameters_briefly_and_as_text():
    """A point's hover label is the candidate, then at most six short name=value pairs (precision, block size, rank…
    first), never the whole parameter JSON over the chart; Markup in a value shows as text."""
    import json

    import numpy as np

    from engine.views import charts, comparison

    params = {"target_modules": None, "torch_dtype": "float32", "ext_note": "<b>bold</b>" + "x" * 80,
              "training_args": {"per_device_train_batch_size": 8, "max_steps": 16, "logging_steps": 5,
                                "learning_rate": 0.002}, "alpha": 32, "r": 16, "lora_dropout": 0.05}
    cands = [{"id": 7, "run_id": "r1", "pass_chain": ["lora"], "pass_params": params,
              "metrics": {"decode_tps": 10.0, "rouge_l": 0.5, "size_mb": 3.0}}]
    cmp = comparison.Comparison.from_candidates(cands)
    front = comparison.pareto(cmp, "decode_tps", "rouge_l")
    fig = charts.pareto_figure(cmp, np.array([3.0]), "decode_tps", "rouge_l", front, np.array([0]), {}, np.array([False]))
    text = next(t.text[0] for t in fig.data if t.text)
    lines = text.split("<br>")[1:]
    assert lines[0].startswith("r=16 · alpha=32 · lora_dropout=0.05")
    assert "training_args.max_steps=16" in lines[1] and lines[-1] == "(+3 more on the candidate's panel)"
    assert len(text) < 300 and "<b>" not in text and json.dumps(params) not in text
    assert charts.param_summary(json.dumps({"ext_note": "<b>x</b>"})) == "ext_note=&lt;b&gt;x&lt;/b&gt;"
