"""Reuse of finished results: a run identical to one that already succeeded completes at once from its output."""

from __future__ import annotations

import os
import shutil
from typing import Any

from engine.olive import config as olive_config
from engine.olive.footprint import expected_files
from engine.runs.registry import Registry


def find_twin(reg: Registry, run: dict[str, Any]) -> dict[str, Any] | None:
    """The succeeded run identical to ``run`` whose output is complete (None when there is none): a cheap check
    the worker makes in its tick before it copies anything in a thread."""
    full = reg.get_run(run["id"])
    prev = reg.succeeded_twin(full["spec_hash"], exclude=full["id"])
    if prev is None:
        return None
    src = olive_config.output_dir(prev["olive_config"])
    if not src or not src.is_dir() or any(not (src / f).is_file() for f in expected_files(olive_config.parse(full["olive_config"]))):
        return None
    return prev


def reuse_finished(reg: Registry, run: dict[str, Any]) -> bool:
    """A run identical to one that already succeeded (same spec, data, packages) reuses its result at once.

    Its output folder is a hard-linked copy of the earlier one (a copy where links fail: another filesystem) and its
    candidates are copied, so nothing runs. Returns True when the run was completed that way. The worker calls it in
    a thread: a multi-GB copy never blocks its tick, and an error here never reaches its loop.
    """
    full = reg.get_run(run["id"])
    prev = find_twin(reg, full)
    if prev is None:
        return False
    src, dst = olive_config.output_dir(prev["olive_config"]), olive_config.output_dir(full["olive_config"])
    if not src or not dst:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, copy_function=_link_or_copy, dirs_exist_ok=True)
    cands = []
    for c in reg.candidates(prev["id"]):
        c = {k: v for k, v in c.items() if k not in ("id", "run_id", "created_at")}
        for k in ("path", "adapter_path"):
            if c.get(k) and c[k].startswith(str(src)):
                c[k] = str(dst) + c[k][len(str(src)):]
        cands.append(c)
    reg.upsert_candidates(full["id"], cands)
    reg.add_event(full["id"], "reused", {"from_run": prev["id"], "message": f"identical to run {prev['id']}: every pass reused"})
    reg.transition(full["id"], "succeeded", expect=("running",), exit_code=0, progress=1.0, stage="succeeded (reused)")
    return True


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
