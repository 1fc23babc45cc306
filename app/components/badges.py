"""Fit badges: what a pass needs against the chosen target (device, EP, precision, dataset, packages)."""

from __future__ import annotations

from typing import Any

from app.services import GPU_ONLY


def fit(ptype: str, meta: dict[str, Any] | None, target: dict[str, Any], has_dataset: bool) -> list[tuple[str, str]]:
    """``[(label, color)]``: green fits, red does not, orange needs attention, gray is information."""
    if meta is None:
        return [("not in this Olive's catalog", "red")]
    device, ep, prec = target.get("device", "cpu"), target.get("execution_provider", ""), target.get("precision", "")
    out: list[tuple[str, str]] = []
    accs = meta.get("accelerators") or []
    ok_dev = (device in accs or "any" in accs) and not (device == "cpu" and ptype in GPU_ONLY)
    out.append((f"{device} {'✓' if ok_dev else '✗'}", "green" if ok_dev else "red"))
    provs = meta.get("providers") or []
    ok_ep = not provs or ep in provs
    out.append((f"{ep.replace('ExecutionProvider', '')} EP {'✓' if ok_ep else '✗'}", "green" if ok_ep else "red"))
    precs = meta.get("precisions") or []
    if precs and len(precs) < 10:
        ok = prec in precs
        out.append((f"{'/'.join(precs)}", "green" if ok else "orange"))
    need = meta.get("dataset")
    if need in ("dataset_required", "dataset"):
        out.append(("needs dataset" + (" ✓" if has_dataset else " ✗"), "green" if has_dataset else "red"))
    elif need == "dataset_optional":
        out.append(("dataset optional", "gray"))
    if meta.get("import_error"):
        out.append(("cannot load", "red"))
    elif meta.get("missing_packages"):
        out.append((f"not installed: {', '.join(meta['missing_packages'])}", "orange"))
    return out


def markdown(badges: list[tuple[str, str]]) -> str:
    return " ".join(f":{color}-badge[{label.replace(']', ')').replace('[', '(')}]" for label, color in badges)


def ok(badges: list[tuple[str, str]]) -> bool:
    return not any(color == "red" for _, color in badges)
