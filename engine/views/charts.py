"""The Compare chart as a Plotly figure, shared by the Compare page and the HTML report: quality against speed,
the Pareto frontier, the runs' goals as lines with the failing side shaded, candidates that meet every goal ringed
and Olive's best (the output it copied) starred. Each point carries its candidate id first in ``customdata``, so a
click on it opens the candidate. User text in hover labels is HTML-escaped (Plotly renders its own tag subset)."""

from __future__ import annotations

import html
import json
from typing import Any

MAX_RUN_TRACES = 12


def literal(text: Any) -> str:
    """``text`` as Plotly label text that shows exactly as written (Plotly interprets <b>, <br>, <a ...>)."""
    return html.escape(str(text), quote=False)


def pareto_figure(
    cands: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    front: set[int],
    pts: list[int],
    bounds: dict[str, dict[str, dict[str, Any]]],
    meets: list[bool | None],
) -> Any:
    """The figure: ``pts`` (indices into ``cands``/``rows``) plotted, ``bounds`` {run_id: goal bounds} drawn for
    the x and y metrics, ``meets`` (per candidate) ringed."""
    import numpy as np
    import plotly.graph_objects as go

    def trace(ids: list[int], name: str, **marker: Any) -> go.Scatter:
        sizes = [max(6.0, min(40.0, (rows[i]["size_mb"] or 0) ** 0.5)) for i in ids]
        custom = np.empty((len(ids), 3), dtype=object)
        for n, i in enumerate(ids):
            params = json.dumps(cands[i].get("pass_params") or {}, default=str)[:300]
            custom[n] = (rows[i]["id"], literal(f"{rows[i]['run']} · {rows[i]['pass chain']}"), literal(params))
        return go.Scatter(  # numpy arrays: plotly validates them at once instead of item by item
            x=np.array([cands[i]["metrics"][x] for i in ids], dtype=float),
            y=np.array([cands[i]["metrics"][y] for i in ids], dtype=float),
            mode="markers",
            name=literal(name),
            marker={"size": np.array(sizes), **marker},
            customdata=custom,
            hovertemplate="#%{customdata[0]} %{customdata[1]}<br>%{customdata[2]}<br>"
            + f"{x}=%{{x}}<br>{y}=%{{y}}<extra>{literal(name)}</extra>",
        )

    fig = go.Figure()
    fig.add_trace(trace([i for i in pts if i not in front], "dominated", color="lightgrey", opacity=0.6))
    on_front = [i for i in pts if i in front]
    front_runs = list(dict.fromkeys(cands[i]["run_id"] for i in on_front))
    if len(front_runs) <= MAX_RUN_TRACES:  # one coloured trace per run
        for rid in front_runs:
            fig.add_trace(trace([i for i in on_front if cands[i]["run_id"] == rid], cands[[i for i in on_front if cands[i]["run_id"] == rid][0]]["run_name"]))
    else:  # a trace per run costs ~4 ms each: past MAX_RUN_TRACES runs, one trace coloured by run
        order = {r: n for n, r in enumerate(front_runs)}
        fig.add_trace(trace(on_front, f"Pareto points ({len(front_runs)} runs)",
                            color=np.array([order[cands[i]["run_id"]] for i in on_front]), colorscale="Turbo"))
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
    ok = [i for i in pts if meets[i]]
    if ok:
        fig.add_trace(trace(ok, "meets every goal", color="rgba(0,0,0,0)", line={"color": "green", "width": 2},
                            symbol="circle-open"))
    best = [i for i in pts if cands[i].get("is_output")]
    if best:
        fig.add_trace(trace(best, "Olive's best", color="gold", symbol="star", line={"color": "black", "width": 1}))
    drawn: set[tuple[str, float]] = set()
    for goal_set in bounds.values():
        for metric, axis in ((x, "x"), (y, "y")):
            g = goal_set.get(metric)
            if not g or g["bound"] is None or (metric, g["bound"]) in drawn:
                continue
            drawn.add((metric, g["bound"]))
            vals = [cands[i]["metrics"][metric] for i in pts] + [g["bound"]]
            _goal_line(fig, axis, metric, g, (min(vals), max(vals)))
    fig.update_layout(xaxis_title=x, yaxis_title=y, height=460, legend_title="run (dominated in grey)",
                      clickmode="event+select")
    return fig


def _goal_line(fig: Any, axis: str, metric: str, g: dict[str, Any], extent: tuple[float, float]) -> None:
    """A dashed line at the goal's bound, the side that misses it shaded (to just past the data)."""
    sign = "≥" if g["higher_is_better"] else "≤"
    text = f"goal: {metric} {sign} {g['bound']:.4g} ({g['type']} {g['value']:g})"
    style = {"line": {"color": "green", "dash": "dash", "width": 1.5}}
    bad = {"fillcolor": "red", "opacity": 0.06, "line_width": 0}
    pad = (extent[1] - extent[0]) * 0.04 or abs(extent[0]) * 0.04 or 1.0
    lo, hi = (extent[0] - pad, g["bound"]) if g["higher_is_better"] else (g["bound"], extent[1] + pad)
    if axis == "x":
        fig.add_vline(x=g["bound"], annotation_text=text, annotation_position="top", **style)
        fig.add_vrect(x0=lo, x1=hi, **bad)
    else:
        fig.add_hline(y=g["bound"], annotation_text=text, annotation_position="bottom right", **style)
        fig.add_hrect(y0=lo, y1=hi, **bad)
