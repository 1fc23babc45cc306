"""A shareable report of runs' candidates: one self-contained HTML file (Plotly's JavaScript inlined, so it opens
with no network) with the candidate table, the quality-vs-speed charts with the Pareto frontier and the goals,
each candidate's pass parameters, fingerprint and kept samples, the package versions and the run specs.
Built for the Compare page's download and ``grove report RUN… -o report.html``. Every user text is escaped."""

from __future__ import annotations

import html
import json
import time
from typing import Any

import numpy as np

from engine import machine
from engine.evaluate import compare
from engine.spec.metrics import SPEED, quality_names
from engine.views import charts, comparison, labels
from engine.views import format as fmt

PACKAGES = ("grove", "olive-ai", "onnxruntime", "onnxruntime-genai", "torch", "transformers", "peft", "plotly", "streamlit")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5rem 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;
vertical-align:top}th{background:#f4f4f4}pre{background:#f7f7f7;padding:.5rem;overflow:auto;font-size:12px;
white-space:pre-wrap}details{margin:.3rem 0}.warn{background:#fff4e5;border-left:4px solid #f90;padding:.5rem}
"""


def _e(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape("—" if v is None else str(v))


def _table(rows: list[dict[str, Any]], cls: str = "") -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pre(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str)
    return f"<pre>{html.escape(text)}</pre>"


def axes(metric_names: list[str]) -> list[tuple[str, str]]:
    """The charts to draw: (speed, quality) pairs that were measured, decode speed first, at most two."""
    speeds = [m for m in ("decode_tps", *SPEED) if m in metric_names]
    quals = quality_names(metric_names)  # benchmark accuracies first, with their error bars
    pairs = list(dict.fromkeys((s, q) for s in speeds[:1] for q in quals[:2]))
    if "size_mb" in metric_names and quals:
        pairs.append(("size_mb", quals[0]))
    return pairs[:3]


def build(reg: Any, run_ids: list[str], *, max_points: int = 2000) -> str:
    """The report of the given runs (ids or unique prefixes) as one HTML page."""
    runs = [reg.find_run(r) for r in run_ids]
    names = {r["id"]: labels.run_label(r["name"], r["id"]) for r in runs}  # name · short id, as every page says
    cands = [{**c, "run_name": names[r["id"]]} for r in runs for c in reg.candidates(r["id"])]
    cmp = comparison.Comparison.from_candidates(cands)
    metric_names = cmp.metric_names
    bounds, met, decided = comparison.goals(cmp, {r["id"]: r["spec"] for r in runs})
    fps = reg.fingerprints(sorted(cmp.fingerprint_counts()))
    ok, why = compare.comparability_of(cmp.fingerprint_counts(), fps)
    speed_ok, speed_why, pending = comparison.speed_check(cmp, reg)
    if not speed_ok:
        ok, why = False, "; ".join(w for w in (why, speed_why) if w)
    evals = reg.candidate_evaluations([c["id"] for c in cands])

    parts = [f"<h1>Grove report: {_e(', '.join(names.values()))}</h1>",
             f"<p>{len(cands)} candidates from {len(runs)} run(s); generated {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}"
             f" on {_e(machine.hostname())}.</p>"]
    if not ok:
        parts.append(f'<p class="warn">Not directly comparable: {_e(why)}.</p>')
    if pending:
        parts.append(f'<p class="warn">Speed pending for {pending} candidate(s): measured when their device is free.</p>')
    table = None
    first = True
    for x, y in axes(metric_names):
        front = comparison.pareto(cmp, x, y)
        table = comparison.table(cmp, front, met, decided)
        pts, sampled = comparison.chart_points(cmp, x, y, front, max_points)
        fig = charts.pareto_figure(cmp, table["size_mb"].to_numpy(), x, y, front, pts, bounds, met)
        fig.update_layout(title=f"{y} against {x}" + (f" ({len(pts)} of the points: every Pareto point plus a sample)" if sampled else ""))
        parts.append(f'<div class="chart">{fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False})}</div>')
        first = False
    if table is None:
        table = comparison.table(cmp, np.zeros(len(cmp), dtype=bool), met, decided)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    for r in rows:  # each metric with its unit and the digits worth reading (the CSV on Compare keeps them all)
        for m in metric_names:
            r[m] = fmt.metric(m, r.get(m), empty="not measured" if not any(r.get(k) is not None for k in metric_names) else "—")
        r["size_mb"] = fmt.metric("size_mb", r.get("size_mb"))
    goals = {names[rid]: {m: {k: g[k] for k in ("type", "value", "bound")} for m, g in b.items()} for rid, b in bounds.items() if b}
    if goals:
        parts += ["<h2>Goals</h2>", _pre(goals)]
    parts += ["<h2>Candidates</h2>", _table(rows, "candidates")]
    parts.append("<h2>Each candidate</h2>")
    for c in cands:
        ev = evals.get(c["id"]) or {}
        chain = " > ".join(c.get("pass_chain") or []) or "(input)"
        body = [f"<p>run {_e(c['run_name'])} · model {_e(c['model_id'])} · {_e(c.get('path'))}</p>",
                "<h4>Pass parameters</h4>", _pre(c.get("pass_params") or {}),
                "<h4>Metrics</h4>",
                _table([{m: fmt.metric(m, v) for m, v in (c.get("metrics") or {}).items()}])]
        if c.get("failed"):
            body += ["<h4>Failed metrics</h4>", _pre(c["failed"])]
        if ev:
            body += [f"<h4>Fingerprint {_e(ev.get('fingerprint_id'))}</h4>", _pre(ev.get("fingerprint") or {})]
            body += [f"<h4>Kept samples ({len(ev.get('samples') or [])})</h4>", _table(ev.get("samples") or [])]
        parts.append(f"<details><summary>{_e(labels.label(c))} · {_e(chain)}</summary>{''.join(body)}</details>")
    parts += ["<h2>Package versions</h2>", _table([machine.package_versions(PACKAGES)])]
    parts.append("<h2>Run specs</h2>")
    for r in runs:
        parts.append(f"<details><summary>{_e(r['name'])} ({_e(r['id'])})</summary>{_pre(json.loads(r['spec'] or '{}'))}</details>")
    title = html.escape("Grove report: " + ", ".join(names.values()))
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style></head>'
            f"<body>{''.join(parts)}</body></html>")
