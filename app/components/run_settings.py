"""Target device, evaluation metrics with priorities and goals, and search settings."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services, state
from app.components import benchmarks

EPS = {
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "TensorrtExecutionProvider"],
}
PRECISIONS = ["int4", "int8", "fp16", "bf16", "fp32"]
GOALS = ["", "threshold", "min-improvement", "percent-min-improvement", "max-degradation", "percent-max-degradation"]


def target(draft: dict[str, Any], gpus_available: int) -> None:
    t, res = draft["target"], draft["resources"]
    c = st.columns(4)
    dev = c[0].radio(
        "Device",
        ["cpu", "gpu"],
        index=["cpu", "gpu"].index(t.get("device", "cpu")),
        horizontal=True,
        key=state.key("tgt-dev"),
        help=f"this machine has {gpus_available} GPU(s)",
    )
    eps = EPS[dev]
    ep = c[1].selectbox(
        "Execution provider",
        eps,
        index=eps.index(t["execution_provider"]) if t.get("execution_provider") in eps else 0,
        key=state.key(f"tgt-ep-{dev}"),
    )
    prec = c[2].selectbox(
        "Precision", PRECISIONS, index=PRECISIONS.index(t.get("precision", "int4")), key=state.key("tgt-prec")
    )
    gpus = 0
    if dev == "gpu":
        gpus = c[3].number_input("GPUs", 1, 64, max(1, int(res.get("gpus") or 1)), key=state.key("tgt-gpus"))
    draft["target"] = {"device": dev, "execution_provider": ep, "precision": prec}
    draft["resources"] = {"gpus": int(gpus)}


def evaluation(draft: dict[str, Any]) -> None:
    ev = draft.setdefault("evaluation", {"enabled": False, "metrics": []})
    ev["enabled"] = st.toggle(
        "Evaluate candidates",
        value=bool(ev.get("enabled")),
        key=state.key("ev-on"),
        help="Measure quality, speed and size of every candidate the same way",
    )
    if not ev["enabled"]:
        return
    bench_metrics = benchmarks.editor(draft)
    if not draft.get("dataset"):
        st.caption("No dataset: candidates are measured on the benchmark tasks alone (no held-out loss, ROUGE-L or "
                   "exact match); speed is timed on Grove's built-in travel prompts, so Compare keeps these figures "
                   "apart from runs measured on a dataset.")
    first = "perplexity" if draft.get("dataset") else (bench_metrics[0] if bench_metrics else "decode_tps")
    rows = [
        {
            "metric": m["name"],
            "priority": m.get("priority", i + 1),
            "goal": (m.get("goal") or {}).get("type", ""),
            "value": (m.get("goal") or {}).get("value"),
        }
        for i, m in enumerate(ev.get("metrics") or [])
    ] or [{"metric": first, "priority": 1, "goal": "", "value": None}]
    metrics = {**services.metrics(), **{b: services.metrics()[b] for b in bench_metrics}}
    edited = st.data_editor(
        rows,
        num_rows="dynamic",
        hide_index=True,
        key=state.key("ev-metrics"),
        column_config={
            "metric": st.column_config.SelectboxColumn(
                "metric",
                options=list(metrics),
                required=True,
                help="; ".join(f"{k}: {v['what']}" for k, v in metrics.items()),
            ),
            "priority": st.column_config.NumberColumn(
                "priority", min_value=1, step=1, help="1 ranks first; each priority once"
            ),
            "goal": st.column_config.SelectboxColumn("goal", options=GOALS, help="optional; Olive's goal kinds"),
            "value": st.column_config.NumberColumn("goal value"),
        },
    )
    metrics = []
    for r in edited:
        if not r.get("metric"):
            continue
        m: dict[str, Any] = {"name": r["metric"], "priority": int(r.get("priority") or 1)}
        if r.get("goal") and r.get("value") is not None:
            m["goal"] = {"type": r["goal"], "value": float(r["value"])}
        metrics.append(m)
    prios = [m["priority"] for m in metrics]
    if len(set(prios)) != len(prios):
        st.warning("Two metrics share a priority: give each its own (1 ranks first).")
    ev["metrics"] = metrics
    c = st.columns(4)
    ev["max_eval_samples"] = c[0].number_input(
        "Eval samples", 1, 100000, int(ev.get("max_eval_samples") or 50), key=state.key("ev-n")
    )
    ev["prompt_length"] = c[1].number_input(
        "Prompt length", 1, 32768, int(ev.get("prompt_length") or 128), key=state.key("ev-pl")
    )
    ev["generation_length"] = c[2].number_input(
        "Generation length", 1, 32768, int(ev.get("generation_length") or 64), key=state.key("ev-gl")
    )
    ev["repeats"] = c[3].number_input("Repeats", 1, 100, int(ev.get("repeats") or 3), key=state.key("ev-rep"))


def search(draft: dict[str, Any]) -> None:
    searching = any(p.get("search") for p in draft["passes"])
    on = st.toggle(
        "Search over parameters",
        value=searching or draft.get("search") is not None,
        disabled=searching,
        key=state.key("s-on"),
        help="On by itself when a pass has searchable parameters",
    )
    if not (on or searching):
        draft["search"] = None
        return
    s = {**services.DEFAULT_SEARCH, **(draft.get("search") or {})}
    c = st.columns(6)
    s["sampler"] = c[0].selectbox(
        "Sampler",
        ["sequential", "random", "tpe"],
        index=["sequential", "random", "tpe"].index(s["sampler"]),
        key=state.key("s-sampler"),
    )
    s["execution_order"] = c[1].selectbox(
        "Order",
        ["joint", "pass-by-pass"],
        index=["joint", "pass-by-pass"].index(s["execution_order"]),
        key=state.key("s-order"),
    )
    s["max_samples"] = c[2].number_input("Max trials", 1, None, s.get("max_samples"), key=state.key("s-max")) or None
    s["max_time_s"] = c[3].number_input("Max time (s)", 1, None, s.get("max_time_s"), key=state.key("s-time")) or None
    s["seed"] = c[4].number_input("Seed", 0, None, int(s.get("seed") or 0), key=state.key("s-seed"))
    s["stop_when_goals_met"] = c[5].checkbox(
        "Stop at goals", value=bool(s.get("stop_when_goals_met")), key=state.key("s-stop")
    )
    draft["search"] = s
