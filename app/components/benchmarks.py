"""The Evaluation section's benchmark tasks: lm-eval tasks with a limit each, the local travel task, and the cost."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services, state


def editor(draft: dict[str, Any]) -> list[str]:
    """Edit the draft's ``evaluation.benchmarks`` in place and show their cost; return the benchmark metric names
    (``acc:<task>``) for the metrics table."""
    ev = draft["evaluation"]
    st.markdown("**Benchmark tasks** (lm-evaluation-harness): accuracy with its standard error on every candidate")
    rows = [
        {"task": b.get("task") or "", "limit": b.get("limit"), "few-shot": b.get("num_fewshot", 0),
         "include_path": b.get("include_path") or ""}
        for b in ev.get("benchmarks") or []
    ]
    edited = st.data_editor(
        rows,
        num_rows="dynamic",
        hide_index=True,
        key=state.key("ev-bench"),
        column_config={
            "task": st.column_config.TextColumn(
                "task", help="an lm-eval task: hellaswag, arc_easy, mmlu... (data from the Hugging Face hub when the "
                "run starts), or one defined in include_path"),
            "limit": st.column_config.NumberColumn(
                "limit", min_value=1, step=1, help="examples of the task per candidate (the cost: limit x candidates)"),
            "few-shot": st.column_config.NumberColumn("few-shot", min_value=0, max_value=25, step=1),
            "include_path": st.column_config.TextColumn(
                "include_path", help="folder of your own lm-eval task YAML files (local dataset_path/data_files)"),
        },
    )
    bench = []
    for r in edited:
        task = str(r.get("task") or "").strip()
        if not task:
            continue
        b: dict[str, Any] = {"task": task, "limit": int(r["limit"]) if r.get("limit") is not None else None,
                             "num_fewshot": int(r.get("few-shot") or 0)}
        if str(r.get("include_path") or "").strip():
            b["include_path"] = str(r["include_path"]).strip()
        if b["limit"] is None:
            del b["limit"]  # the pre-flight names the missing limit
        bench.append(b)
    if st.button("Add the travel multiple-choice task (local files)", key="ev-bench-travel",
                 help="each travel question's own answer among 3 answers to other questions (seeded); lm-eval's "
                 "task format, data under GROVE_HOME/benchmarks"):
        t = services.travel_benchmark()
        ev["benchmarks"] = [b for b in bench if b["task"] != t["task"]] + [t]
        state.set_draft(draft)  # the table starts again from the draft, now with the task
        st.rerun()
    ev["benchmarks"] = bench
    line = services.benchmark_cost(draft)
    if line:
        st.caption(line)
    return [f"acc:{b['task']}" for b in bench]
