"""Read models of candidates for the pages: which ones chat can load (probed on disk), and the Compare page's
side-by-side diff (its table and chart: engine.views.comparison). Pure functions over registry rows; nothing heavy imported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.views import labels


# -- chat ---------------------------------------------------------------------------------------------------------
def chat_ready(
    cands: list[dict[str, Any]], adapter_name: Callable[[str], str], run_names: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Candidates chat can load: ONNX outputs (onnxruntime-genai folders) and LoRA candidates (HF + PEFT), with
    ``kind``, ``label`` (engine.views.labels: the build in words, the run's name and short id) and the adapters
    expected (``"none"`` = the base model). ``adapter_name`` names an adapter file as chat lists it
    (engine.chat.models.adapter_name, passed in: views do not import chat).

    ONNX candidates also list every ``.onnx_adapter`` of the other ONNX candidates (other runs, other datasets) as
    ``adapter@<run>#<candidate>``, with where each came from in ``adapter_sources``: Olive's multi-LoRA serving on one
    base. Whether one fits the base graph is checked when it is first used (engine.chat.models.ensure_adapter)."""
    out = []
    for c in cands:
        p = Path(c.get("path") or "")
        p = p.parent if p.is_file() else p
        if c.get("failed") or not p.is_dir():
            continue
        if c.get("is_output") and (p / "genai_config.json").is_file():
            kind = "ONNX"
        elif c.get("adapter_path") and (p / "config.json").is_file():
            kind = "LoRA"
        else:
            continue
        names = sorted(x.name for x in p.glob("*.onnx_adapter")) if kind == "ONNX" else ["adapter"]
        adapters = ["none", *[adapter_name(n) for n in names]]
        if kind == "ONNX" and c.get("adapter_path") and str(c["adapter_path"]).endswith(".onnx_adapter"):
            adapters = list(dict.fromkeys([*adapters, adapter_name(c["adapter_path"])]))
        run_name = (run_names or {}).get(c["run_id"], c.get("run_name"))
        out.append({**c, "kind": kind, "adapters": adapters, "adapter_sources": {}, "run_name": run_name,
                    "label": labels.label({**c, "model_type": c.get("model_type") or ("ONNXModel" if kind == "ONNX" else "HfModel"),
                                           "adapter_path": c.get("adapter_path") or (str(p / names[0]) if names else None)},
                                          run_name)})
    onnx = [c for c in out if c["kind"] == "ONNX"]
    files = {
        c["id"]: sorted({*Path(c["path"]).parent.glob("*.onnx_adapter"), *Path(c["path"]).glob("*.onnx_adapter")})
        for c in onnx
    }
    for c in onnx:
        for other in onnx:
            if other["id"] == c["id"] or Path(other["path"]).resolve() == Path(c["path"]).resolve():
                continue
            for f in files[other["id"]]:
                name = f"{adapter_name(f.name)}@{other['run_id'][-8:]}#{other['id']}"
                run = (run_names or {}).get(other["run_id"], other["run_id"])
                c["adapter_sources"][name] = {"path": str(f), "run_id": other["run_id"], "run": run, "candidate": other["id"],
                                              "run_label": labels.run_label(run, other["run_id"])}
                c["adapters"].append(name)
    return out


# -- compare ------------------------------------------------------------------------------------------------------
def metric_choices(names: list[str], preferred: tuple[str, ...]) -> list[str]:
    """The preferred metrics that were measured, in the preferred order; every measured one when none was."""
    return [m for m in preferred if m in names] or names


def not_measured(cmp: Any, specs: dict[str, str], twins: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidates of a Comparison that have no number, each with why, in words: ``not measured (same as #3
    PyTorch + LoRA in run demo · 3f2a9c1d)`` when the same Olive model (one model id: Olive's cache) was measured in
    a run, else what the run's evaluation settings left out. ``twins``: ``Registry.measured_twins``."""
    rows = []
    for i in np.flatnonzero(~cmp.measured()):
        rid = cmp.run_ids[cmp.run_code[i]]
        mid = (cmp.model_ids or [None] * len(cmp))[i]
        twin = twins.get(mid or "")
        try:
            ev = (json.loads(specs.get(rid) or "{}").get("evaluation") or {})
        except ValueError:
            ev = {}
        if twin:
            why = f"same as #{twin['id']} in run {labels.run_label(twin['run_name'], twin['run_id'])}"
        elif not ev.get("enabled", False):
            why = "the run's evaluation is off"
        elif ev.get("evaluate_intermediate_models") is False and not cmp.is_output[i]:
            why = "the run measures only its outputs (evaluation.evaluate_intermediate_models is off)"
        elif not cmp.chains[cmp.chain_code[i]] and ev.get("evaluate_input_model") is False:
            why = "the run does not measure its input model (evaluation.evaluate_input_model is off)"
        else:
            why = "no measurement was recorded (see the run's log)"
        rows.append({"id": int(cmp.ids[i]), "run": cmp.run_names[cmp.run_code[i]],
                     "candidate": cmp.builds[i] if cmp.builds else "", "pass chain": cmp.chain_labels[cmp.chain_code[i]],
                     "measured": f"not measured ({why})"})
    return rows


def side_by_side(cand: dict[str, Any]) -> dict[str, Any]:
    """A candidate flattened for the diff: ``metric: name`` -> value, ``pass.param`` -> value, the pass chain."""
    flat = {f"metric: {k}": v for k, v in (cand.get("metrics") or {}).items()}
    for p, params in (cand.get("pass_params") or {}).items():
        for k, v in params.items() if isinstance(params, dict) else [("", params)]:
            flat[f"{p}.{k}".rstrip(".")] = json.dumps(v, default=str) if isinstance(v, (dict, list)) else v
    flat["pass chain"] = " > ".join(cand.get("pass_chain") or [])
    return flat


def goal_context(specs: dict[str, str], cands: list[dict[str, Any]]) -> tuple[dict[str, Any], list[bool | None]]:
    """({run_id: goal bounds}, per candidate: meets every goal of its run? None = undecided) from the runs' spec
    JSON; the relative goals measure from each run's evaluated input model (comparison.goals, for rows)."""
    from engine.views import comparison

    bounds, met, decided = comparison.goals(comparison.Comparison.from_candidates(cands), specs)
    return bounds, [bool(m) if d else None for m, d in zip(met, decided, strict=True)]


MAX_FILES = 200


def candidate_files(cand: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate's files (its folder, and its adapter when that lives elsewhere): path, size; at most MAX_FILES."""
    out: list[dict[str, Any]] = []
    for root in dict.fromkeys(p for p in (cand.get("path"), cand.get("adapter_path")) if p):
        p = Path(root)
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        for f in files:
            if len(out) >= MAX_FILES:
                return out
            out.append({"file": str(f), "size": f.stat().st_size})
    return out


def candidate_zip(cand: dict[str, Any]) -> bytes:
    """The candidate's files as one zip (built when the user clicks download)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for root in dict.fromkeys(p for p in (cand.get("path"), cand.get("adapter_path")) if p):
            p = Path(root)
            files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
            for f in files:
                z.write(f, f"{p.name}/{f.relative_to(p)}" if p.is_dir() else f.name)
    return buf.getvalue()


def contestant(cid: Any, adapter: str | None) -> str:
    """How a candidate with one adapter is named in the A/B leaderboard."""
    return f"#{cid} · {adapter or 'none'}"


def name_contestants(board: list[dict[str, Any]], cands: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Leaderboard rows with ``candidate``: the contestant named as Chat and Compare name it (engine.views.labels)
    and its adapter; ``cands``: candidate rows by id, with ``run_name``."""
    out = []
    for r in board:
        head, _, adapter = str(r["contestant"]).partition(" · ")
        c = cands.get(int(head[1:])) if head[1:].isdigit() else None
        out.append({"contestant": r["contestant"],
                    "candidate": f"{labels.label(c)} · adapter {adapter}" if c else r["contestant"],
                    **{k: v for k, v in r.items() if k != "contestant"}})
    return out


def vote_rows(votes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Registry vote rows -> leaderboard input {a, b, winner}."""
    out = []
    for v in votes:
        ab = (v.get("settings") or {}).get("blind_ab") or {}
        if ab.get("a") and ab.get("b") and ab.get("winner") in ("a", "b", "tie"):
            a, b = ab["a"], ab["b"]
            out.append({"a": contestant(a.get("id"), a.get("adapter")), "b": contestant(b.get("id"), b.get("adapter")),
                        "winner": ab["winner"]})
    return out
