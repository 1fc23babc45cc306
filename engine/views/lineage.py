"""Lineage across runs: how candidates descend from their input model through passes, as a Graphviz DOT graph,
with every cache reuse (a pass Olive took from its shared cache instead of running it) and the time it saved.

A node is one Olive model id (Olive names a pass's output by its input and settings, so the same cached output in
two runs is one node); an edge is the pass that made it. Time saved by a reuse: the seconds that pass took when it
did run (a ``pass_finished`` event of the same pass in the earliest run that has the reused model, else the
median of that pass's runs among the runs shown). Past MAX_NODES the newest models are kept."""

from __future__ import annotations

import statistics
from typing import Any

MAX_NODES = 150


def _q(text: Any) -> str:
    """A DOT string literal (quotes, backslashes and line breaks of user text kept as text)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def reuses(cands: list[dict[str, Any]], events: dict[str, list[dict[str, Any]]], run_names: dict[str, str]) -> list[dict[str, Any]]:
    """Each cache reuse in the runs: run, pass, model id, seconds saved (None when the pass never ran here)."""
    first_run: dict[str, str] = {}
    for c in sorted(cands, key=lambda c: c.get("created_at") or 0):
        first_run.setdefault(c["model_id"], c["run_id"])
    ran: dict[tuple[str, str], float] = {}  # (run, pass) -> seconds
    by_pass: dict[str, list[float]] = {}
    for rid, evs in events.items():
        for e in evs:
            if e["kind"] == "pass_finished" and e["data"].get("name"):
                ran[(rid, e["data"]["name"])] = float(e["data"].get("seconds") or 0)
                by_pass.setdefault(e["data"]["name"], []).append(float(e["data"].get("seconds") or 0))
    out = []
    for rid, evs in events.items():
        for e in evs:
            if e["kind"] != "pass_cached":
                continue
            name, mid = e["data"].get("name") or "?", e["data"].get("model_id") or ""
            src = first_run.get(mid)
            saved = ran.get((src, name)) if src and src != rid else None
            if saved is None and by_pass.get(name):
                saved = statistics.median(by_pass[name])
            out.append({"run": run_names.get(rid, rid), "pass": name, "model id": mid,
                        "first made in": run_names.get(src, src or "—"), "seconds saved": saved})
    return out


def dot(cands: list[dict[str, Any]], reused: list[dict[str, Any]], run_names: dict[str, str]) -> str:
    """The lineage graph in DOT: input models as boxes, candidates as ellipses labelled with their pass and the
    runs that have them, reused outputs drawn green with the time saved on their edge."""
    nodes: dict[str, dict[str, Any]] = {}
    for c in sorted(cands, key=lambda c: -(c.get("created_at") or 0)):
        n = nodes.get(c["model_id"])
        if n is None:
            if len(nodes) >= MAX_NODES:
                continue
            n = nodes[c["model_id"]] = {"c": c, "runs": []}
        n["runs"].append(run_names.get(c["run_id"], c["run_id"]))
    saved = {r["model id"]: r["seconds saved"] for r in reused}
    lines = ["digraph lineage {", "rankdir=LR;", 'node [fontsize=10, fontname="Helvetica"];', "edge [fontsize=9];"]
    inputs: set[str] = set()
    for mid, n in nodes.items():
        c = n["c"]
        runs = sorted(set(n["runs"]))
        head = c.get("from_pass") or ((c.get("pass_chain") or ["input model"])[-1])
        label = f"{head}\n{mid[:24]}\n" + ", ".join(runs[:3]) + (f" +{len(runs) - 3}" if len(runs) > 3 else "")
        style = ', color="darkgreen", penwidth=2' if mid in saved or len(runs) > 1 else ""
        shape = "box" if not c.get("pass_chain") else "ellipse"
        lines.append(f"{_q(mid)} [label={_q(label)}, shape={shape}{style}];")
        parent = c.get("parent_model_id")
        if parent:
            if parent not in nodes and parent not in inputs:
                inputs.add(parent)
                lines.append(f"{_q(parent)} [label={_q('input model' + chr(10) + parent[:24])}, shape=box];")
            s = saved.get(mid)
            edge = f"{head}" + (f"\ncached: saved {s:.0f} s" if isinstance(s, (int, float)) else "")
            color = ', color="darkgreen"' if mid in saved else ""
            lines.append(f"{_q(parent)} -> {_q(mid)} [label={_q(edge)}{color}];")
    lines.append("}")
    return "\n".join(lines)
