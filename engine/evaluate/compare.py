"""Comparing candidates across runs: only numbers measured the same way are compared without a warning."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.spec.metrics import METRICS


def fingerprint_groups(cands: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cands:
        if c.get("metrics"):
            groups.setdefault(c.get("fingerprint_id") or "unknown", []).append(c)
    return groups


def comparability(cands: list[dict[str, Any]], fingerprints: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """(True, "") when every measured candidate shares one evaluation fingerprint; else False and what differs."""
    return comparability_of({k: len(v) for k, v in fingerprint_groups(cands).items()}, fingerprints)


def comparability_of(counts: dict[str, int], fingerprints: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """``comparability`` from {fingerprint id: measured candidates}."""
    if len(counts) <= 1:
        return True, ""
    from engine.evaluate.fingerprint import fingerprint_diff

    ids = sorted(counts)
    base = fingerprints.get(ids[0], {})
    diffs = sorted({k for i in ids[1:] for k in fingerprint_diff(base, fingerprints.get(i, {}))})
    sizes = ", ".join(f"{i}: {counts[i]} candidate(s)" for i in ids)
    return False, f"these candidates were measured differently ({sizes}); settings that differ: {', '.join(diffs) or 'unknown'}"


def pareto(cands: list[dict[str, Any]], x: str, y: str) -> set[int]:
    """Indices of the candidates on the Pareto frontier of metrics x and y (each in its better direction): those no
    other candidate beats on one metric while matching it on the other (pareto_mask over the metrics dicts)."""
    cols = [[(c.get("metrics") or {}).get(m) for c in cands] for m in (x, y)]
    (xv, xp), (yv, yp) = (numbers(col) for col in cols)
    return {int(i) for i in np.flatnonzero(pareto_mask(xv, yv, xp & yp, x, y))}


def numbers(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(float values, which were numbers) of a metric column: anything but an int or a float counts as missing."""
    n = len(values)
    present = np.fromiter((isinstance(v, (int, float)) for v in values), bool, n)
    try:
        vals = np.array(values, dtype=float)  # the C path; None becomes NaN
    except (TypeError, ValueError):
        vals = np.fromiter((v if isinstance(v, (int, float)) else np.nan for v in values), float, n)
    return vals, present


def pareto_mask(xv: np.ndarray, yv: np.ndarray, present: np.ndarray, x: str, y: str) -> np.ndarray:
    """Which points are on the Pareto frontier of metrics x and y (values ``xv``, ``yv``; ``present``: both were
    measured). Sort and sweep in numpy, O(n log n): 100,000 candidates take milliseconds. A NaN is beaten by nothing
    and beats nothing (it stays on the front); points without both numbers are never on it."""
    sx = 1.0 if METRICS[x]["higher_is_better"] else -1.0
    sy = 1.0 if METRICS[y]["higher_is_better"] else -1.0
    with np.errstate(invalid="ignore"):
        a, b = sx * np.asarray(xv, dtype=float), sy * np.asarray(yv, dtype=float)
    nan = present & (np.isnan(a) | np.isnan(b))
    idx = np.flatnonzero(present & ~nan)
    front = nan.copy()
    if not len(idx):
        return front
    order = idx[np.lexsort((-b[idx], -a[idx]))]  # best x first; within one x, best y first
    sa, sb = a[order], b[order]
    starts = np.flatnonzero(np.r_[True, sa[1:] != sa[:-1]])  # the first point of each distinct x
    group = np.cumsum(np.r_[True, sa[1:] != sa[:-1]]) - 1
    tops = sb[starts]  # the best y among the points sharing each x
    best_before = np.r_[-np.inf, np.maximum.accumulate(tops)[:-1]]  # the best y of every strictly better x
    top = tops[group]
    front[order] = (sb == top) & ((group == 0) | (top > best_before[group]))
    return front


# -- goals --------------------------------------------------------------------------------------------------------
def goal_bound(metric: str, goal: dict[str, Any], baseline: dict[str, Any] | None) -> float | None:
    """The value a candidate's ``metric`` must reach (at least, when higher is better; at most otherwise) to meet
    ``goal`` ({type, value}, Olive's goal types), given the input model's metrics for the relative goals. None when
    a relative goal has no baseline to measure from."""
    kind, v = goal["type"], float(goal["value"])
    if kind == "threshold":
        return v
    base = (baseline or {}).get(metric)
    if not isinstance(base, (int, float)):
        return None
    up = 1 if METRICS[metric]["higher_is_better"] else -1
    if kind == "min-improvement":
        return base + up * v
    if kind == "max-degradation":
        return base - up * v
    if kind == "percent-min-improvement":
        return base * (1 + up * v / 100)
    if kind == "percent-max-degradation":
        return base * (1 - up * v / 100)
    raise ValueError(f"unknown goal type {kind!r}")


def goals_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{metric: {type, value}}``: the goals of a run spec (evaluation.metrics[].goal)."""
    metrics = ((spec or {}).get("evaluation") or {}).get("metrics") or []
    return {m["name"]: dict(m["goal"]) for m in metrics if m.get("goal") and m.get("name") in METRICS}


def baseline_of(cands: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics of a run's input model (the candidate no pass produced), None when it was not evaluated."""
    for c in cands:
        if not c.get("pass_chain") and c.get("metrics"):
            return c["metrics"]
    return None


def goal_bounds(goals: dict[str, dict[str, Any]], baseline: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{metric: {type, value, bound, higher_is_better}}`` for each goal; ``bound`` None when it cannot be drawn."""
    return {
        m: {**g, "bound": goal_bound(m, g, baseline), "higher_is_better": METRICS[m]["higher_is_better"]}
        for m, g in goals.items()
    }


def meets(metrics: dict[str, Any], bounds: dict[str, dict[str, Any]]) -> bool | None:
    """Whether a candidate meets every goal (None: no goals, or one that cannot be decided)."""
    if not bounds:
        return None
    for m, b in bounds.items():
        v = (metrics or {}).get(m)
        if b["bound"] is None or not isinstance(v, (int, float)) or v != v:
            return None if b["bound"] is None else False
        if (v < b["bound"]) if b["higher_is_better"] else (v > b["bound"]):
            return False
    return True


# -- per example --------------------------------------------------------------------------------------------------
EXAMPLE_SCORES = ("rouge_l", "exact_match", "loss")


def per_example(a: list[dict[str, Any]], b: list[dict[str, Any]], score: str = "rouge_l") -> list[dict[str, Any]]:
    """Two candidates' kept examples side by side, the largest difference in ``score`` first: index, prompt,
    reference, answer A, answer B, score A, score B, difference (B - A, in the score's better direction when
    positive). Examples are matched by their eval-row index (by position for results kept without one)."""
    up = 1 if METRICS[score]["higher_is_better"] else -1
    bi = {s.get("index", n): s for n, s in enumerate(b)}
    rows = []
    for n, sa in enumerate(a):
        sb = bi.get(sa.get("index", n))
        if sb is None:
            continue
        va, vb = sa.get(score), sb.get(score)
        diff = up * (vb - va) if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        rows.append(
            {
                "example": sa.get("index", n),
                "prompt": sa.get("prompt", ""),
                "reference": sa.get("reference", ""),
                "answer A": sa.get("answer", ""),
                "answer B": sb.get("answer", ""),
                f"{score} A": va,
                f"{score} B": vb,
                "B better by": diff,
            }
        )
    rows.sort(key=lambda r: -abs(r["B better by"]) if r["B better by"] is not None else 0.0)
    return rows


def first_divergence(answers: list[str]) -> tuple[int, str, list[str]]:
    """Where greedy answers part: (index of the first word that differs, the words they share before it, each
    answer's word there, "" when it has ended). Index -1 when all are equal. Words are whitespace-separated: the
    kept answers are text, and candidates with different tokenizers still line up."""
    words = [a.split() for a in answers]
    n = 0
    while all(n < len(w) for w in words) and len({w[n] for w in words}) == 1:
        n += 1
    if all(len(w) == n for w in words):
        return -1, " ".join(words[0][:n]) if words else "", ["" for _ in words]
    return n, " ".join(words[0][:n]), [w[n] if n < len(w) else "" for w in words]


def disagreements(samples: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per held-out prompt, the greedy answers of 2-3 candidates and the first word where they diverge; prompts
    where they disagree first, earliest divergence first."""
    by_index = [{s.get("index", n): s for n, s in enumerate(ss)} for ss in samples]
    common = [i for i in by_index[0] if all(i in d for d in by_index[1:])] if by_index else []
    rows = []
    for i in common:
        answers = [d[i].get("answer", "") for d in by_index]
        at, shared, parts = first_divergence(answers)
        row: dict[str, Any] = {"example": i, "prompt": by_index[0][i].get("prompt", ""), "diverge at word": at}
        row["shared start"] = shared
        for k, (ans, part) in enumerate(zip(answers, parts, strict=True)):
            row[f"{'ABC'[k]} then"] = part
            row[f"answer {'ABC'[k]}"] = ans
        rows.append(row)
    rows.sort(key=lambda r: (r["diverge at word"] < 0, r["diverge at word"]))
    return rows


# -- blind A/B votes ----------------------------------------------------------------------------------------------
def leaderboard(votes: list[dict[str, Any]], k: float = 32.0) -> list[dict[str, Any]]:
    """Win rate and Elo per contestant (a candidate with one adapter) from blind A/B votes in the order cast:
    ``votes`` items are {a, b, winner} with a/b contestant labels and winner "a", "b" or "tie". Elo starts at
    1000 with K ``k``; a tie counts half a win. Best Elo first."""
    elo: dict[str, float] = {}
    tally: dict[str, dict[str, float]] = {}
    for v in votes:
        a, b, w = v["a"], v["b"], v["winner"]
        ra, rb = elo.setdefault(a, 1000.0), elo.setdefault(b, 1000.0)
        sa = {"a": 1.0, "b": 0.0}.get(w, 0.5)
        ea = 1 / (1 + 10 ** ((rb - ra) / 400))
        elo[a], elo[b] = ra + k * (sa - ea), rb + k * ((1 - sa) - (1 - ea))
        for who, s in ((a, sa), (b, 1 - sa)):
            t = tally.setdefault(who, {"votes": 0, "wins": 0.0})
            t["votes"] += 1
            t["wins"] += s
    rows = [
        {"contestant": c, "Elo": round(elo[c], 1), "votes": int(t["votes"]), "win rate": t["wins"] / t["votes"]}
        for c, t in tally.items()
    ]
    return sorted(rows, key=lambda r: -r["Elo"])


def speed_comparability(states: dict[int, dict[str, Any]], measured: set[int]) -> tuple[bool, str, int]:
    """(comparable, what differs, how many are pending) of the speed figures of candidates ``measured`` (those with
    a speed metric), from ``Registry.speed_state``: figures measured under different conditions (the device alone or
    shared with other Grove work, threads, a machine busy outside Grove: ``devices.comparable_class``) are not put on
    one axis without saying so, as figures of different evaluation settings are not."""
    from engine.runs.devices import comparable_class

    pending = sum(1 for s in states.values() if s.get("pending"))
    classes: dict[str, int] = {}
    for cid in measured:
        st = states.get(cid)
        if st is None or st.get("pending"):
            continue
        c = comparable_class(st.get("conditions"))
        classes[c] = classes.get(c, 0) + 1
    if len(classes) <= 1:
        return True, "", pending
    parts = "; ".join(f"{n} candidate(s): {c}" for c, n in sorted(classes.items(), key=lambda kv: -kv[1]))
    return False, f"their speed figures were measured under different conditions ({parts})", pending
