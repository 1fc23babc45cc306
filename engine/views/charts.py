"""The Compare chart as a Plotly figure, shared by the Compare page and the HTML report: quality against speed,
the Pareto frontier, the runs' goals as lines with the failing side shaded, candidates that meet every goal ringed
and Olive's best (the output it copied) starred. Each point carries its candidate id first in ``customdata``, so a
click on it opens the candidate; its run, pass chain and parameters are its hover text. User text in hover labels is HTML-escaped (Plotly renders its own tag subset)."""

from __future__ import annotations

import html
from typing import Any

MAX_RUN_TRACES = 12


def literal(text: Any) -> str:
    """``text`` as Plotly label text that shows exactly as written (Plotly interprets <b>, <br>, <a ...>)."""
    return html.escape(str(text), quote=False)


# Parameters a user tells candidates apart by, shown first in a point's hover text.
KEY_PARAMS = ("precision", "int4_block_size", "int4_is_symmetric", "bits", "w_bit", "group_size", "q_group_size", "r", "alpha",
              "lora_dropout", "training_args.max_steps", "training_args.learning_rate", "torch_dtype")


def param_summary(text: str, limit: int = 6, per_line: int = 3) -> str:
    """A pass's parameters (JSON text) as at most ``limit`` short ``name=value`` pairs for a hover label, the ones in
    KEY_PARAMS first, nested settings one level deep; the whole set is on the candidate's panel."""
    import json

    try:
        d = json.loads(text or "{}")
    except ValueError:
        return literal(str(text)[:120])
    if not isinstance(d, dict):
        return literal(str(d)[:120])
    items: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            items += [(f"{k}.{kk}", vv) for kk, vv in v.items() if not isinstance(vv, (dict, list)) and vv not in (None, "")]
        elif v not in (None, "", [], {}):
            items.append((k, v))
    rank = {k: n for n, k in enumerate(KEY_PARAMS)}
    items.sort(key=lambda kv: rank.get(kv[0], len(rank)))
    shown = []
    for k, v in items[:limit]:
        val = json.dumps(v, default=str) if not isinstance(v, str) else v
        shown.append(f"{k}={val if len(val) <= 24 else val[:23] + '…'}")
    lines = [" · ".join(shown[i:i + per_line]) for i in range(0, len(shown), per_line)]
    if len(items) > limit:
        lines.append(f"(+{len(items) - limit} more on the candidate's panel)")
    return "<br>".join(literal(line) for line in lines)


def pareto_figure(
    cmp: Any,
    size_mb: Any,
    x: str,
    y: str,
    front: Any,
    pts: Any,
    bounds: dict[str, dict[str, dict[str, Any]]],
    met: Any,
    params: dict[int, str] | None = None,
) -> Any:
    """The figure of a ``engine.views.comparison.Comparison``: the candidates at indices ``pts`` plotted (marker
    size from ``size_mb``), the Pareto frontier (``front``, a mask) joined, ``bounds`` {run_id: goal bounds} drawn for
    the x and y metrics, those that meet every goal (``met``, a mask) ringed; ``params`` (pass parameters as JSON
    text by candidate id, else the comparison's own) in the hover text. A handful of traces whatever the number of
    points: each carries its data as numpy arrays, which Plotly validates at once."""
    import numpy as np
    import plotly.graph_objects as go

    xs, ys = cmp.column(x)[0], cmp.column(y)[0]
    hover = params if params is not None else (cmp.params or {})
    sizes = np.clip(np.sqrt(np.nan_to_num(np.asarray(size_mb, dtype=float)).clip(0)), 6.0, 40.0)

    errors = {axis: _error_bars(cmp, metric) for axis, metric in (("x", x), ("y", y))}

    def trace(ids: Any, name: str, **marker: Any) -> go.Scatter:
        text = [literal(cmp.label(i)) + "<br>" + param_summary(hover.get(int(cmp.ids[i]), "{}")) for i in ids]
        bars = {f"error_{a}": {"type": "data", "array": e[ids], "visible": True, "thickness": 1, "width": 3}
                for a, e in errors.items() if e is not None and "symbol" not in marker}  # not on the overlay rings
        return go.Scatter(
            **bars,
            x=xs[ids],
            y=ys[ids],
            mode="markers",
            name=literal(name),
            marker={"size": sizes[ids], **marker},
            # a plain list: a numpy array goes to the browser as a typed array, and a click's event then carries
            # its row as an object instead of a list; numbers only, as Streamlit deep-copies the figure to send it
            customdata=[[i] for i in cmp.ids[ids].tolist()],
            text=text,
            hovertemplate=f"#%{{customdata[0]}} %{{text}}<br>{x}=%{{x}}<br>{y}=%{{y}}<extra>{literal(name)}</extra>",
        )

    pts = np.asarray(pts, dtype=np.int64)
    on = np.asarray(front, dtype=bool)
    fig = go.Figure()
    fig.add_trace(trace(pts[~on[pts]], "dominated", color="lightgrey", opacity=0.6))
    on_front = pts[on[pts]]
    runs = cmp.run_code[on_front]
    front_runs = list(dict.fromkeys(runs.tolist()))
    if len(front_runs) <= MAX_RUN_TRACES:  # one coloured trace per run
        for k in front_runs:
            fig.add_trace(trace(on_front[runs == k], cmp.run_names[k]))
    else:  # a trace per run costs ~4 ms each: past MAX_RUN_TRACES runs, one trace coloured by run
        order = {r: n for n, r in enumerate(front_runs)}
        fig.add_trace(trace(on_front, f"Pareto points ({len(front_runs)} runs)",
                            color=np.array([order[k] for k in runs.tolist()]), colorscale="Turbo"))
    line = np.flatnonzero(on)
    line = line[np.argsort(xs[line], kind="stable")]
    fig.add_trace(go.Scatter(x=xs[line], y=ys[line], mode="lines", name="Pareto frontier",
                             line={"dash": "dot", "color": "black"}, hoverinfo="skip"))
    ok = pts[np.asarray(met, dtype=bool)[pts]]
    if len(ok):
        fig.add_trace(trace(ok, "meets every goal", color="rgba(0,0,0,0)", line={"color": "green", "width": 2},
                            symbol="circle-open"))
    best = pts[cmp.is_output[pts]]
    if len(best):
        fig.add_trace(trace(best, "Olive's best", color="gold", symbol="star", line={"color": "black", "width": 1}))
    drawn: set[tuple[str, float]] = set()
    for goal_set in bounds.values():
        for metric, axis in ((x, "x"), (y, "y")):
            g = goal_set.get(metric)
            if not g or g["bound"] is None or (metric, g["bound"]) in drawn:
                continue
            drawn.add((metric, g["bound"]))
            vals = cmp.column(metric)[0][pts]
            vals = vals[~np.isnan(vals)]
            lo, hi = (min(float(vals.min()), g["bound"]), max(float(vals.max()), g["bound"])) if len(vals) else (g["bound"],) * 2
            _goal_line(fig, axis, metric, g, (lo, hi))
    fig.update_layout(xaxis_title=x, yaxis_title=y, height=460, legend_title="run (dominated in grey)",
                      clickmode="event+select")
    return fig


def _error_bars(cmp: Any, metric: str) -> Any:
    """The standard errors of a benchmark metric (``acc_stderr:<task>``) as a column (0 where missing), else None."""
    import numpy as np

    from engine.spec.metrics import stderr_of

    name = stderr_of(metric)
    if name is None or name not in cmp.metric_names:
        return None
    vals, present = cmp.column(name)
    with np.errstate(invalid="ignore"):
        return np.where(present & np.isfinite(vals), vals, 0.0)  # a failed task's error is recorded as inf


def warm() -> None:
    """Build one small figure: Plotly reads its validators (a 3 MB JSON file) on a process's first figure, ~0.2-0.3 s
    that the first page with a chart would otherwise pay (app.services runs this once per server process)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0], y=[0], mode="lines", customdata=[[0]], marker={"size": [1]}))
    fig.add_hline(y=0, annotation_text="x")
    fig.add_hrect(y0=0, y1=1)
    fig.update_layout(height=100, legend_title="x", xaxis_title="x")
    fig.to_dict()


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
