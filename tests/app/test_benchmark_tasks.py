"""The Workflow page's benchmark tasks (lm-eval): the local travel task added with one click and its cost shown before
launch; a task without a limit refused with its field named."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from .conftest import MAIN
from .test_pages import by_label, open_page, text

T = 180  # seconds per script run: the CI machine is busy


def _workflow_with_evaluation(home) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=T)
    open_page("model_data", at)
    by_label(at.selectbox, "Dataset file").set_value(str(home / "demo" / "travel_sample.jsonl")).run(timeout=T)
    open_page("workflow", at)
    by_label(at.button, "Apply recipe").click().run(timeout=T)
    by_label(at.toggle, "Evaluate candidates").set_value(True).run(timeout=T)
    return at


def test_travel_task_added_costed_and_named_as_a_metric(ui_home):
    at = _workflow_with_evaluation(ui_home)
    assert "Benchmarks:" not in text(at)  # no task, no cost line
    by_label(at.button, "Add the travel multiple-choice task").click().run(timeout=T)
    assert not at.exception, [e.value for e in at.exception]
    bench = at.session_state["draft"]["evaluation"]["benchmarks"]
    assert [b["task"] for b in bench] == ["travel_mc"] and bench[0]["limit"] == 100
    task_dir = ui_home / "benchmarks"
    assert (task_dir / "travel_mc.yaml").is_file() and (task_dir / "travel_mc.jsonl").is_file()
    assert bench[0]["include_path"] == str(task_dir.resolve())
    t = text(at)
    # the cost before launch: examples x candidates and a time (lab recipe: input, LoRA, int4 + adapter on/off)
    cost = next(c.value for c in at.caption if c.value.startswith("Benchmarks:"))
    assert cost.startswith("Benchmarks: 1 task(s), 100 examples × about 4 candidates = 400 examples, about "), cost
    assert "reused" in t
    spec = json.loads(at.code[-1].value)
    assert spec["evaluation"]["benchmarks"][0]["task"] == "travel_mc"
    assert "Ready to launch" in t or "ready to launch" in t


def test_task_without_limit_is_refused_naming_the_field(ui_home):
    at = _workflow_with_evaluation(ui_home)
    at.session_state["draft"]["evaluation"]["benchmarks"] = [{"task": "hellaswag"}]
    at.run(timeout=T)
    t = text(at)
    assert "benchmarks.0.limit" in t and "how many examples" in t
    assert by_label(at.button, "Launch").disabled


def test_benchmarks_only_without_a_dataset_is_launchable(ui_home):
    at = _workflow_with_evaluation(ui_home)
    by_label(at.button, "Add the travel multiple-choice task").click().run(timeout=T)
    draft = at.session_state["draft"]
    draft["dataset"] = None  # an lm-eval baseline as Olive's recipes write it: no dataset, no passes
    draft["passes"] = []
    draft["evaluation"]["metrics"] = []
    at.run(timeout=T)
    assert not at.exception, [e.value for e in at.exception]
    t = text(at)
    assert "No dataset: candidates are measured on the benchmark tasks alone" in t
    spec = json.loads(at.code[-1].value)
    assert spec.get("dataset") is None and spec["evaluation"]["enabled"] is True
    assert [m["name"] for m in spec["evaluation"]["metrics"]] == ["acc:travel_mc"]  # not a held-out metric
    assert "Ready to launch" in t or "ready to launch" in t
    assert not by_label(at.button, "Launch").disabled
