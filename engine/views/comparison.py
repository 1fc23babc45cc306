"""Compare's read model in columns: the candidates of some runs as numpy arrays, so the page's Pareto front, goal
marks, table and chart sample are computed a column at a time instead of a dict per candidate (10,000 candidates:
tens of milliseconds; 100,000: a few hundred).

Runs and pass chains repeat across candidates, so they are stored once each and coded per candidate (the table shows
them as categoricals). Pass parameters are not read at all: only the points a chart draws show them (as hover
text), and the candidate a user opens reads its whole row.

Built from ``Registry.compare_columns`` (the page) or from decoded registry rows (the report, tests). Read-only once
built: the page shares one per set of runs between sessions."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.evaluate import compare


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a read builds 100,000s of small objects that hold no cycles (the
    collector would walk them again and again: ~40% of the read)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _codes(values: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """(one code per value, the distinct values in order of first appearance)."""
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))
    return codes, list(index)


@dataclass(eq=False)
class Comparison:
    ids: np.ndarray  # int64, one per candidate
    run_code: np.ndarray  # int64 into run_ids / run_names
    run_ids: list[str]  # each run once
    run_names: list[str]
    chain_code: np.ndarray  # int64 into chains / chain_labels
    chains: list[list[str]]  # each distinct pass chain once ([] = the input model)
    adapters: list[str | None]
    size_bytes: np.ndarray  # float
    is_output: np.ndarray  # bool: Olive's best (the output it copied)
    goals_met: np.ndarray  # bool: what Olive recorded
    fingerprint_ids: list[str | None]
    metrics: list[dict[str, Any]]
    params: dict[int, str] | None = None  # pass parameters (JSON text) by candidate id, when the rows had them
    model_ids: list[str | None] | None = None  # Olive's model ids (the same cached model in two runs has one)
    builds: list[str] | None = None  # each candidate's build in words (engine.views.labels.build)
    metric_names: list[str] = field(init=False)
    chain_labels: list[str] = field(init=False)
    _columns: dict[str, tuple[np.ndarray, np.ndarray]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        names: set[str] = set()
        for m in self.metrics:
            names.update(m)
        self.metric_names = sorted(names)
        self.chain_labels = [" > ".join(c) or "(input)" for c in self.chains]

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def read(cls, registry: Any, run_ids: list[str], run_names: dict[str, str]) -> Comparison:
        """The candidates of ``run_ids`` (in that order) from the registry (``Registry.compare_columns``)."""
        with gc_paused():
            return cls.from_columns(registry.compare_columns(run_ids), run_ids, run_names)

    @classmethod
    def from_columns(cls, cols: dict[str, list[Any]], run_ids: list[str], run_names: dict[str, str]) -> Comparison:
        """From ``Registry.compare_columns``: ``run`` an index into ``run_ids``, metrics decoded, pass_chain as its
        JSON text (decoded here once per distinct chain)."""
        with gc_paused():
            run_code, runs = _codes(cols["run"])  # the runs that have candidates, in order
            text_code, texts = _codes(cols["pass_chain"])
            chain_of_text, chains = _codes([tuple(json.loads(t)) if t else () for t in texts])
            return cls(
                ids=np.array(cols["id"], dtype=np.int64),
                run_code=run_code,
                run_ids=[run_ids[k] for k in runs],
                run_names=[run_names.get(run_ids[k], run_ids[k]) for k in runs],
                chain_code=chain_of_text[text_code],
                chains=[list(c) for c in chains],
                adapters=cols["adapter_path"],
                size_bytes=np.array([s or 0 for s in cols["size_bytes"]], dtype=float),
                is_output=np.array([bool(v) for v in cols["is_output"]], dtype=bool),
                goals_met=np.array([bool(v) for v in cols["goals_met"]], dtype=bool),
                fingerprint_ids=cols["fingerprint_id"],
                metrics=[m or {} for m in cols["metrics"]],
                model_ids=cols.get("model_id"),
                builds=_builds(cols, [list(c) for c in chains], chain_of_text[text_code]),
            )

    @classmethod
    def from_candidates(cls, cands: list[dict[str, Any]]) -> Comparison:
        """From decoded registry rows that may carry ``run_name`` (``Registry.candidates``)."""
        cols: dict[str, list[Any]] = {
            k: [c.get(k) for c in cands]
            for k in ("id", "adapter_path", "size_bytes", "metrics", "is_output", "goals_met", "fingerprint_id", "model_id",
                  "model_type")
        }
        cols["precision"] = [c.get("pass_params") for c in cands]  # labels.build reads the precision from them
        run_ids = list(dict.fromkeys(c["run_id"] for c in cands))
        index = {r: k for k, r in enumerate(run_ids)}
        cols["run"] = [index[c["run_id"]] for c in cands]
        cols["pass_chain"] = [json.dumps(c.get("pass_chain") or []) for c in cands]
        cols["id"] = [c if c is not None else -1 for c in cols["id"]]
        out = cls.from_columns(cols, run_ids, {c["run_id"]: c.get("run_name", c["run_id"]) for c in cands})
        out.params = {int(i): json.dumps(c.get("pass_params") or {}, default=str) for i, c in zip(out.ids, cands, strict=True)}
        return out

    def __len__(self) -> int:
        return len(self.ids)

    # -- columns --------------------------------------------------------------------------------------------------
    def column(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(values as floats, which candidates have a number) of one metric; computed once."""
        if metric not in self._columns:
            self._columns[metric] = compare.numbers([m.get(metric) for m in self.metrics])
        return self._columns[metric]

    def label(self, i: int) -> str:
        """Build, run and pass chain of the candidate at index i."""
        build = f"{self.builds[i]} · " if self.builds else ""
        return f"{build}{self.run_names[self.run_code[i]]} · {self.chain_labels[self.chain_code[i]]}"

    def measured(self) -> np.ndarray:
        """Which candidates have at least one number."""
        return np.fromiter((bool(m) for m in self.metrics), bool, len(self))

    def fingerprint_counts(self) -> dict[str, int]:
        """How many measured candidates each evaluation fingerprint has (``unknown`` for those without one)."""
        out: dict[str, int] = {}
        for fp, m in zip(self.fingerprint_ids, self.metrics, strict=True):
            if m:
                out[fp or "unknown"] = out.get(fp or "unknown", 0) + 1
        return out


def _builds(cols: dict[str, list[Any]], chains: list[list[str]], chain_code: np.ndarray) -> list[str] | None:
    """Each candidate's build in words, computed once per distinct (chain, model type, adapter, precision, id kind)."""
    if "model_type" not in cols:
        return None
    from engine.views import labels

    suffix = labels.NO_ADAPTER_SUFFIX
    keys = [(code, mtype, adapter or "", prec if isinstance(prec, str) or prec is None else labels._precision(prec),
             bool(mid) and mid.endswith(suffix))
            for code, mtype, adapter, prec, mid in zip(chain_code.tolist(), cols["model_type"], cols["adapter_path"],
                                                       cols["precision"], cols["model_id"], strict=True)]
    codes, distinct = _codes([(c, t, a.endswith(".onnx_adapter"), bool(a), p, off) for c, t, a, p, off in keys])
    words = [labels.build({"pass_chain": chains[c], "model_type": t, "precision": p,
                           "adapter_path": "x.onnx_adapter" if onnx else "x" if a else None,
                           "model_id": suffix if off else ""}) for c, t, onnx, a, p, off in distinct]
    return [words[k] for k in codes.tolist()]


# -- what the page computes from it ---------------------------------------------------------------------------------
def pareto(cmp: Comparison, x: str, y: str) -> np.ndarray:
    """Which candidates are on the Pareto frontier of metrics x and y (compare.pareto_mask)."""
    (xv, xp), (yv, yp) = cmp.column(x), cmp.column(y)
    return compare.pareto_mask(xv, yv, xp & yp, x, y)


def goals(cmp: Comparison, specs: dict[str, str]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """({run_id: goal bounds}, met, decided): per candidate, whether it meets every goal of its run (``met``) where
    that can be decided (``decided``: its run has goals that all have a bound). The relative goals measure from each
    run's evaluated input model; the same rule as ``compare.meets``, a column at a time."""
    n = len(cmp)
    met, decided = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    bounds: dict[str, Any] = {}
    inputs = np.flatnonzero(np.array([not c for c in cmp.chains], dtype=bool)[cmp.chain_code]) if n else []
    baselines: dict[int, dict[str, Any]] = {}
    for i in inputs:
        if cmp.metrics[i] and int(cmp.run_code[i]) not in baselines:
            baselines[int(cmp.run_code[i])] = cmp.metrics[i]
    for k, rid in enumerate(cmp.run_ids):
        g = compare.goals_of(json.loads(specs.get(rid) or "{}"))
        bounds[rid] = compare.goal_bounds(g, baselines.get(k)) if g else {}
        if not bounds[rid]:
            continue
        rows = np.flatnonzero(cmp.run_code == k)
        done = np.zeros(len(rows), dtype=bool)  # decided by an earlier goal (compare.meets stops at the first)
        ok = np.ones(len(rows), dtype=bool)
        for metric, b in bounds[rid].items():
            if b["bound"] is None:  # undecided for every row not already failed
                break
            vals, present = cmp.column(metric)
            v, p = vals[rows], present[rows]
            with np.errstate(invalid="ignore"):
                worse = (v < b["bound"]) if b["higher_is_better"] else (v > b["bound"])
            fail = ~done & (~p | np.isnan(v) | worse)
            ok[fail] = False
            done |= fail
        else:
            done[:] = True
        met[rows], decided[rows] = ok & done, done
    return bounds, met, decided


def table(cmp: Comparison, front: np.ndarray, met: np.ndarray, decided: np.ndarray) -> Any:
    """Compare's table as one DataFrame (same order as the candidates): id, run, pass chain, candidate (its build in
    words), adapter, every metric, size_mb, goals met (decided by the run's goals, else what Olive recorded), Olive's best, Pareto."""
    import pandas as pd

    adapter_code, adapters = _codes([os.path.basename(a) if a else "—" for a in cmp.adapters])
    name_code, names = _codes(cmp.run_names)  # two runs may share a name (and two chains a label)
    label_code, labels = _codes(cmp.chain_labels)
    cols: dict[str, Any] = {
        "id": cmp.ids,
        "run": pd.Categorical.from_codes(name_code[cmp.run_code] if len(cmp) else cmp.run_code, categories=names,
                                         validate=False),
        "pass chain": pd.Categorical.from_codes(label_code[cmp.chain_code] if len(cmp) else cmp.chain_code,
                                                categories=labels, validate=False),
        **({"candidate": pd.Categorical(cmp.builds)} if cmp.builds is not None else {}),
        "adapter": pd.Categorical.from_codes(adapter_code, categories=adapters, validate=False),
    }
    for m in cmp.metric_names:
        cols[m] = cmp.column(m)[0]
    has_size = np.fromiter(("size_mb" in m for m in cmp.metrics), bool, len(cmp))
    size = cmp.column("size_mb")[0] if "size_mb" in cmp.metric_names else np.zeros(len(cmp))
    cols["size_mb"] = np.where(has_size, size, cmp.size_bytes / 1e6)
    cols["goals met"] = np.where(decided, met, cmp.goals_met)
    cols["Olive's best"] = cmp.is_output
    cols["Pareto"] = np.asarray(front, dtype=bool)
    return pd.DataFrame(cols, copy=False)


def chart_points(cmp: Comparison, x: str, y: str, front: np.ndarray, max_points: int) -> tuple[np.ndarray, bool]:
    """Indices to plot (candidates with both numbers) and whether they were sampled: past ``max_points``, the
    frontier always, then a fixed-seed sample of the rest."""
    both = cmp.column(x)[1] & cmp.column(y)[1]
    pts = np.flatnonzero(both)
    if len(pts) <= max_points:
        return pts, False
    on = np.flatnonzero(both & front)
    rest = np.flatnonzero(both & ~front)
    k = max(0, min(len(rest), max_points - len(on)))
    picked = np.random.default_rng(0).choice(rest, size=k, replace=False)
    return np.sort(np.concatenate([on, picked])), True
