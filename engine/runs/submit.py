"""What the CLI and the UI do with runs: submit (with pre-flight checks), cancel, retry, export, show.

``submit`` refuses bad input before anything is queued: an invalid spec (field path), a missing model folder,
an unreadable or empty dataset, a malformed JSONL line, a template naming a missing column, more GPUs than the
machine has. Only a spec that passes all of these becomes a queued run, with its exported Olive config.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from engine import access, machine, paths
from engine.errors import ResourceError, RunStateError
from engine.olive import config as olive_config
from engine.runs.registry import ACTIVE, Registry
from engine.spec.schema import RunSpec

FINGERPRINT_PACKAGES = (
    "olive-ai", "onnxruntime-genai-cuda", "onnxruntime-genai", "onnxruntime-gpu", "onnxruntime",
    "transformers", "peft", "torch", "datasets", "pydantic", "grove",
)  # fmt: skip


def env_fingerprint() -> dict[str, str]:
    """Versions of everything that changes what a pass produces (Olive's cache key ignores them)."""
    return machine.package_versions(FINGERPRINT_PACKAGES)


def check_resources(spec: RunSpec, gpus_available: int | None = None, where: str = "this machine has") -> None:
    if gpus_available is None and spec.resources.gpus and os.environ.get("GROVE_EXECUTOR", "").strip().lower() == "ray":
        from engine.runs.ray_cluster import max_gpus_per_node  # the cluster's largest node decides

        gpus_available, where = max_gpus_per_node(), "the largest node of the Ray cluster has"
    have = machine.gpus_short(spec.resources.gpus, gpus_available)
    if have is not None:
        raise ResourceError(
            f"resources.gpus asks for {spec.resources.gpus} GPU(s); {where} {have}",
            hint="lower resources.gpus, or run on a machine with more GPUs",
        )


def check_target(spec: RunSpec) -> None:
    """A run for a target with an environment of its own (engine.targets) is queued only when that environment is
    ready; a known target this machine cannot run (QNN, VitisAI, NvTensorRTRTX) is refused with what it lacks."""
    from engine.targets import env as target_env

    try:
        target_env.python_for(spec.target.environment)
    except target_env.TargetError as e:
        raise ResourceError(f"target.execution_provider: {e}") from None


def ui_bases() -> list[Path]:
    """Where the UI reads a relative path from: the repository, then GROVE_HOME (the first where it exists)."""
    return [paths.REPO_ROOT, paths.home()]


def _absolute(value: str, bases: list[Path]) -> str:
    p = Path(value).expanduser()
    if p.is_absolute():
        return os.path.normpath(p)
    hit = next((b for b in bases if (b / p).exists()), bases[0])
    return os.path.normpath(Path(hit).absolute() / p)  # '..' folded, symlinks kept (the roots check resolves them)


def resolve_paths(spec: RunSpec, base: Any = None) -> RunSpec:
    """``spec`` with every relative path made absolute, once, at submit: the model folder and the dataset files.

    ``base``: the folder (or folders, the first where the path exists wins) a relative path is read from: the spec
    file's folder for ``grove submit`` and the import, ``ui_bases()`` for the UI, the current directory for the
    Python API when none is given. A model name that is no folder there and reads as a Hugging Face id stays one."""
    from engine.olive.validate import looks_like_path

    bases = [Path(b) for b in (base if isinstance(base, (list, tuple)) else [base or Path.cwd()])]
    update: dict[str, Any] = {}
    name = spec.model.name.strip()
    if not Path(name).expanduser().is_absolute() and (
            any((b / name).exists() for b in bases) or looks_like_path(name) or name.startswith("~")):
        update["model"] = spec.model.model_copy(update={"name": _absolute(name, bases)})
    ds = spec.dataset
    if ds is not None:
        files = {k: _absolute(v, bases) for k, v in (("path", ds.path), ("eval_path", ds.eval_path)) if v}
        if any(files[k] != getattr(ds, k) for k in files):
            update["dataset"] = ds.model_copy(update=files)
    bench = [b.model_copy(update={"include_path": _absolute(b.include_path, bases)}) if b.include_path else b
             for b in spec.evaluation.benchmarks]  # a local benchmark task's folder, like the dataset files
    if bench != list(spec.evaluation.benchmarks):
        update["evaluation"] = spec.evaluation.model_copy(update={"benchmarks": bench})
    return spec.model_copy(update=update) if update else spec


def spec_hash(spec: RunSpec, data_key: str) -> str:
    h = hashlib.sha256()
    h.update(spec.model_dump_json(exclude={"name"}).encode())
    h.update(data_key.encode())
    h.update(json.dumps(env_fingerprint(), sort_keys=True).encode())
    if spec.model.is_local and (spec.model.path / "config.json").exists():
        # a local model folder that changed is a different input
        for f in sorted(spec.model.path.glob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def olive_config_for(spec: RunSpec, output_dir: Path) -> tuple[dict[str, Any], str, str]:
    """The Olive workflow config a run of ``spec`` executes (local data is prepared, as at launch).

    Returns ``(config, data key, prepared data folder)``. Used by ``submit`` and by the UI's "download config".
    """
    from engine.data import prepare as data

    train_path, eval_path, data_key, data_dir = None, None, "", ""
    if spec.dataset is not None:
        if spec.dataset.path:  # local data is checked (and so prepared) before anything is queued
            data.prepare(spec.dataset)
        prep = data.prepared(spec.dataset)
        train_path, eval_path, data_key, data_dir = prep.train_path, prep.eval_path, prep.dir.name, str(prep.dir)
    cfg = olive_config.build(spec, output_dir=output_dir, train_path=train_path, eval_path=eval_path,
                             data_key=data_key, searchable=_searchable(spec))
    return cfg, data_key, data_dir



def olive_config_text(spec: RunSpec, *, base: Any = None) -> str:
    """The Olive workflow config this spec would run with (local data is prepared, as at launch; relative paths are
    resolved as ``submit`` resolves them)."""
    cfg, _, _ = olive_config_for(resolve_paths(spec, base), paths.home() / "exports" / "output")
    return olive_config.dumps(cfg)


def submit(spec: RunSpec, *, reg: Registry | None = None, parent_run: str | None = None,
           gpus_available: int | None = None, base: Any = None, user: str | None = None) -> dict[str, Any]:
    """Check everything that can be checked before launch, then queue the run, recorded as ``user``'s (the signed-in
    person in the UI; the local OS user for the command line and the Python API: engine.access.local_user).

    Relative paths are resolved first, against ``base`` (``resolve_paths``), and the run stores them absolute.
    The checks are the ones every entrance runs (engine.olive.validate: pass types and parameters against Olive's
    catalog, model and dataset paths inside the allowed roots, code that would run); nothing is written before
    they pass, and a dataset is prepared (read, split, written) only after them."""
    from engine.olive import validate
    from engine.runs.registry import new_run_id

    spec = resolve_paths(spec, base)
    validate.refuse(spec)
    check_resources(spec, gpus_available)
    check_target(spec)
    reg = reg or Registry()
    run_id = new_run_id()
    cfg, data_key, data_dir = olive_config_for(spec, paths.run_dir(run_id) / "output")
    return reg.create_run(
        run_id=run_id,
        spec_json=spec.model_dump_json(),
        spec_hash=spec_hash(spec, data_key),
        name=spec.name,
        olive_config=olive_config.dumps(cfg),
        gpus_wanted=spec.resources.gpus,
        data_dir=data_dir,
        parent_run=parent_run,
        user=user or access.local_user(),
    )


def _searchable(spec: RunSpec) -> dict[str, list[str]] | None:
    if spec.search is None:
        return None
    from engine.olive import catalog

    return catalog.searchable_params([p.type for p in spec.passes])


def cancel(run_id: str, reg: Registry | None = None) -> dict[str, Any]:
    reg = reg or Registry()
    return reg.request_cancel(reg.find_run(run_id)["id"])


def retry(run_id: str, reg: Registry | None = None, user: str | None = None) -> dict[str, Any]:
    """Queue a finished run again (a new run, recorded as ``user``'s, whose parent is the old one)."""
    from engine.spec.schema import parse_spec

    reg = reg or Registry()
    run = reg.find_run(run_id)
    if run["status"] in ACTIVE:
        raise RunStateError(f"run {run['id']} is {run['status']}; only finished runs can be retried")
    return submit(parse_spec(json.loads(run["spec"])), reg=reg, parent_run=run["id"], user=user)


def export_config(run_id: str, reg: Registry | None = None) -> str:
    reg = reg or Registry()
    return reg.find_run(run_id)["olive_config"]
