"""Compare: every candidate of the chosen runs in one table, a quality-vs-speed chart with its Pareto frontier, a
side-by-side diff of the ones picked, and a CSV export. Plots are sampled past MAX_POINTS; the table never is."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import services

MAX_POINTS = 2000

st.title("Compare candidates")
runs = services.measured_runs()
if not runs:
    st.info("No measured candidates yet: finished runs with an evaluation show up here.")
    st.stop()

names = {r["id"]: f"{r['name']} ({r['id'][:8]}, {r['candidates']} measured)" for r in runs}
picked = st.multiselect("Runs", list(names), default=list(names), format_func=names.get, key="cmp_runs")
if not picked:
    st.info("Pick at least one run.")
    st.stop()

ok, why = services.comparability(picked)
if not ok:
    st.warning(
        f"Not directly comparable: {why}. Compare numbers within one evaluation fingerprint.", icon=":material/warning:"
    )

cands = services.compare_candidates(picked)
metric_names = sorted({m for c in cands for m in c.get("metrics") or {}})
c1, c2, c3 = st.columns(3)
speeds = services.metric_choices(metric_names, services.SPEED)
qualities = services.metric_choices(metric_names, services.QUALITY)
x = c1.selectbox("Speed (x)", speeds, key="cmp_x") if speeds else None
y = c2.selectbox("Quality (y)", qualities, key="cmp_y") if qualities else None
needle = c3.text_input("Filter (run or pass chain contains)", key="cmp_filter").strip().lower()

front = services.pareto_front(cands, x, y) if x and y else set()
rows = services.compare_rows(cands, metric_names, front)
table = pd.DataFrame(rows)
shown = table
if needle:
    mask = table["run"].str.lower().str.contains(needle, regex=False) | table["pass chain"].str.lower().str.contains(
        needle, regex=False
    )
    shown = table[mask]
st.caption(
    f"{len(shown)} of {len(table)} candidates" + (f" match “{needle}”" if needle else "") + ". Click a header to sort."
)
st.dataframe(shown, hide_index=True, width="stretch")
st.download_button(
    "Export CSV", table.to_csv(index=False).encode(), "grove-candidates.csv", "text/csv", icon=":material/download:"
)

# -- chart --------------------------------------------------------------------------------------------------------
if x and y:
    import numpy as np
    import plotly.graph_objects as go

    pts, sampled = services.chart_points(cands, x, y, front, MAX_POINTS)

    def trace(ids: list[int], name: str, **marker) -> go.Scatter:
        sizes = [max(6.0, min(40.0, rows[i]["size_mb"] ** 0.5)) for i in ids]
        return go.Scatter(  # numpy arrays: plotly validates them at once instead of item by item
            x=np.array([cands[i]["metrics"][x] for i in ids]),
            y=np.array([cands[i]["metrics"][y] for i in ids]),
            mode="markers",
            name=name,
            marker={"size": np.array(sizes), **marker},
            customdata=np.array(
                [
                    [rows[i]["id"], rows[i]["pass chain"], json.dumps(cands[i].get("pass_params") or {})[:300]]
                    for i in ids
                ],
                dtype=object,
            ).reshape(-1, 3),
            hovertemplate="#%{customdata[0]} %{customdata[1]}<br>%{customdata[2]}<br>"
            + f"{x}=%{{x}}<br>{y}=%{{y}}<extra>{name}</extra>",
        )

    fig = go.Figure()
    fig.add_trace(trace([i for i in pts if i not in front], "dominated", color="lightgrey", opacity=0.6))
    for rid in picked:
        ids = [i for i in pts if i in front and cands[i]["run_id"] == rid]
        if ids:
            fig.add_trace(trace(ids, cands[ids[0]]["run_name"]))
    line = sorted(front, key=lambda i: cands[i]["metrics"][x])
    fig.add_trace(
        go.Scatter(
            x=[cands[i]["metrics"][x] for i in line],
            y=[cands[i]["metrics"][y] for i in line],
            mode="lines",
            name="Pareto frontier",
            line={"dash": "dot", "color": "black"},
            hoverinfo="skip",
        )
    )
    fig.update_layout(xaxis_title=x, yaxis_title=y, height=460, legend_title="run (dominated in grey)")
    st.plotly_chart(fig, key="cmp_chart")
    if sampled:
        st.caption(
            f"The chart shows {len(pts)} of the measured candidates (every Pareto point plus a sample); "
            "the table above lists all of them."
        )
    else:
        st.caption("Marker size: size on disk. Hover a point for its pass chain and parameters.")

# -- side by side -------------------------------------------------------------------------------------------------
st.subheader("Side by side")
labels = {r["id"]: f"#{r['id']} {r['run']} · {r['pass chain']}" for r in rows}
chosen = st.multiselect("Candidates to diff (2 or more)", list(labels), format_func=labels.get, key="cmp_diff")
if len(chosen) >= 2:
    by_id = {c["id"]: c for c in cands}
    cols = {labels[cid]: services.side_by_side(by_id[cid]) for cid in chosen}
    diff = pd.DataFrame(cols).map(lambda v: "—" if v is None or v != v else str(v))
    differs = diff.nunique(axis=1) > 1
    only = st.toggle("Only what differs", value=True, key="cmp_only_diff")
    st.dataframe(diff[differs] if only else diff, width="stretch")
elif chosen:
    st.caption("Pick one more candidate.")
