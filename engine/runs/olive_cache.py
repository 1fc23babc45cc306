"""Olive's cache made safe for concurrent runs, and LoRA training that resumes from its last checkpoint.

How Olive 0.13 writes a cache entry (``olive/engine/engine.py::Engine._run_pass``, ``olive/cache.py``): the entry of a
pass is ``<cache>/<workflow id>/runs/<output model id>/``, the id a hash of (pass type, pass config, input model id,
accelerator). Olive checks for ``run.json`` (``load_run_from_model_id``); on a miss it runs the pass writing straight
into ``models/``, then writes ``model.json``, then ``run.json`` (plain ``open("w")``, no lock, no rename). So:
- two runs that reach the same entry at once both run the pass into the same ``models/`` folder;
- a run killed mid-pass leaves a partial ``models/`` (and maybe ``model.json``) that the next run writes over
  without clearing (stale files survive), and a kill inside ``json.dump`` leaves a truncated ``model.json``.

What this module installs in a runner (``install``):
- **one lock per cache entry** (``filelock.FileLock`` on ``<cache>/<workflow id>/locks/<model id>.lock``, from the
  pinned ``filelock`` package; it is an ``fcntl`` lock, so the kernel releases it when its holder dies, even by
  SIGKILL), taken when Olive looks the entry up and held until the pass has run and its ``run.json`` is written.
  The second of two runs that need the same pass waits, then finds the entry complete and loads it from the cache;
- **a miss clears the entry first**: under the lock, an entry without ``run.json`` is half-written by a run that
  died, so its ``models/`` and ``model.json`` are removed before the pass runs again (nothing half-written is reused);
- **write-then-rename** of ``model.json``, ``run.json``, evaluations and ``olive_config.json`` (a temp file in the
  same folder, ``fsync``, ``os.replace``): a reader sees the old file or the new one, never half of one;
- **checkpoints** for every ``transformers.Trainer`` that Olive builds inside a locked pass: saved every N steps
  to ``runs/<run id>/checkpoints/<model id>/`` (outside the Olive config, so the cache key is unchanged), and
  when a re-queued run trains the same entry again it resumes from the last checkpoint (a ``resumed`` event
  records the step). The worker removes the checkpoints when the run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.runs import devices
from engine.runs.progress import EventSink

_local = threading.local()  # the entry (model id) and lock the current thread's pass holds
_overhead = {"s": 0.0}  # seconds this process spent in the lock machinery and atomic writes (not waiting)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    t0 = time.perf_counter()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=4)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _overhead["s"] += time.perf_counter() - t0
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def default_checkpoint_steps(max_steps: int) -> int:
    """Save every fifth of the run, at most every 200 steps: a run killed at any point loses < 20 % of its steps."""
    if max_steps <= 0:
        return 200
    return max(1, min(200, max_steps // 5))


def current_entry() -> str | None:
    return getattr(_local, "model_id", None)


def install(sink: EventSink, checkpoint_root: Path, checkpoint_steps: int | None = None,
            evaluation_key: str | None = None) -> None:
    """Patch Olive's cache and transformers' Trainer in this process (idempotent). ``evaluation_key``
    (``olive.config.evaluation_cache_key``): Olive's cached evaluations are kept per evaluator settings, not per
    model alone."""
    from filelock import FileLock
    from olive.cache import OliveCache
    from olive.engine.engine import Engine

    if getattr(Engine._run_pass, "_grove_lock", False):
        return

    original_run_pass = Engine._run_pass
    original_load_run = OliveCache.load_run_from_model_id

    def _run_pass(self, *a, **kw):  # noqa: ANN001, ANN202
        prev = (getattr(_local, "model_id", None), getattr(_local, "lock", None))
        _local.model_id, _local.lock = None, None
        before = _overhead["s"]
        try:
            return original_run_pass(self, *a, **kw)
        finally:
            lock, model_id = _local.lock, _local.model_id
            _local.model_id, _local.lock = prev
            if lock is not None:
                t0 = time.perf_counter()
                lock.release()
                _overhead["s"] += time.perf_counter() - t0
            # what the lock and the atomic writes cost this pass (docs/benchmarks.md: cache-lock overhead)
            sink.emit("cache_lock", model_id=model_id, overhead_s=round(_overhead["s"] - before, 6))

    def load_run_from_model_id(self, model_id: str):  # noqa: ANN001, ANN202
        if getattr(_local, "lock", None) is not None or self.enable_shared_cache:
            return original_load_run(self, model_id)
        locks = self.dirs.cache_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(locks / f"{model_id}.lock"))
        t0 = time.perf_counter()
        try:
            lock.acquire(timeout=0)
            _overhead["s"] += time.perf_counter() - t0
        except Exception:  # filelock.Timeout: another run computes this pass now
            stage = sink.stage
            sink.stage = "waiting for another run's pass"
            sink.emit("log", level="INFO", message=f"cache entry {model_id} is being computed by another run: waiting for it")
            # not computing meanwhile: the other run gets the CPU's cores, and a measurement may have the device (the
            # run's activity starts again after, waiting while a measurement holds the device)
            with devices.run_paused():
                lock.acquire(poll_interval=0.2)
            sink.stage = stage
        _local.model_id, _local.lock = model_id, lock
        found = original_load_run(self, model_id)
        if not found:
            t0 = time.perf_counter()
            _discard_partial(self.dirs.runs / model_id, sink, model_id)
            _overhead["s"] += time.perf_counter() - t0
        return found

    def _atomic(attr: str, path_of: Callable[[Any, Any], Path]) -> None:
        original = getattr(OliveCache, attr)

        def method(self, key, obj):  # noqa: ANN001, ANN202
            if self.enable_shared_cache:
                return original(self, key, obj)
            try:
                atomic_write_json(path_of(self, key), obj)
            except OSError as e:
                if _disk_full(e):
                    raise  # a full disk ends the run (the runner reports 'disk full'), not a silent cache miss
                import logging

                logging.getLogger("olive").exception("Failed to write the cache")
            return None

        setattr(OliveCache, attr, method)

    def cache_run(self, pass_name, pass_config, input_model_id, output_model_id, accelerator_spec):  # noqa: ANN001, ANN202
        if self.enable_shared_cache:
            return original_cache_run(self, pass_name, pass_config, input_model_id, output_model_id, accelerator_spec)
        run_json = self.get_run_json(pass_name, pass_config, input_model_id, accelerator_spec)
        run_json["output_model_id"] = output_model_id
        atomic_write_json(self.get_run_json_path(output_model_id), run_json)
        return None

    def cache_olive_config(self, olive_config):  # noqa: ANN001, ANN202
        try:
            atomic_write_json(self.dirs.cache_dir / "olive_config.json", olive_config)
        except OSError as e:
            if _disk_full(e):
                raise

    original_cache_run = OliveCache.cache_run
    if evaluation_key:
        def get_evaluation_json_path(self, model_id):  # noqa: ANN001, ANN202
            return self.dirs.evaluations / f"{model_id}-{evaluation_key}.json"

        OliveCache.get_evaluation_json_path = get_evaluation_json_path
    _atomic("cache_model", lambda self, key: self.get_model_json_path(key))
    _atomic("cache_evaluation", lambda self, key: self.get_evaluation_json_path(key))
    OliveCache.cache_run = cache_run
    OliveCache.cache_olive_config = cache_olive_config
    OliveCache.load_run_from_model_id = load_run_from_model_id
    _run_pass._grove_lock = True  # type: ignore[attr-defined]
    Engine._run_pass = _run_pass
    _install_checkpoints(sink, checkpoint_root, checkpoint_steps)


def _disk_full(e: OSError) -> bool:
    import errno

    return e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _discard_partial(entry: Path, sink: EventSink, model_id: str) -> None:
    """Under the entry's lock, an entry without run.json was left by a run that died mid-pass: start it clean."""
    models, model_json = entry / "models", entry / "model.json"
    leftovers = (models.is_dir() and any(models.iterdir())) or model_json.exists()
    if not leftovers:
        return
    shutil.rmtree(models, ignore_errors=True)
    model_json.unlink(missing_ok=True)
    sink.emit("log", level="WARNING", message=f"cache entry {model_id} was half-written by a run that died: discarded, the pass runs again")


def _install_checkpoints(sink: EventSink, root: Path, every: int | None) -> None:
    """Checkpoints every N steps for the Trainer of a locked pass, and resume from the last one on a re-run."""
    import transformers

    original_init, original_train = transformers.Trainer.__init__, transformers.Trainer.train

    def __init__(self, *a, **kw):  # noqa: ANN001, N807
        original_init(self, *a, **kw)
        entry = current_entry()
        if entry is None:
            return
        out = root / entry
        out.mkdir(parents=True, exist_ok=True)
        args = self.args
        n = every or default_checkpoint_steps(args.max_steps if args.max_steps and args.max_steps > 0 else 0)
        args.output_dir = str(out)
        args.save_strategy = transformers.trainer_utils.SaveStrategy.STEPS
        args.save_steps = n
        args.save_total_limit = 1
        args.save_only_model = False  # optimizer, scheduler and RNG state too: the resumed run continues exactly
        self._grove_checkpoints = out

    def train(self, resume_from_checkpoint=None, *a, **kw):  # noqa: ANN001, ANN202
        out = getattr(self, "_grove_checkpoints", None)
        if out is not None and not resume_from_checkpoint:
            found = _last_complete_checkpoint(out, sink)
            if found:
                last, step = found
                resume_from_checkpoint = last
                sink.emit("resumed", step=step, checkpoint=last)
                sink.emit("log", level="WARNING", message=f"training resumed from step {step} (checkpoint {Path(last).name})")
        return original_train(self, resume_from_checkpoint, *a, **kw)

    transformers.Trainer.__init__ = __init__
    transformers.Trainer.train = train


def _last_complete_checkpoint(out: Path, sink: EventSink) -> tuple[str, int] | None:
    """The newest checkpoint the Trainer finished writing and its ``global_step``, or None. transformers writes a
    checkpoint's folder in place (weights, optimizer, RNG state, then ``trainer_state.json`` last) and only then
    deletes the older one, so a kill
    during a save leaves a newest folder without a readable ``trainer_state.json`` beside a complete older one (its
    own ``get_last_checkpoint`` would pick the newest, and resuming from it fails: "Can't find a valid checkpoint").
    Incomplete folders are removed, so the Trainer's rotation never keeps one in place of a complete checkpoint."""
    if not out.is_dir():
        return None
    found = []
    for d in out.glob("checkpoint-*"):
        tail = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and tail.isdigit():
            found.append((int(tail), d))
    for _, d in sorted(found, reverse=True):
        try:
            return str(d), int(json.loads((d / "trainer_state.json").read_text())["global_step"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        shutil.rmtree(d, ignore_errors=True)
        sink.emit("log", level="WARNING", message=f"checkpoint {d.name} was half-written by a run that died: discarded")
    return None

