"""The Workflow page's targets: each known target with its state; the OpenVINO recipe opens the panel; Create
starts `grove target add` in the background and its progress shows on the page; a target this machine cannot run
says what it lacks."""

from __future__ import annotations

import json
import os
import signal
import time

from streamlit.testing.v1 import AppTest

from .conftest import MAIN, UI_TIMEOUT
from .test_pages import PAGES, by_label, text


def test_workflow_lists_targets_and_creates_the_openvino_environment_in_the_background(ui_home, tmp_path, monkeypatch):
    targets_dir = tmp_path / "targets"
    monkeypatch.setenv("GROVE_TARGETS_DIR", str(targets_dir))  # no environment made yet
    at = AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT)
    at.run(timeout=120)
    at.switch_page(PAGES["workflow"]).run(timeout=120)
    by_label(at.selectbox, "Recipe").set_value("openvino").run(timeout=120)
    by_label(at.button, "Apply recipe").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["draft"]["target"]["execution_provider"] == "OpenVINOExecutionProvider"
    assert [p["type"] for p in at.session_state["draft"]["passes"]] == [
        "LoRA", "MergeAdapterWeights", "OpenVINOOptimumConversion", "OpenVINOIoUpdate", "OpenVINOEncapsulation"]
    t = text(at)
    assert "openvino** · Intel OpenVINO" in t or "openvino · Intel OpenVINO" in t, t
    assert "not created yet" in t and "cannot run on this machine" in t and "no Snapdragon NPU" in t
    create = by_label(at.button, "Create the openvino environment")
    create.click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    prog = targets_dir / "openvino" / "progress.json"
    pid = 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:  # the background `grove target add` writes its progress
            data = json.loads(prog.read_text()) if prog.is_file() else {}
            pid = int(data.get("pid") or 0)
            if pid and data.get("message", "").startswith(("creating the environment", "installing", "[")):
                break
            time.sleep(0.5)
        assert pid, prog.read_text() if prog.is_file() else "no progress file"
        at.run(timeout=120)
        assert any(p.text.startswith("Creating:") for p in at.get("progress")), text(at)
        assert not any(b.label.startswith("Create the openvino") for b in at.button)  # not twice
    finally:
        if pid:
            os.killpg(pid, signal.SIGTERM)  # the process group this test's click started
