"""Compare and Chat through the router (AppTest on app/main.py). Compare runs against a real registry with runs
submitted through engine.runs.submit and candidates/evaluations written as the runner writes them; Chat runs against the
session's one real run of the demo recipe (its LoRA and int4 ONNX candidates, real generation, nothing mocked)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.runs.registry import Registry

from .conftest import MAIN, UI_TIMEOUT, add_run

PAGES = {"compare": "../pages/compare.py", "chat": "../pages/chat.py"}
TRAVEL = "What should I see in Lisbon?"
ANSWER_TIMEOUT = 240  # the first question loads the model; later ones are quick


def open_page(name: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT)
    at.run()
    at.switch_page(PAGES[name]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text(at: AppTest) -> str:
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "error", "warning", "info", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def cand(model_id: str, chain: list[str], fp: str, **metrics: float) -> dict:
    return {
        "model_id": model_id,
        "pass_chain": chain,
        "pass_params": {p: {"precision": "int4" if p == "modelbuilder" else None, "r": 16} for p in chain},
        "path": f"/x/{model_id}",
        "size_bytes": 5_000_000,
        "metrics": metrics,
        "is_output": int(len(chain) > 1),
        "fingerprint_id": fp,
    }


def evaluation(fp_key: str, **fingerprint: object) -> str:
    """Save an evaluation whose fingerprint is ``fingerprint``; returns its fingerprint id."""
    from engine.evaluate.fingerprint import fingerprint_id

    fid = fingerprint_id(fingerprint)
    Registry().save_evaluation(fp_key, {"model_path": "/x", "form": "onnx", "fingerprint": fingerprint, "metrics": {}}, fid)
    return fid


# -- Compare -------------------------------------------------------------------------------------------------------
def test_compare_table_chart_diff_and_export(ui_home):
    fp = evaluation("k1", eval_path="travel.jsonl", max_samples=50)
    add_run(
        ui_home,
        "run A",
        "succeeded",
        candidates=[
            cand("a1", ["lora"], fp, rouge_l=0.30, decode_tps=40.0, size_mb=16.0),
            cand("a2", ["lora", "modelbuilder"], fp, rouge_l=0.28, decode_tps=90.0, size_mb=5.0),
            cand("a3", ["lora", "modelbuilder", "extractadapters"], fp, rouge_l=0.20, decode_tps=80.0, size_mb=5.0),
        ],
    )
    add_run(
        ui_home,
        "run B",
        "succeeded",
        candidates=[cand("b1", ["lora"], fp, rouge_l=0.35, decode_tps=30.0, size_mb=16.0)],
    )
    at = open_page("compare")
    t = text(at)
    assert "measured differently" not in t
    df = at.dataframe[0].value
    assert len(df) == 4 and {"run", "pass chain", "adapter", "rouge_l", "decode_tps", "goals met", "Pareto"} <= set(
        df.columns
    )
    assert set(df[df["Pareto"]]["pass chain"]) == {"lora", "lora > modelbuilder"}  # a3 is beaten by a2 on both axes
    assert len(at.get("plotly_chart")) == 1
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)  # a click opens the id a point carries first
    assert {row[0] for t in spec["data"] if t.get("customdata") for row in t["customdata"]} == set(df["id"])
    assert at.get("download_button")
    ids = [int(df[df["pass chain"] == chain]["id"].iloc[0]) for chain in ("lora", "lora > modelbuilder")]
    at.multiselect(key="cmp_diff").set_value(ids).run()
    assert not at.exception
    diff = at.dataframe[1].value
    assert {"metric: rouge_l", "metric: decode_tps", "modelbuilder.precision", "pass chain"} <= set(diff.index)
    assert "lora.r" not in diff.index  # equal in both: folded away by "Only what differs"


def test_compare_formats_metrics_and_folds_unmeasured_candidates_away(ui_home):
    """Issue 20: units and sensible digits in the table (the CSV keeps every digit); the merged run's candidates that
    were deliberately not measured are folded away with why, never listed as rows of None."""
    fp = evaluation("k1", eval_path="travel.jsonl")
    add_run(ui_home, "first", "succeeded", candidates=[
        {**cand("lora1", ["lora"], fp, loss=3.3123456, decode_tps=25.0), "model_type": "HfModel", "adapter_path": "/x/ad"},
        {**cand("x1", ["lora", "modelbuilder", "extractadapters"], fp, loss=3.36, decode_tps=120.4), "model_type": "ONNXModel"},
    ])
    second = add_run(ui_home, "merged", "succeeded", candidates=[
        {**cand("lora1", ["lora"], fp), "is_output": 0, "model_type": "HfModel", "adapter_path": "/x/ad"},
        {**cand("merged", ["lora", "mergeadapterweights"], fp), "is_output": 0, "model_type": "HfModel"},
        {**cand("m4", ["lora", "mergeadapterweights", "modelbuilder"], fp, loss=3.34, decode_tps=135.8499),
         "model_type": "ONNXModel"},
    ])
    at = open_page("compare")
    df = at.dataframe[0].value
    assert len(df) == 3 and not df[["loss", "decode_tps"]].isna().any().any()  # no row of None
    assert set(df["candidate"]) == {"PyTorch + LoRA", "int4 + adapter", "merged int4"}
    assert df["decode_tps"].max() == 135.8499  # the numbers stay numbers (they sort; the CSV has every digit)
    config = json.loads(at.dataframe[0].proto.columns)
    assert config["decode_tps"]["type_config"]["format"] == "%.1f tok/s"
    assert config["loss"]["type_config"]["format"] == "%.3f nats"
    folded = at.dataframe[1].value
    first_lora = int(df[(df["candidate"] == "PyTorch + LoRA")]["id"].iloc[0])
    assert list(folded["measured"]) == [
        f"not measured (same as #{first_lora} in run first · {_short_of('first')})",  # Olive's cache: one model id
        "not measured (the run's evaluation is off)",
    ]
    assert second["id"] not in set(folded["run"])  # runs are named, then told apart by the end of their id
    assert set(folded["run"]) == {f"merged · {_short_of('merged')}"}
    assert "2 candidate(s) not measured" in [e.label for e in at.expander]


def _short_of(name: str) -> str:
    return next(r["id"] for r in Registry().list_runs() if r["name"] == name).rsplit("-", 1)[-1]


def test_compare_warns_when_fingerprints_differ(ui_home):
    fp1 = evaluation("k1", eval_path="travel.jsonl", max_samples=50)
    fp2 = evaluation("k2", eval_path="travel.jsonl", max_samples=10)
    add_run(ui_home, "run A", "succeeded", candidates=[cand("a1", ["lora"], fp1, rouge_l=0.3, decode_tps=40.0)])
    add_run(ui_home, "run B", "succeeded", candidates=[cand("b1", ["lora"], fp2, rouge_l=0.4, decode_tps=20.0)])
    at = open_page("compare")
    warn = "\n".join(w.value for w in at.warning)
    assert "measured differently" in warn and "max_samples" in warn
    assert len(at.dataframe[0].value) == 2 and len(at.get("plotly_chart")) == 1


def test_compare_keeps_two_runs_of_one_name_apart_across_reruns(ui_home):
    """Two runs named alike on one day (their ids share a prefix): both stay picked and listed after a rerun."""
    fp = evaluation("k1", eval_path="travel.jsonl")
    for k in range(2):
        add_run(ui_home, "same name", "succeeded", candidates=[cand(f"s{k}{i}", ["lora"], fp, rouge_l=0.1 * i + k,
                                                                    decode_tps=10.0 + i) for i in range(3)])
    at = open_page("compare")
    at.run()  # the second script run reads the picked runs back from the widget
    assert not at.exception, [e.value for e in at.exception]
    assert len(set(at.multiselect(key="cmp_runs").value)) == 2 and len(at.dataframe[0].value) == 6


def test_compare_10000_candidates_samples_the_chart_never_the_table(ui_home):
    fp = evaluation("k1", eval_path="travel.jsonl")
    rnd = random.Random(1)
    many = [
        cand(
            f"m{i}",
            ["lora", "modelbuilder"],
            fp,
            rouge_l=rnd.random(),
            decode_tps=rnd.uniform(10, 100),
            size_mb=rnd.uniform(1, 50),
        )
        for i in range(10_000)
    ]
    add_run(ui_home, "big sweep", "succeeded", candidates=many)
    at = AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT)
    at.run()
    t0 = time.perf_counter()
    at.switch_page(PAGES["compare"]).run()  # printed below; bench/ holds speed targets, never a timeout
    elapsed = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.dataframe[0].value) == 10_000
    assert "The chart shows 2000 of the measured candidates" in text(at)
    print(f"compare page with 10,000 candidates: {elapsed:.2f} s")


# -- Chat ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(demo) -> dict:
    """A finished run of the demo recipe in the session's GROVE_HOME (one that is already there is reused)."""
    from engine.runs import submit as service
    from engine.spec import recipes

    from ..engine.helpers import run_to_end

    reg = Registry()
    for r in reg.list_runs(status=["succeeded"], limit=100):
        if r["name"].startswith("demo:") and reg.candidates(r["id"]):
            return r
    run = service.submit(recipes.demo_spec())
    done = run_to_end(run["id"], timeout=900)
    assert done["status"] == "succeeded", done["error_message"]
    return done


@pytest.fixture
def chat_home(demo_run, grove_home, monkeypatch):
    import streamlit as st

    monkeypatch.setenv("GROVE_HOME", str(grove_home))
    st.cache_data.clear()
    chains = {" > ".join(c["pass_chain"]): c for c in Registry().candidates(demo_run["id"])}
    return chains


def ask(at: AppTest, prompt: str) -> AppTest:
    at.chat_input(key="chat_prompt").set_value(prompt).run(timeout=ANSWER_TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def last_answers(at: AppTest, n: int) -> list[str]:
    """The last n assistant answers on the page (markdown written inside assistant chat messages)."""
    msgs = [m for m in at.get("chat_message") if m.name == "assistant"]
    return [m.markdown[0].value for m in msgs[-n:]]


def test_chat_travel_question_with_adapter_on_and_off(chat_home):
    onnx = chat_home["lora > modelbuilder > extractadapters"]
    at = open_page("chat")
    at.selectbox(key="chat_cand_").set_value(onnx["id"]).run()
    at.selectbox(key=f"chat_adapter_{onnx['id']}_").set_value("adapter").run()
    ask(at, TRAVEL)
    with_adapter = last_answers(at, 1)[0]
    assert with_adapter.strip()
    assert any("first token" in c.value and "tok/s" in c.value and "adapter" in c.value for c in at.caption)

    at.selectbox(key=f"chat_adapter_{onnx['id']}_").set_value("none").run()
    ask(at, TRAVEL)
    base = last_answers(at, 1)[0]
    assert base.strip() and base != with_adapter  # the travel adapter changes the answer
    assert any("first token" in c.value and "· none ·" in c.value for c in at.caption)


def test_chat_ab_side_by_side_and_feedback(chat_home):
    onnx = chat_home["lora > modelbuilder > extractadapters"]
    lora = chat_home["lora"]
    at = open_page("chat")
    at.toggle(key="chat_ab").set_value(True).run()
    at.selectbox(key="chat_cand_A").set_value(onnx["id"]).run()
    at.selectbox(key="chat_cand_B").set_value(lora["id"]).run()
    at.selectbox(key=f"chat_adapter_{lora['id']}_B").set_value("adapter").run()
    ask(at, TRAVEL)
    assert len(last_answers(at, 2)) == 2
    timings = [c.value for c in at.caption if "first token" in c.value]
    assert len(timings) == 2 and any("onnxruntime" in t or "cpu" in t for t in timings)

    before = len(Registry().feedback())
    at.button(key=f"fb:{onnx['id']}:adapter:1:up").click().run()
    assert not at.exception
    rows = Registry().feedback()
    assert len(rows) == before + 1 and rows[-1]["rating"] == 1 and rows[-1]["prompt"] == TRAVEL
    assert rows[-1]["candidate_id"] == onnx["id"] and rows[-1]["answer"]


def test_chat_opens_on_the_best_measured_candidate_and_says_why(ui_home, tmp_path):
    """Issue 20: not on the PyTorch LoRA (the slowest) but on Olive's best with the best quality; every candidate is
    named by its build and its run (name and the end of its id), so two runs' candidates never look alike."""
    fp = evaluation("k1", eval_path="travel.jsonl")

    def folder(name: str, marker: str) -> str:
        d = tmp_path / name
        d.mkdir()
        (d / marker).write_text("{}")
        return str(d)

    lora = {**cand("lora1", ["lora"], fp, loss=3.31, decode_tps=25.2), "is_output": 0, "model_type": "HfModel",
            "path": folder("lora", "config.json"), "adapter_path": str(tmp_path / "lora" / "adapter")}
    run1 = add_run(ui_home, "demo: adapter", "succeeded", candidates=[
        lora,
        {**cand("x1", ["lora", "modelbuilder", "extractadapters"], fp, loss=3.36, decode_tps=120.4),
         "model_type": "ONNXModel", "path": folder("x1", "genai_config.json")},
    ])
    add_run(ui_home, "demo: merged", "succeeded", candidates=[
        {**cand("m4", ["lora", "mergeadapterweights", "modelbuilder"], fp, loss=3.34, decode_tps=135.8),
         "model_type": "ONNXModel", "path": folder("m4", "genai_config.json")},
    ])
    at = open_page("chat")
    box = at.selectbox(key="chat_cand_")
    short = run1["id"].rsplit("-", 1)[-1]
    assert box.value is not None and "merged int4 · demo: merged" in box.format_func(box.value)
    assert f"PyTorch + LoRA · demo: adapter · {short} #" in " ".join(box.options)
    assert any("Olive's best" in c.value and "loss (3.340 nats)" in c.value for c in at.caption), text(at)
    at.toggle(key="chat_ab").set_value(True).run()
    b = at.selectbox(key="chat_cand_B")
    assert "int4 + adapter · demo: adapter" in b.format_func(b.value)  # the next best for side B


def test_chat_without_candidates_says_what_to_do(ui_home):
    at = open_page("chat")
    assert "No candidate to chat with yet" in text(at)


# -- Compare: goals, the opened candidate, per example, disagreement, votes, lineage, report --------------------------
def example(i: int, answer: str, rl: float) -> dict:
    return {"index": i, "prompt": f"Where in city {i}?", "reference": f"ref {i}", "answer": answer, "rouge_l": rl,
            "exact_match": 0.0, "loss": 1.0 + rl}


def test_compare_goals_open_candidate_per_example_votes_lineage_report(ui_home, tmp_path):
    import json

    fp = evaluation("k0", eval_path="travel.jsonl", max_samples=3)
    reg = Registry()
    for key, answers in (("ka", ["Visit the Alfama", "Eat *pastel* <b>", "x"]), ("kb", ["Visit the castle", "Eat *pastel* <b>", "y"])):
        reg.save_evaluation(key, {"model_path": "/x", "form": "onnx", "fingerprint": {"eval_path": "travel.jsonl", "max_samples": 3},
                                  "metrics": {}, "samples": [example(i, a, 0.1 * (i + 1) * (key == "kb") + 0.2) for i, a in enumerate(answers)]}, fp)
    folder = tmp_path / "int4"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx")
    run = add_run(ui_home, "goal run", "succeeded", candidates=[
        cand("in", [], fp, rouge_l=0.30, decode_tps=20.0, size_mb=16.0),
        {**cand("a", ["lora"], fp, rouge_l=0.28, decode_tps=40.0, size_mb=16.0), "eval_key": "ka"},
        {**cand("b", ["lora", "modelbuilder"], fp, rouge_l=0.20, decode_tps=90.0, size_mb=5.0), "eval_key": "kb",
         "path": str(folder)},
    ])
    spec = json.loads(reg.get_run(run["id"])["spec"])
    spec["evaluation"]["metrics"] = [{"name": "rouge_l", "priority": 1, "goal": {"type": "max-degradation", "value": 0.05}}]
    reg.update_run(run["id"], spec=json.dumps(spec))
    reg.add_events(run["id"], [(1.0, "pass_finished", {"name": "lora", "seconds": 30.0}),
                               (2.0, "pass_cached", {"name": "modelbuilder", "model_id": "b"})])
    reg.add_feedback({"ts": 1.0, "rating": 1, "prompt": "p", "answer": "", "backend": reg.VOTE_BACKEND, "settings": json.dumps(
        {"blind_ab": {"a": {"id": 1, "adapter": "adapter"}, "b": {"id": 2, "adapter": None}, "winner": "a"}})})

    at = open_page("compare")
    df = at.dataframe[0].value
    met = dict(zip(df["pass chain"], df["goals met"], strict=True))
    assert met == {"(input)": True, "lora": True, "lora > modelbuilder": False}  # rouge_l >= 0.30 - 0.05
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert any("goal: rouge_l ≥ 0.25" in (a.get("text") or "") for a in fig["layout"].get("annotations", []))
    assert {"meets every goal"} <= {t.get("name") for t in fig["data"]}

    ids = {chain: int(i) for chain, i in zip(df["pass chain"], df["id"], strict=True)}
    at.selectbox(key="cmp_open").set_value(ids["lora > modelbuilder"]).run()
    assert not at.exception, [e.value for e in at.exception]
    t = text(at)
    assert "Fingerprint" in t and "Kept samples: 3" in t and "Files (1)" in t
    assert at.get("download_button") and any(b.label == "Download it" for b in at.get("download_button"))

    at.selectbox(key="cmp_ex_a").set_value(ids["lora"]).run()
    at.selectbox(key="cmp_ex_b").set_value(ids["lora > modelbuilder"]).run()
    ex = next(d.value for d in at.dataframe if "B better by" in d.value.columns)
    assert list(ex["example"]) == [2, 1, 0] and ex["answer B"].iloc[1] == "Eat *pastel* <b>"

    at.multiselect(key="cmp_dis").set_value([ids["lora"], ids["lora > modelbuilder"]]).run()
    dis = next(d.value for d in at.dataframe if "diverge at word" in d.value.columns)
    assert list(dis["diverge at word"])[:2] == [0, 2] and "They disagree on 2 of 3 prompts" in text(at)

    board = next(d.value for d in at.dataframe if "Elo" in d.value.columns)
    assert list(board["contestant"]) == ["#1 · adapter", "#2 · none"]
    at.toggle(key="cmp_lineage_on").set_value(True).run()
    assert "1 pass outputs reused from Olive's cache" in text(at) and len(at.get("graphviz_chart")) == 1
    assert any(b.label.startswith("HTML report") for b in at.get("download_button"))


def test_chat_blind_ab_vote_is_stored_and_ranked(chat_home):
    onnx = chat_home["lora > modelbuilder > extractadapters"]
    at = open_page("chat")
    at.toggle(key="chat_ab").set_value(True).run()
    at.toggle(key="chat_blind").set_value(True).run()
    at.selectbox(key="chat_cand_A").set_value(onnx["id"]).run()
    at.selectbox(key="chat_cand_B").set_value(onnx["id"]).run()
    at.selectbox(key=f"chat_adapter_{onnx['id']}_B").set_value("none").run()
    ask(at, TRAVEL)
    assert "Left is better" in [b.label for b in at.button]
    assert not any(c.value.startswith(("A: ", "B: ")) for c in at.caption)  # who answered is hidden until the vote
    before = len(Registry().ab_votes())
    at.button(key="chat_vote_0_a").click().run()
    assert not at.exception, [e.value for e in at.exception]
    votes = Registry().ab_votes()
    assert len(votes) == before + 1 and votes[-1]["settings"]["blind_ab"]["winner"] == "a"
    revealed = [c.value for c in at.caption if c.value.startswith(("A: ", "B: "))]
    assert len(revealed) == 2 and all("ONNX" in v for v in revealed) and "Your vote: left (A) better" in text(at)
    from engine.evaluate.compare import leaderboard
    from engine.views.candidates import vote_rows

    board = leaderboard(vote_rows(Registry().ab_votes()))  # Compare's table (this demo run has no metrics to list)
    assert {r["contestant"] for r in board} == {f"#{onnx['id']} · adapter", f"#{onnx['id']} · none"}


def test_chat_adapter_from_another_run_on_one_base_and_a_misfit_refused(chat_home, tmp_path):
    import shutil

    onnx = chat_home["lora > modelbuilder > extractadapters"]
    folder = Path(onnx["path"])
    folder = folder.parent if folder.is_file() else folder
    good, bad = tmp_path / "other", tmp_path / "broken"
    shutil.copytree(folder, good)
    shutil.copytree(folder, bad)
    for f in bad.glob("*.onnx_adapter"):
        f.write_bytes(b"not an adapter")
    reg = Registry()
    run = reg.get_run(onnx["run_id"])
    for name, path in (("other data", good), ("broken", bad)):
        r = reg.create_run(spec_json=run["spec"], spec_hash=f"x-{name}", name=name, olive_config="{}", gpus_wanted=0)
        reg.upsert_candidates(r["id"], [{"model_id": f"o-{name}", "pass_chain": onnx["pass_chain"], "path": str(path),
                                         "is_output": 1, "adapter_path": str(path / "adapter_weights.onnx_adapter")}])
    import streamlit as st

    st.cache_data.clear()
    at = open_page("chat")
    at.selectbox(key="chat_cand_").set_value(onnx["id"]).run()
    sb = at.selectbox(key=f"chat_adapter_{onnx['id']}_")
    extra = [o for o in sb.options if "from run other data" in o]
    misfit = [o for o in sb.options if "from run broken" in o]
    assert extra and misfit
    from app import services

    srcs = next(c for c in services.chat_candidates() if c["id"] == onnx["id"])["adapter_sources"]
    good_name = next(n for n, s in srcs.items() if s["run"] == "other data")
    bad_name = next(n for n, s in srcs.items() if s["run"] == "broken")
    at.selectbox(key=f"chat_adapter_{onnx['id']}_").set_value(good_name).run()
    ask(at, TRAVEL)
    assert last_answers(at, 1)[0].strip()
    at.selectbox(key=f"chat_adapter_{onnx['id']}_").set_value(bad_name).run()
    at.chat_input(key="chat_prompt").set_value(TRAVEL).run(timeout=ANSWER_TIMEOUT)
    assert not at.exception
    assert any("does not match the model" in e.value and "not a readable" in e.value for e in at.error)
