"""The Workflow page: the draft (new, from a recipe), Olive's pass catalog, the pre-flight check and memory plan, the
Olive config in and out, the evaluation metrics and benchmark tasks."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from app.services.core import gpus_available, home, machine
from app.services.sources import default_model, model_card
from app.services.tracking import slots
from engine.olive import catalog as catalog_mod
from engine.olive import importer as olive_import
from engine.runs import submit as service
from engine.spec import drafts, recipes
from engine.spec import metrics as metrics_mod
from engine.spec.passes import canonical_pass_type
from engine.spec.schema import parse_spec
from engine.views import benchmarks as bench_view
from engine.views import preflight


def new_draft() -> dict[str, Any]:
    return drafts.new_draft(default_model())


# -- catalog ------------------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _catalog_build(path: str) -> dict[str, Any]:
    """One background build per catalog file; returns a holder the page polls."""
    holder: dict[str, Any] = {"error": None, "done": False}

    def work() -> None:
        try:
            catalog_mod.load()
        except Exception as e:  # noqa: BLE001 - shown on the page
            holder["error"] = str(e)
        holder["done"] = True

    threading.Thread(target=work, name="grove-catalog", daemon=True).start()
    return holder


@st.cache_resource(show_spinner=False, ttl=3600)
def _catalog_file(path: str, mtime: float) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def catalog() -> dict[str, Any] | None:
    """Olive's pass catalog, or None while it is being built in the background (first start: ~10 s)."""
    p = catalog_mod.catalog_path()
    if p.is_file():
        return _catalog_file(str(p), p.stat().st_mtime)
    holder = _catalog_build(str(p))
    if holder["error"]:
        raise RuntimeError(holder["error"])
    return None


def catalog_passes() -> dict[str, Any] | None:
    c = catalog()
    return c["passes"] if c else None


def pass_type(ptype: str, passes: dict[str, Any] | None) -> str:
    """A pass type as Olive reads it (``gptq`` is Gptq): the catalog's spelling, for the forms."""
    return canonical_pass_type(ptype, passes)


def memory_plan(draft: dict[str, Any]) -> list[dict[str, Any]]:
    card = model_card((draft.get("model") or {}).get("name", ""))
    return preflight.memory_rows(draft, card, machine(), slots())


DEFAULT_SEARCH = drafts.DEFAULT_SEARCH


def metrics() -> dict[str, dict[str, Any]]:
    """The evaluator's metrics: name -> {higher_is_better, unit, what} (engine.spec.metrics.METRICS)."""
    return metrics_mod.METRICS


def benchmark_cost(draft: dict[str, Any]) -> str | None:
    """What the draft's benchmark tasks cost before launch (examples x candidates, estimated time); None without any."""
    return bench_view.cost_line(drafts.to_spec_dict(draft))


def travel_benchmark() -> dict[str, Any]:
    """The local travel multiple-choice task (written under GROVE_HOME/benchmarks once) as a benchmark entry."""
    return bench_view.travel_task()


# -- workflow -----------------------------------------------------------------------------------------------------
RECIPES = {k: v[0] for k, v in recipes.PRESETS.items()}


def apply_recipe(draft: dict[str, Any], key: str) -> dict[str, Any]:
    device = "gpu" if gpus_available() else "cpu"
    return drafts.apply_recipe(draft, key, device=device)  # GPU-only recipes build a GPU target themselves


@st.cache_data(ttl=10, show_spinner=False)
def _preflight(draft_json: str, h: str, round_trip_done: bool) -> list[dict[str, str]]:
    d = json.loads(draft_json)
    card = model_card((d.get("model") or {}).get("name", ""))
    return preflight.check(
        d, catalog=catalog_passes(), card=card, gpus_available=gpus_available(), slots=slots(), machine=machine()
    )


def preflight_check(draft: dict[str, Any]) -> list[dict[str, str]]:
    return _preflight(json.dumps(draft, sort_keys=True, default=str), home(), template_round_trip(draft) is not None)


def template_round_trip(draft: dict[str, Any]) -> dict[str, Any] | None:
    """The first example rendered three ways (training text, the tokenizer's chat template, onnxruntime-genai's chat
    prompt), from a child process; None while it runs, {} when it does not apply."""
    return preflight.round_trip(draft)


def draft_olive_config(draft: dict[str, Any]) -> str:
    """The Olive config the draft would run with (raises GroveError when the draft is not valid yet)."""
    return service.olive_config_text(parse_spec(drafts.to_spec_dict(draft)), base=service.ui_bases())


def import_olive(text: str, allow_code: bool = False, target: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """An Olive config as a draft, with a note per mapping or dropped field. Code (user_script, script_dir,
    trust_remote_code) is imported only with ``allow_code``; otherwise the import is refused and says why.
    ``target`` ("cpu" or "cuda"): import a config for another target as a CPU or CUDA version of it."""
    return olive_import.import_text(text, catalog_passes(), allow_code=allow_code, target=target)


def spec_json(draft: dict[str, Any]) -> str:
    return json.dumps(drafts.to_spec_dict(draft), indent=2)
