"""The UI's only door into engine/. Reads are cached with a ttl (keyed by GROVE_HOME, so tests with their own
home never see another's data); writes go through engine.runs.submit and clear the caches.

Nothing here imports Olive, torch, transformers or datasets: the catalog is built in a child process, Hub
previews run in one, and the demo is built by ``python -m engine.cli demo`` in the background (engine.runs.demo).
No algorithms, SQL or processes here either: those live in engine/ (views, registry, evaluate.compare, runs).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from engine import access, paths
from engine import machine as machine_mod
from engine.data import formats as data_formats
from engine.data import inspect as dataview
from engine.data.prepare import template_fields
from engine.errors import DataError, GroveError
from engine.evaluate import compare
from engine.models import default as default_models
from engine.olive import catalog as catalog_mod
from engine.olive import importer as olive_import
from engine.runs import cluster
from engine.runs import demo as demo_build
from engine.runs import submit as service
from engine.runs.registry import ACTIVE, STATUSES, Registry
from engine.spec import drafts, recipes
from engine.spec import metrics as metrics_mod
from engine.spec.passes import GPU_ONLY, canonical_pass_type
from engine.spec.schema import DatasetSpec, parse_spec
from engine.views import benchmarks as bench_view
from engine.views import candidates as cand_views
from engine.views import charts, estimate, preflight
from engine.views import comparison as comparison_view
from engine.views import dataset as dataset_view
from engine.views import format as fmt
from engine.views import labels as label_views
from engine.views import lineage as lineage_view
from engine.views import report as report_view
from engine.views import runs as views

LIVE_TTL = 2
TTL = 30
UPLOAD_LIMIT_MB = 200


def home() -> str:
    return str(paths.home())


@st.cache_resource(show_spinner=False)
def _registry(db: str) -> Registry:
    return Registry(Path(db))


def registry() -> Registry:
    return _registry(str(paths.db_path()))


def clear() -> None:
    st.cache_data.clear()


# -- runs ---------------------------------------------------------------------------------------------------------
@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _runs(h: str, status: tuple[str, ...], limit: int, offset: int, user: str | None) -> list[dict[str, Any]]:
    reg = registry()
    return views.run_rows(reg, reg.list_runs(status=list(status) or None, limit=limit, offset=offset, user=user))


def runs(status: tuple[str, ...] = (), limit: int = 50, offset: int = 0, user: str | None = None) -> list[dict[str, Any]]:
    """Rows for run tables: id, name, status, stage, progress, created, elapsed, eta, error, user (who launched it),
    devices (where it runs); of one person when ``user`` is given."""
    return _runs(home(), tuple(status), limit, offset, user)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _counts(h: str, user: str | None) -> dict[str, int]:
    return registry().count_runs(user=user)


def counts(user: str | None = None) -> dict[str, int]:
    return _counts(home(), user)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _people(h: str) -> list[str]:
    return registry().people()


def people() -> list[str]:
    """Everyone who launched a run (the Runs and Compare pages filter by them)."""
    return _people(home())


@st.cache_data(ttl=1, show_spinner=False)
def _run(h: str, run_id: str) -> dict[str, Any]:
    return registry().find_run(run_id)


def run(run_id: str) -> dict[str, Any]:
    return _run(home(), run_id)


@st.cache_data(ttl=1, show_spinner=False)
def _live(h: str, run_id: str) -> dict[str, Any]:
    from engine.runs.logs import log_tail

    reg = registry()
    r = reg.get_run(run_id)
    training = reg.events(run_id, kinds=["train_step", "resumed"])
    return {
        "run": r,
        "timeline": views.timeline(reg, r),
        "curve": views.loss_points(training),
        "training": views.training_summary(training),
        "log_tail": log_tail(Path(r["log_path"] or "/nonexistent"), 40),
        "logs": views.recent_logs(reg, run_id),
        "failure_tail": views.failure_tail(reg, run_id) if r["status"] == "failed" else "",
    }


def live(run_id: str) -> dict[str, Any]:
    """A run with its timeline, training curve (one point per step across resumes) and its summary line, log tail
    and notable log events."""
    return _live(home(), run_id)


@st.cache_data(ttl=5, show_spinner=False)
def _candidates(h: str, run_id: str) -> list[dict[str, Any]]:
    reg = registry()
    cands = reg.candidates(run_id)
    speed = reg.speed_state([c["id"] for c in cands])
    for c in cands:  # "speed pending", or the conditions its speed figures were measured under
        c["speed"] = comparison_view.speed_label(speed.get(c["id"]))
    return cands


def candidates(run_id: str) -> list[dict[str, Any]]:
    return _candidates(home(), run_id)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _slots(h: str) -> dict[str, Any]:
    return views.slots(registry().live_workers())


def slots() -> dict[str, Any]:
    return _slots(home())


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _cluster(h: str) -> dict[str, Any] | None:
    status = cluster.cluster_status(registry())
    if status is None:
        return None
    waiting = [r["run_id"] for r in status.get("runs", []) if r.get("waiting")]
    return {"address": status.get("address"), "nodes": cluster.node_rows(status), "waiting": waiting,
            "error": status.get("error")}


def ray_cluster() -> dict[str, Any] | None:
    """The Ray cluster a live worker sends runs to (nodes, their CPUs/GPUs in use, runs placed and waiting), or None
    on the local executor."""
    return _cluster(home())


@st.cache_data(ttl=TTL, show_spinner=False)
def _candidate_count(h: str) -> int:
    return registry().count_candidates()


def candidate_count() -> int:
    return _candidate_count(home())


def failure_hint(error_type: str | None) -> str | None:
    return views.KNOWN_FAILURES.get(error_type or "")


# -- who is using this session (engine.access; docs/auth.md) -----------------------------------------------------
PERSON = "grove_person"  # session state: the signed-in person as last resolved (user, role, why, roles file mtime)


@st.cache_data(ttl=TTL, show_spinner=False)
def _sign_in_state(path: str, mtime: float) -> tuple[str, list[str]]:
    if not Path(path).is_file():
        return "off", []
    problems = access.auth_problems(Path(path))
    if problems == [f"{path} has no [auth] section"]:
        return "off", []  # a secrets file that holds other secrets
    return ("broken", problems) if problems else ("on", [])


def sign_in_state() -> tuple[str, list[str]]:
    """("off", []) without sign-in configured (everyone is the local administrator), ("on", []) with it, or
    ("broken", problems) when the secrets file has an [auth] section that cannot work."""
    path = str(access.secrets_path())
    return _sign_in_state(path, _mtime(path))


def sign_in_providers() -> list[str]:
    """The named providers of the secrets file ([] for the unnamed default one)."""
    return access.providers()


@st.cache_data(ttl=TTL, show_spinner=False)
def _roles(path: str, mtime: float) -> access.Roles:
    return access.load_roles(Path(path))


def person() -> dict[str, Any]:
    """Who uses this session: {user, role, why, local}. Without sign-in: the local user as admin. Signed in: the
    identity the provider sent and the role the roles file (or its claim) gives, None when refused; a session's first
    resolution is recorded in the access log (a sign-in, or its refusal). Raises AccessError for a broken roles file."""
    if sign_in_state()[0] != "on":
        return {"user": access.local_user(), "role": "admin", "why": "sign-in is off: the local administrator",
                "local": True}
    if not st.user.is_logged_in:
        return {"user": "", "role": None, "why": "not signed in", "local": False}
    claims = st.user.to_dict()
    path = str(access.roles_path())
    mtime = _mtime(path)
    roles = _roles(path, mtime)
    who = access.identity(claims, roles)
    known = st.session_state.get(PERSON)
    if known and known["user"] == who and known["roles_mtime"] == mtime:
        return known
    role, why = access.role_of(claims, roles)
    me = {"user": who, "role": role, "why": why, "local": False, "roles_mtime": mtime}
    if not known or known["user"] != who or known["role"] != role:
        registry().record_access(who, role, "sign-in", allowed=role is not None, detail=why)
    st.session_state[PERSON] = me
    return me


def can(action: str, owner: str | None = None) -> bool:
    """Whether this session's person may ``action`` ("launch", "cancel", "retry", "chat", "vote", "admin"...), on a
    run of ``owner`` for cancel and retry."""
    me = person()
    return access.can(me["role"], action, user=me["user"], owner=owner)


def why_not(action: str, owner: str | None = None) -> str:
    me = person()
    return access.refusal(me["role"], action, user=me["user"], owner=owner)


def _require(action: str, owner: str | None = None, target: str = "") -> dict[str, Any]:
    """This session's person, when they may ``action``; otherwise the refusal is recorded and raised (AccessError).
    With sign-in on, the allowed actions are recorded too (who launched, cancelled or retried what)."""
    me = person()
    if not access.can(me["role"], action, user=me["user"], owner=owner):
        message = access.refusal(me["role"], action, user=me["user"], owner=owner)
        registry().record_access(me["user"], me["role"], action, target=target, allowed=False, detail=message)
        raise access.AccessError(message)
    return me


def _record(me: dict[str, Any], action: str, target: str) -> None:
    if not me["local"]:
        registry().record_access(me["user"], me["role"], action, target=target)


def _own_inputs(me: dict[str, Any], draft_paths: dict[str, str]) -> None:
    """With sign-in on, a draft may not point into another person's uploads (field and path named)."""
    if me["local"]:
        return
    for field, p in draft_paths.items():
        if p and access.foreign_upload(p, me["user"]):
            raise access.AccessError(f"{field}: {p} is another person's upload; upload your own copy")


def access_log(limit: int = 200) -> list[dict[str, Any]]:
    """The access log newest first, for an admin: when, user, role, action, target, allowed, detail."""
    import time as _time

    if not can("admin"):
        return []
    return [{**r, "when": _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(r["ts"]))}
            for r in registry().access_log(limit=limit)]


# -- writes -------------------------------------------------------------------------------------------------------
def submit_draft(draft: dict[str, Any]) -> dict[str, Any]:
    """Validate and queue the draft as this session's person's run; raises GroveError (SpecError, DataError,
    AccessError, ...) with a user-facing message."""
    me = _require("launch")
    _own_inputs(me, {"dataset.path": (draft.get("dataset") or {}).get("path") or "",
                     "model.name": (draft.get("model") or {}).get("name") or ""})
    spec = parse_spec(drafts.to_spec_dict(draft))
    r = service.submit(spec, reg=registry(), gpus_available=gpus_available(), base=service.ui_bases(),
                       user=me["user"])
    _record(me, "launch", r["id"])
    clear()
    return r


def cancel(run_id: str) -> dict[str, Any]:
    """Cancel a run: a member their own, an admin anyone's (refused and recorded otherwise)."""
    run_row = registry().find_run(run_id)
    me = _require("cancel", owner=run_row.get("user"), target=run_row["id"])
    r = service.cancel(run_row["id"], reg=registry())
    _record(me, "cancel", run_row["id"])
    clear()
    return r


def retry(run_id: str) -> dict[str, Any]:
    """Queue a finished run again, as this person's run: a member their own, an admin anyone's."""
    run_row = registry().find_run(run_id)
    me = _require("retry", owner=run_row.get("user"), target=run_row["id"])
    r = service.retry(run_row["id"], reg=registry(), user=me["user"])
    _record(me, "retry", run_row["id"])
    clear()
    return r


def export_config(run_id: str) -> str:
    return service.export_config(run_id, reg=registry())


def draft_from_run(run_id: str) -> dict[str, Any]:
    d = drafts.from_spec(json.loads(run(run_id)["spec"]))
    d["name"] = f"{d['name']} (clone)"
    return d


def artifacts_zip(run_id: str) -> bytes:
    """The run's output folder (and its Olive config and log) as a zip, built when the user clicks download."""
    return views.artifacts_zip(registry().get_run(run_id))


def output_dir(run_id: str) -> Path | None:
    return views.output_dir(run(run_id))


# -- demo ---------------------------------------------------------------------------------------------------------
def demo_state() -> str:
    """'built' (the default model is set up), 'building' (a background set-up is running) or 'missing'."""
    return demo_build.state()


def demo_progress() -> dict[str, Any] | None:
    """The background set-up's stage and percentage ({"stage", "percent"}), when one reported."""
    return demo_build.progress()


def launch_demo() -> list[dict[str, Any]] | None:
    """Queue the demo runs if the default model is set up; otherwise start setting it up (and queueing) in the
    background (None)."""
    me = _require("launch")
    r = demo_build.launch(registry(), me["user"])
    _record(me, "launch", ", ".join(x["id"] for x in r or []) or "demo (after the model's set-up)")
    if r is not None:
        clear()
    return r


def default_model() -> str:
    """The default model's folder ('' before it is set up)."""
    m = default_models.current()
    return str(m) if m else ""


def default_model_label(path: str) -> str | None:
    """How the picker names a built-in model, or None when ``path`` is not one."""
    return default_models.label(path)


def model_fallback_reason() -> str:
    return default_models.fallback_reason()


def new_draft() -> dict[str, Any]:
    return drafts.new_draft(default_model())


# -- process warm-up ------------------------------------------------------------------------------------------
_warm = threading.Event()
_warm_lock = threading.Lock()


def warm_up() -> threading.Event:
    """Once per server process, in a background thread: Plotly's first figure (engine.views.charts.warm, ~0.2-0.3 s
    of reading its validators), so the first chart a user opens (Compare, a run's loss curve) does not pay it.
    Returns an event set when it is done."""
    with _warm_lock:
        if not getattr(warm_up, "started", False):
            warm_up.started = True  # type: ignore[attr-defined]

            def work() -> None:
                try:
                    charts.warm()
                finally:
                    _warm.set()

            threading.Thread(target=work, name="grove-warm-up", daemon=True).start()
    return _warm


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


# -- models and data ----------------------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def _inputs(h: str) -> dict[str, list[str]]:
    return views.input_choices(registry())


def inputs() -> dict[str, list[str]]:
    """Model folders and dataset files under the allowed roots, recently used first (with sign-in on, without other
    people's uploads)."""
    found = _inputs(home())
    me = person()
    if me["local"]:
        return found
    return {k: [p for p in v if not access.foreign_upload(p, me["user"])] for k, v in found.items()}


def allowed_roots() -> list[str]:
    return [str(r) for r in dataview.allowed_roots()]


def is_allowed(path: str) -> bool:
    return dataview.is_allowed(path)


@st.cache_data(ttl=60, show_spinner=False)
def model_card(model: str) -> dict[str, Any] | None:
    return estimate.model_card(model) if model else None


@st.cache_resource(show_spinner=False)
def machine() -> dict[str, Any]:
    return machine_mod.describe()


@st.cache_resource(show_spinner=False)
def _gpus() -> int:
    return len(machine_mod.detect_gpus())


def gpus_available() -> int:
    return _gpus()


def memory_plan(draft: dict[str, Any]) -> list[dict[str, Any]]:
    card = model_card((draft.get("model") or {}).get("name", ""))
    return preflight.memory_rows(draft, card, machine(), slots())


def _mtime(path: str) -> float:
    try:
        return Path(path).expanduser().stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(ttl=60, show_spinner=False)
def _page(path: str, mtime: float, page: int, size: int) -> tuple[list[dict[str, Any]], int]:
    return dataview.read_page(path, page, size)


def dataset_page(path: str, page: int, size: int = 20) -> tuple[list[dict[str, Any]], int]:
    """One page of a local dataset (raises DataError; AccessError for another person's upload)."""
    _own_inputs(person(), {"dataset.path": path})
    return _page(path, _mtime(path), page, size)


@st.cache_data(ttl=600, show_spinner=False)
def _hub(ds_json: str, n: int) -> list[dict[str, Any]]:
    return dataview.hub_preview(DatasetSpec.model_validate_json(ds_json), n)


def hub_preview(ds: dict[str, Any], n: int = 20) -> list[dict[str, Any]]:
    return _hub(DatasetSpec.model_validate(ds).model_dump_json(), n)


def save_upload(name: str, data: bytes) -> str:
    """Store an uploaded dataset in the uploader's own folder, GROVE_HOME/uploads/<person> (content-addressed name),
    and return its path."""
    me = _require("upload")
    if len(data) > UPLOAD_LIMIT_MB * 2**20:
        raise DataError(
            f"{name} is larger than the {UPLOAD_LIMIT_MB} MB upload limit: put it under an allowed root instead"
        )
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)[:100]
    d = access.upload_dir(me["user"])
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{hashlib.sha256(data).hexdigest()[:10]}-{safe}"
    if not p.exists():
        p.write_bytes(data)
    clear()
    return str(p)


def chat_template(model: str) -> str | None:
    return dataview.chat_template_of(model) if model else None


@st.cache_data(ttl=60, show_spinner=False)
def _texts(ds_json: str, mtime: float, model: str, limit: int) -> dict[str, Any]:
    return dataset_view.rendered(DatasetSpec.model_validate_json(ds_json), model, limit)


def rendered(ds: dict[str, Any], model: str, limit: int = 5000) -> dict[str, Any]:
    """Rendered training texts (first 50) and tokens per example (first ``limit`` rows). Raises DataError."""
    spec = DatasetSpec.model_validate({k: v for k, v in ds.items() if v is not None and not k.startswith("_")})
    return _texts(spec.model_dump_json(), _mtime(spec.path or ""), model, limit)


@st.cache_data(ttl=60, show_spinner=False)
def _split(ds_json: str, mtime: float) -> dict[str, Any]:
    return dataview.split_stats(DatasetSpec.model_validate_json(ds_json))


@st.cache_data(ttl=60, show_spinner=False)
def _format(path: str, mtime: float) -> str | None:
    return dataview.format_of(path)


def dataset_format(path: str | None) -> str | None:
    """The format the local file's rows have (messages, sharegpt, alpaca, prompt_response, text), or None."""
    return _format(path, _mtime(path)) if path else None


FORMAT_WORDS = data_formats.DESCRIBE
CONVERSATION_FORMATS = data_formats.CONVERSATION_FORMATS


def path_bases() -> list[str]:
    """Where a relative path typed on the pages is read from, in order (engine.runs.submit.ui_bases)."""
    return [str(p) for p in service.ui_bases()]


def split_stats(ds: dict[str, Any]) -> dict[str, Any]:
    spec = DatasetSpec.model_validate({k: v for k, v in ds.items() if v is not None and not k.startswith("_")})
    return _split(spec.model_dump_json(), _mtime(spec.path or ""))


# Pure helpers and constants the components use (so components never reach into engine/ themselves).
fmt_seconds = fmt.fmt_seconds
human_size = fmt.human_size
estimate_gb = fmt.estimate_gb
DEFAULT_SEARCH = drafts.DEFAULT_SEARCH
# The metric sets of engine.spec.metrics, in its order; the Compare chart opens on decode speed, so the speed
# list starts there and wraps around.
QUALITY = metrics_mod.QUALITY
_DECODE = metrics_mod.SPEED.index("decode_tps")
SPEED = metrics_mod.SPEED[_DECODE:] + metrics_mod.SPEED[:_DECODE]
metric_choices = cand_views.metric_choices


def quality_choices(measured: list[str]) -> list[str]:
    """Compare's quality axis: benchmark accuracies (acc:<task>) first, then the held-out split's metrics."""
    return metrics_mod.quality_names(measured) or measured
side_by_side = cand_views.side_by_side


def metrics() -> dict[str, dict[str, Any]]:
    """The evaluator's metrics: name -> {higher_is_better, unit, what} (engine.spec.metrics.METRICS)."""
    return metrics_mod.METRICS


def benchmark_cost(draft: dict[str, Any]) -> str | None:
    """What the draft's benchmark tasks cost before launch (examples x candidates, estimated time); None without any."""
    return bench_view.cost_line(drafts.to_spec_dict(draft))


def travel_benchmark() -> dict[str, Any]:
    """The local travel multiple-choice task (written under GROVE_HOME/benchmarks once) as a benchmark entry."""
    return bench_view.travel_task()


PRESETS = dataview.PRESETS
TOKENIZER_PRESET = dataview.TOKENIZER_PRESET
FREE_PRESET = dataview.FREE_PRESET


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


__all__ = ["ACTIVE", "GPU_ONLY", "STATUSES", "DataError", "GroveError", "template_fields"]


# -- compare ------------------------------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def _measured_runs(h: str) -> list[dict[str, Any]]:
    return registry().measured_runs()


def measured_runs() -> list[dict[str, Any]]:
    """Runs with at least one measured candidate: id, name, candidates (how many have metrics)."""
    return _measured_runs(home())


# Compare keeps its read model, fronts, goal marks, tables and figures in cache_resource (shared by sessions,
# read-only): cache_data would pickle 10,000 rows on every rerun. They are keyed by the run ids joined in one string:
# hashing one string is cheaper than a tuple of hundreds.
_SEP = "\n"


def _key(run_ids: list[str]) -> str:
    return _SEP.join(dict.fromkeys(run_ids))  # each run once


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=8)
def _comparison(h: str, ids: str) -> comparison_view.Comparison:
    run_ids = ids.split(_SEP)
    names = {r["id"]: label_views.run_label(r["name"], r["id"]) for r in measured_runs()}
    return comparison_view.Comparison.read(registry(), run_ids, names)


def comparison(run_ids: list[str]) -> comparison_view.Comparison:
    """Every candidate of the given runs, in columns (engine.views.comparison). Shared between sessions: read-only."""
    return _comparison(home(), _key(run_ids))


@st.cache_data(ttl=TTL, show_spinner=False)
def _comparability(h: str, ids: str) -> tuple[bool, str]:
    run_ids = ids.split(_SEP)
    counts = comparison(run_ids).fingerprint_counts()
    ok, why = compare.comparability_of(counts, registry().fingerprints(sorted(counts))) if len(counts) > 1 else (True, "")
    speed_ok, speed_why, _ = speed_check(run_ids)
    if not speed_ok:
        return False, "; ".join(w for w in (why, speed_why) if w)
    return ok, why


@st.cache_data(ttl=TTL, show_spinner=False)
def _speed_check(h: str, ids: str) -> tuple[bool, str, int]:
    return comparison_view.speed_check(comparison(ids.split(_SEP)), registry())


def speed_check(run_ids: list[str]) -> tuple[bool, str, int]:
    """(speed figures comparable, what differs, how many candidates' speed is still pending)."""
    return _speed_check(home(), _key(run_ids))


def comparability(run_ids: list[str]) -> tuple[bool, str]:
    """(True, "") when the runs' measured candidates share one evaluation fingerprint; else (False, what differs)."""
    return _comparability(home(), _key(run_ids))


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=64)
def _pareto(h: str, ids: str, x: str, y: str) -> Any:
    run_ids = ids.split(_SEP)
    return comparison_view.pareto(comparison(run_ids), x, y)


def pareto_front(run_ids: list[str], x: str, y: str) -> Any:
    """Which candidates (a mask over ``comparison(run_ids)``) are on the Pareto frontier of x and y."""
    return _pareto(home(), _key(run_ids), x, y)


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=16)
def _goals(h: str, ids: str) -> tuple[dict[str, Any], Any, Any]:
    run_ids = ids.split(_SEP)
    return comparison_view.goals(comparison(run_ids), registry().run_specs(run_ids))


def goal_context(run_ids: list[str]) -> tuple[dict[str, Any], Any, Any]:
    """({run_id: {metric: goal with its bound}}, met, decided): masks over the candidates, whether each meets every
    goal of its run where that can be decided."""
    return _goals(home(), _key(run_ids))


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=16)
def _compare_table(h: str, ids: str, x: str | None, y: str | None) -> Any:
    run_ids = ids.split(_SEP)
    cmp = comparison(run_ids)
    front = pareto_front(run_ids, x, y) if x and y else np.zeros(len(cmp), dtype=bool)
    _, met, decided = goal_context(run_ids)
    return comparison_view.table(cmp, front, met, decided)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=16)
def _unmeasured(h: str, ids: str) -> list[dict[str, Any]]:
    run_ids = ids.split(_SEP)
    cmp = comparison(run_ids)
    mids = [m for m, ok in zip(cmp.model_ids or [], cmp.measured(), strict=False) if m and not ok]
    return cand_views.not_measured(cmp, registry().run_specs(run_ids), registry().measured_twins(mids))


def compare_unmeasured(run_ids: list[str]) -> list[dict[str, Any]]:
    """The candidates of the runs that have no number, each with why ("not measured (same as #3 … in run …)")."""
    return _unmeasured(home(), _key(run_ids))


def metric_format(name: str) -> str:
    """The printf format of a metric's table column, with its unit (``%.1f tok/s``)."""
    return fmt.metric_format(name)


def compare_table(run_ids: list[str], x: str | None, y: str | None) -> Any:
    """Compare's table (one row per candidate, in ``comparison(run_ids)``'s order), Pareto of x and y. Read-only."""
    return _compare_table(home(), _key(run_ids), x, y)


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=16)
def _compare_figure(h: str, ids: str, x: str, y: str, max_points: int) -> tuple[Any, int, bool]:
    run_ids = ids.split(_SEP)
    cmp = comparison(run_ids)
    front = pareto_front(run_ids, x, y)
    bounds, met, _ = goal_context(run_ids)
    pts, sampled = comparison_view.chart_points(cmp, x, y, front, max_points)
    size_mb = compare_table(run_ids, x, y)["size_mb"].to_numpy()
    params = registry().pass_params(cmp.ids[pts].tolist())  # hover text: only the points drawn read them
    return charts.pareto_figure(cmp, size_mb, x, y, front, pts, bounds, met, params), len(pts), sampled


def compare_figure(run_ids: list[str], x: str, y: str, max_points: int) -> tuple[Any, int, bool]:
    """(the quality-vs-speed figure, points drawn, whether they are a sample): every Pareto point, then a fixed
    sample up to ``max_points``. Read-only (Streamlit copies it to draw it)."""
    return _compare_figure(home(), _key(run_ids), x, y, max_points)


def compare_candidates(ids: list[int]) -> dict[int, dict[str, Any]]:
    """Whole candidate rows by id (pass parameters, failed metrics, paths) with ``run_name``: the ones opened."""
    names = {r["id"]: r["name"] for r in registry().list_runs(limit=100000)} if ids else {}
    out = registry().candidates_by_id([int(i) for i in ids])
    for c in out.values():
        c["run_name"] = names.get(c["run_id"], c["run_id"])
    return out


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def _evaluations(h: str, ids: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    return registry().candidate_evaluations(list(ids))


def candidate_evaluations(ids: list[int]) -> dict[int, dict[str, Any]]:
    """{candidate id: {fingerprint_id, fingerprint, samples (every evaluated example, scored), seconds}}."""
    return _evaluations(home(), tuple(sorted(int(i) for i in ids)))


@st.cache_data(ttl=TTL, show_spinner=False)
def _lineage(h: str, run_ids: tuple[str, ...]) -> tuple[str, list[dict[str, Any]]]:
    reg = registry()
    cands = reg.candidates_of_runs(list(run_ids))
    names = {r["id"]: label_views.run_label(r["name"], r["id"]) for r in measured_runs()}
    names = {c["run_id"]: names.get(c["run_id"], c["run_id"]) for c in cands}
    events = {r: reg.events(r, kinds=["pass_finished", "pass_cached"]) for r in run_ids}
    reused = lineage_view.reuses(cands, events, names)
    return lineage_view.dot(cands, reused, names), reused


def lineage(run_ids: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """(Graphviz DOT of the candidates' descent across the runs, one row per cache reuse with the seconds saved)."""
    return _lineage(home(), tuple(run_ids))


def report_html(run_ids: list[str]) -> str:
    """The self-contained HTML report of the runs (built when the user clicks download)."""
    return report_view.build(registry(), run_ids)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _leaderboard(h: str) -> list[dict[str, Any]]:
    board = compare.leaderboard(cand_views.vote_rows(registry().ab_votes()))
    ids = [int(h[1:]) for h in (str(r["contestant"]).partition(" · ")[0] for r in board) if h[1:].isdigit()]
    return cand_views.name_contestants(board, compare_candidates(ids))


def leaderboard() -> list[dict[str, Any]]:
    """Blind A/B votes per candidate and adapter: Elo, votes, win rate (best first)."""
    return _leaderboard(home())


def candidate_zip(cand: dict[str, Any]) -> bytes:
    return cand_views.candidate_zip(cand)


candidate_files = cand_views.candidate_files
per_example = compare.per_example
disagreements = compare.disagreements
EXAMPLE_SCORES = compare.EXAMPLE_SCORES


# -- chat ---------------------------------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def _chat_candidates(h: str) -> list[dict[str, Any]]:
    reg = registry()
    names = {r["id"]: r["name"] for r in reg.list_runs(limit=10000)}
    return cand_views.chat_ready(reg.candidates(), chat_adapter_name, names)


def chat_candidates() -> list[dict[str, Any]]:
    """Candidates chat can load: ONNX outputs (onnxruntime-genai folders) and LoRA candidates (HF + PEFT), with
    ``kind``, ``label`` and the adapters expected (``"none"`` = the base model)."""
    return _chat_candidates(home())


def candidate_label(cand: dict[str, Any]) -> str:
    """How every page names a candidate: its build in words, its run's name and short id, its number."""
    return label_views.label(cand)


def chat_best(cands: list[dict[str, Any]], exclude: tuple[int, ...] = ()) -> tuple[int, str]:
    """(index in ``cands`` of the candidate Chat opens on, why in words): Olive's best, else the Pareto point, with the
    best quality (engine.views.labels.best); ``exclude``: candidate ids taken by the other side of A/B."""
    pool = [c for c in cands if c["id"] not in exclude] or cands
    i, why = label_views.best(pool, registry().run_specs(sorted({c["run_id"] for c in pool})))
    return (cands.index(pool[i]) if i is not None else 0), why


def chat_adapter_name(path: str) -> str:
    from engine.chat.adapters import adapter_name

    return adapter_name(path)


def _row(cand: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cand.items() if k not in ("kind", "label", "adapters", "run_name", "adapter_sources")}


def chat_device(cand: dict[str, Any], prefer_gpu: bool) -> tuple[str, str]:
    """("cpu" | "cuda:N", why): the CPU unless a GPU is preferred and has room for the model (also during a run)."""
    from engine.chat import cache as chat

    return chat.choose_device(chat.estimate_bytes(_row(cand)), "gpu" if prefer_gpu else "cpu")


def chat_model(cand: dict[str, Any], device: str = "cpu") -> Any:
    """The loaded chat model for a candidate, from the process's bounded model cache (loads on first use; raises
    GroveError, e.g. AdapterMismatch)."""
    from engine.chat import cache as chat

    return chat.default_cache().get(_row(cand), device=device)


def chat_adapter(model: Any, cand: dict[str, Any], adapter: str) -> None:
    """Make sure ``adapter`` is loaded on ``model``: adapters of other runs (``cand['adapter_sources']``) are
    attached on first use after a check against the base graph (raises AdapterMismatch, a GroveError, if not)."""
    from engine.chat.models import ensure_adapter

    src = (cand.get("adapter_sources") or {}).get(adapter)
    if src:
        ensure_adapter(model, adapter, src["path"])


def chat_loaded() -> list[dict[str, Any]]:
    from engine.chat import cache as chat

    return chat.default_cache().entries()


def literal_chunks(chunks: Any) -> Any:
    from engine.chat import text as chat

    return chat.literal_chunks(chunks)


def markdown_literal(text: str) -> str:
    from engine.chat import text as chat

    return chat.markdown_literal(text)


def save_vote(winner: str, **kw: Any) -> int:
    """Store one blind A/B vote (winner "a", "b" or "tie"; a/b: {id, run_id, path, adapter})."""
    from engine.chat import feedback as chat

    me = _require("vote")
    r = chat.save_vote(winner, registry=registry(), user=me["user"], **kw)
    clear()
    return r


def save_feedback(rating: str, **kw: Any) -> int:
    from engine.chat import feedback as chat

    me = _require("chat")
    kw["candidate"] = {k: v for k, v in (kw.get("candidate") or {}).items() if k in ("id", "run_id", "path")}
    return chat.save_feedback(rating, registry=registry(), user=me["user"], **kw)
