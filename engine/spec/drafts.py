"""The draft a user edits in the dashboard, and what becomes of it: a RunSpec dict, an Olive config, recipe presets.

A draft is a RunSpec-shaped plain dict (JSON-serializable, so it can live in session state) in which a pass may
carry ``"raw": true``: a pass imported from an Olive config that the form cannot show field by field; its
``params`` are kept verbatim. ``to_spec_dict`` drops those UI-only keys.
"""

from __future__ import annotations

import copy
from typing import Any

from engine.spec import recipes
from engine.spec.passes import ADAPTER_PASSES

UI_PASS_KEYS = ("raw",)
DEFAULT_TARGET = {"device": "cpu", "execution_provider": "CPUExecutionProvider", "precision": "int4"}
DEFAULT_SEARCH = {
    "sampler": "sequential",
    "execution_order": "joint",
    "max_samples": None,
    "max_time_s": None,
    "stop_when_goals_met": False,
    "seed": 0,
}


def new_draft(model: str = "") -> dict[str, Any]:
    return {
        "name": "my run",
        "model": {"name": model, "trust_remote_code": False, "revision": None},
        "dataset": None,
        "passes": [],
        "target": dict(DEFAULT_TARGET),
        "evaluation": {"enabled": False, "metrics": []},
        "search": None,
        "resources": {"gpus": 0},
    }


def _clean_pass(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": p["type"]}
    if p.get("name"):
        out["name"] = p["name"]
    if p.get("params"):
        out["params"] = p["params"]
    if p.get("search"):
        out["search"] = p["search"]
    return out


def to_spec_dict(draft: dict[str, Any]) -> dict[str, Any]:
    """The RunSpec dict for ``draft`` (not validated: ``engine.spec.schema.parse_spec`` does that)."""
    d = copy.deepcopy(draft)
    spec: dict[str, Any] = {"name": d.get("name") or "run", "model": dict(d.get("model") or {})}
    spec["model"] = {k: v for k, v in spec["model"].items() if v not in (None, "") or k == "name"}
    if d.get("dataset"):
        spec["dataset"] = {k: v for k, v in d["dataset"].items() if v is not None and not k.startswith("_")}
    spec["passes"] = [_clean_pass(p) for p in d.get("passes") or []]
    spec["target"] = d.get("target") or dict(DEFAULT_TARGET)
    ev = d.get("evaluation") or {}
    if ev:
        spec["evaluation"] = ev
    searching = any(p.get("search") for p in d.get("passes") or [])
    if d.get("search") is not None or searching:
        spec["search"] = {k: v for k, v in (d.get("search") or DEFAULT_SEARCH).items() if v is not None}
    spec["resources"] = d.get("resources") or {"gpus": 0}
    if d.get("allow_user_code"):  # set only by an import the user allowed to keep code
        spec["allow_user_code"] = True
    return spec


def from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A draft from a RunSpec dict (a run's spec, to clone it)."""
    d = new_draft()
    d.update({k: copy.deepcopy(v) for k, v in spec.items() if k in d})
    d["model"] = {**new_draft()["model"], **(spec.get("model") or {})}
    d["passes"] = [
        {
            "type": p["type"],
            "name": p.get("name"),
            "params": dict(p.get("params") or {}),
            "search": dict(p.get("search") or {}),
        }
        for p in spec.get("passes") or []
    ]
    return d


# -- recipe presets (engine/spec/recipes.py) -------------------------------------------------------------------------


def apply_recipe(draft: dict[str, Any], key: str, device: str = "cpu") -> dict[str, Any]:
    """The draft with a preset's passes, target and resources (its model and dataset are kept)."""
    r = recipes.PRESETS[key][1](device)
    d = copy.deepcopy(draft)
    d["passes"] = [
        {"type": p["type"], "name": p.get("name"), "params": p.get("params", {}), "search": {}} for p in r["passes"]
    ]
    d["target"], d["resources"] = r["target"], r["resources"]
    d["search"] = None
    if not r["passes"]:  # a baseline measures the model: evaluation on, the recipe's metrics unless some are chosen
        ev = d.get("evaluation") or {}
        d["evaluation"] = {**r["evaluation"], **ev, "enabled": True, "evaluate_input_model": True,
                           "metrics": ev.get("metrics") or r["evaluation"]["metrics"]}
    trains = any(p["type"] in ADAPTER_PASSES for p in r["passes"])
    if trains and d.get("dataset"):
        d["dataset"]["max_seq_len"] = r["dataset"]["max_seq_len"]
        if not d["dataset"].get("text_template") and not d["dataset"].get("chat_template"):
            d["dataset"]["text_template"] = r["dataset"]["text_template"]
    if d.get("name") in (None, "", "my run"):
        d["name"] = r["name"] if key == "lab" else recipes.PRESETS[key][0].split(":")[0].lower()
    return d
