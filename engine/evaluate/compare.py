"""Comparing candidates across runs: only numbers measured the same way are compared without a warning."""

from __future__ import annotations

from typing import Any

from engine.spec.metrics import METRICS


def fingerprint_groups(cands: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cands:
        if c.get("metrics"):
            groups.setdefault(c.get("fingerprint_id") or "unknown", []).append(c)
    return groups


def comparability(cands: list[dict[str, Any]], fingerprints: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """(True, "") when every measured candidate shares one evaluation fingerprint; else False and what differs."""
    groups = fingerprint_groups(cands)
    if len(groups) <= 1:
        return True, ""
    from engine.evaluate.fingerprint import fingerprint_diff

    ids = sorted(groups)
    base = fingerprints.get(ids[0], {})
    diffs = sorted({k for i in ids[1:] for k in fingerprint_diff(base, fingerprints.get(i, {}))})
    sizes = ", ".join(f"{i}: {len(groups[i])} candidate(s)" for i in ids)
    return False, f"these candidates were measured differently ({sizes}); settings that differ: {', '.join(diffs) or 'unknown'}"


def pareto(cands: list[dict[str, Any]], x: str, y: str) -> set[int]:
    """Indices of the candidates on the Pareto frontier of metrics x and y (each in its better direction)."""
    pts = [(i, c["metrics"].get(x), c["metrics"].get(y)) for i, c in enumerate(cands)]
    pts = [(i, a, b) for i, a, b in pts if isinstance(a, (int, float)) and isinstance(b, (int, float))]
    sx = 1 if METRICS[x]["higher_is_better"] else -1
    sy = 1 if METRICS[y]["higher_is_better"] else -1
    front = set()
    for i, a, b in pts:
        dominated = any(
            (sx * a2 >= sx * a and sy * b2 >= sy * b) and (sx * a2 > sx * a or sy * b2 > sy * b) for j, a2, b2 in pts if j != i
        )
        if not dominated:
            front.add(i)
    return front
