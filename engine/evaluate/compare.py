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
    """Indices of the candidates on the Pareto frontier of metrics x and y (each in its better direction): those no
    other candidate beats on one metric while matching it on the other. Sort and sweep, O(n log n), so 10,000
    candidates stay fast. Candidates without both numbers are left out; a NaN is beaten by nothing and beats nothing."""
    sx = 1 if METRICS[x]["higher_is_better"] else -1
    sy = 1 if METRICS[y]["higher_is_better"] else -1
    front: set[int] = set()
    pts = []
    for i, c in enumerate(cands):
        a, b = (c.get("metrics") or {}).get(x), (c.get("metrics") or {}).get(y)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if a != a or b != b:
                front.add(i)
            else:
                pts.append((sx * a, sy * b, i))
    pts.sort(key=lambda p: (-p[0], -p[1]))  # best x first; within one x, best y first
    best = None  # the best y of every point with a strictly better x
    k = 0
    while k < len(pts):
        top = pts[k][1]  # the best y among the points sharing this x
        j = k
        while j < len(pts) and pts[j][0] == pts[k][0]:
            if pts[j][1] == top and (best is None or top > best):
                front.add(pts[j][2])
            j += 1
        best = top if best is None else max(best, top)
        k = j
    return front
