"""What the cluster looks like, for Home and for submit, read from the registry: the Ray executor's worker writes
its cluster's nodes into its heartbeat (``workers.slots``), so no reader needs a Ray connection."""

from __future__ import annotations

import json
from typing import Any


def cluster_status(reg: Any = None) -> dict[str, Any] | None:
    """The newest live Ray worker's view of its cluster, or None when no live worker runs on Ray.

    ``{"address", "nodes": [{"node_id", "address", "host", "head", "cpus", "cpus_used", "gpus", "gpus_used",
    "resources"}], "runs": [{"run_id", "node_id", "address", "gpus", "pid"} | {"run_id", "waiting": True}],
    "worker", "heartbeat_at"}``. Home shows one row per node: address (head marked), CPUs used / total,
    GPUs used / total, custom resources, and the runs placed there; runs waiting for Ray's resources below.
    """
    from engine.runs.registry import Registry

    reg = reg or Registry()
    for w in sorted(reg.live_workers(), key=lambda w: w.get("heartbeat_at") or 0, reverse=True):
        try:
            s = json.loads(w.get("slots") or "{}")
        except ValueError:
            continue
        if s.get("executor") == "ray":
            return {"address": s.get("address"), "nodes": s.get("nodes") or [], "runs": s.get("runs") or [],
                    "worker": w["id"], "heartbeat_at": w.get("heartbeat_at"), "error": s.get("error")}
    return None


def node_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per node for a table: what Home's run slots show on the Ray executor."""
    by_node: dict[str, list[str]] = {}
    for r in status.get("runs", []):
        if r.get("node_id"):
            by_node.setdefault(r["node_id"], []).append(r["run_id"])
    return [{"node": (n.get("address") or "?") + (" (head)" if n.get("head") else ""), "host": n.get("host"),
             "CPUs": f"{n['cpus_used']:g} / {n['cpus']:g}", "GPUs": f"{n['gpus_used']:g} / {n['gpus']:g}" if n["gpus"] else "none",
             "resources": ", ".join(f"{k}={v:g}" for k, v in (n.get("resources") or {}).items()),
             "runs": ", ".join(by_node.get(n["node_id"], []))} for n in status.get("nodes", [])]
