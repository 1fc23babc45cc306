"""The Ray executor: runs execute on the nodes of a Ray cluster, behind the same ``Executor`` seam as the local one.

Selected with ``GROVE_EXECUTOR=ray`` (``engine.runs.executors.from_env``); ``GROVE_RAY_ADDRESS`` names the cluster
(``auto``, ``host:port`` or ``ray://host:10001``); ``grove up --ray`` starts a local head when none is given.

- One run = one detached Ray actor, ``RunHost`` (named ``grove-run-<run id>`` in namespace ``grove``), asking for
  ``num_cpus=GROVE_RAY_CPUS_PER_RUN`` (default 1), ``num_gpus=resources.gpus`` and the custom resources of
  ``GROVE_RAY_RESOURCES`` (JSON, e.g. ``{"gpu_box": 1}``). Ray decides where and when it starts: its resource
  accounting replaces Grove's slots (``RaySlots`` claims one run ahead of what Ray has placed). The actor starts the
  runner as a fresh interpreter (``python -m engine.runs.runner ID``) in its own process group on its node,
  with ``CUDA_VISIBLE_DEVICES`` from Ray's assignment; Ray's reused worker processes never run Olive themselves.
- Single writer: runners never open ``grove.db``. Their registry calls go through ``engine.runs.relay`` to their
  ``RunHost`` (a Unix socket on the node), and the worker on the head collects them at every poll
  (``RunHost.exchange``), applies them to the registry and sends the answers back. Delivery is at least once: a
  batch is dropped on the node only once the head acknowledged it, so a worker restart loses nothing.
- Outputs: ``GROVE_HOME`` must be the same folder at the same path on every node (a shared filesystem); the
  run's folder, log, outputs and the Olive cache live there. A node that does not see the head's ``GROVE_HOME``
  (checked with a token file) refuses the run with that reason. SQLite is never opened there.
- Cancel: SIGTERM, then SIGKILL, to the runner's process group, sent by its ``RunHost``; the actor is killed when
  the run ends. A node that stops answering for ``GROVE_RAY_LOST_HEARTBEATS`` (3) heartbeats of
  ``GROVE_HEARTBEAT_S`` (1 s), or whose actor Ray reports dead, fails its run with ``node_lost`` and the reason.
  A runner whose ``RunHost`` dies ends its own process group (engine/runs/relay.py).
- Worker restart: the actors are detached, so runs go on; the next worker adopts each ``running`` run whose actor
  is alive (``adopt``) and receives what the runner said meanwhile; runs without an actor are swept as usual. The
  actor of a run that ended while no worker watched (a worker stopped between the end and the runner's exit) is
  released by the next worker's sweep (``release_orphans``), or it would hold its node's CPUs and GPUs for good.
- Ray Client (``ray://``): a connection the head fails while starting its per-client server is tried again
  (``CLIENT_CONNECT_TRIES``).
- Offline: ``RAY_USAGE_STATS_ENABLED=0``; the local head starts without the dashboard.

This module is the head's side (``RayExecutor``, ``RaySlots``); ``engine.runs.ray_host`` the node's (``RunHost``);
``engine.runs.ray_cluster`` connecting, describing the cluster, and local nodes for ``grove up --ray`` and the tests.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import RunStateError
from engine.runs import relay
from engine.runs.logs import log_tail
from engine.runs.ray_cluster import NAMESPACE, address, cluster_nodes, connect, home_token
from engine.runs.ray_host import RunHost

log = logging.getLogger("grove.ray")
ACTOR_PREFIX = "grove-run-"
HEARTBEAT_S = float(os.environ.get("GROVE_HEARTBEAT_S", "1.0"))
LOST_HEARTBEATS = int(os.environ.get("GROVE_RAY_LOST_HEARTBEATS", "3"))
ORPHAN_AFTER_S = 10.0  # a run's host actor still alive this long after the run ended is an orphan
ORPHAN_EVERY_S = 5.0


@dataclass
class RayHandle:
    run_id: str
    actor: Any
    pid: int | None = None
    started: Any = None  # ref of RunHost.start (None once placed)
    info: dict[str, Any] | None = None
    pending: Any = None  # ref of the exchange in flight
    acked: int = 0
    answers: list[tuple[int, Any]] = field(default_factory=list)
    last_contact: float = field(default_factory=time.monotonic)
    code: int | None = None


def apply(reg: Any, method: str, args: tuple, kwargs: dict[str, Any]) -> tuple[str, Any]:
    """One relayed call on the head. A repeated transition (delivery is at least once) answers as the first did."""
    status, value = relay.apply(reg, method, args, kwargs)
    if status == "err" and method == "transition" and value[0] == RunStateError.__name__:
        run = reg.get_run(args[0])
        if run["status"] == (args[1] if len(args) > 1 else kwargs.get("to")):
            return "ok", run
    return status, value


class RaySlots:
    """Grove's slot interface over Ray's accounting: claim a run only once every launched run is placed, so at
    most one claimed run waits for Ray's resources; the heartbeat describes the cluster's nodes."""

    def __init__(self, ex: RayExecutor) -> None:
        self.ex = ex
        self._desc: dict[str, Any] = {}
        self._desc_at = 0.0

    def fit(self, gpus_wanted: int) -> list[int] | None:
        if any(h.info is None and h.code is None for h in self.ex.handles.values()):
            return None
        return []

    def could_fit(self, gpus_wanted: int) -> bool:
        """Whether some node of the cluster has the GPUs a run wants (once they are free); a run that no node can
        hold is left queued for others instead of blocking this worker's claims. Unknown cluster: let Ray decide."""
        if gpus_wanted == 0:
            return True
        nodes = self.describe().get("nodes") or []
        return not nodes or any(n["gpus"] >= gpus_wanted for n in nodes)

    def take(self, gpus: list[int]) -> None:
        pass

    def give(self, gpus: list[int]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        if time.monotonic() - self._desc_at > 5 or not self._desc:
            try:
                nodes = cluster_nodes()
            except Exception as e:  # noqa: BLE001 - a heartbeat must not die with the cluster
                nodes, self._desc = [], {"error": str(e)}
            active = [{"run_id": h.run_id, **(h.info or {"waiting": True})} for h in self.ex.handles.values() if h.code is None]
            self._desc = {
                "executor": "ray", "address": self.ex.address,
                # the local view's keys, so the existing slot summary still adds up
                "cpu": int(sum(n["cpus"] for n in nodes) // self.ex.cpus_per_run),
                "cpu_used": sum(1 for a in active if not a.get("gpus")),
                "per_gpu": 1, "gpus": [], "gpu_used": {},
                "nodes": nodes, "runs": active,
            }
            self._desc_at = time.monotonic()
        return self._desc


class RayExecutor:
    """``Executor`` on a Ray cluster. ``resources``: custom Ray resources every run asks for (``GROVE_RAY_RESOURCES``)."""

    def __init__(self, reg: Any = None, addr: str | None = None, resources: dict[str, float] | None = None,
                 cpus_per_run: float | None = None, module: str | None = None) -> None:
        from engine.runs.registry import Registry

        self.address = addr or address()
        self.ray = connect(self.address)
        self.reg = reg or Registry()
        self.resources = resources if resources is not None else json.loads(os.environ.get("GROVE_RAY_RESOURCES") or "{}")
        self.cpus_per_run = cpus_per_run or float(os.environ.get("GROVE_RAY_CPUS_PER_RUN", "1"))
        self.module = module or os.environ.get("GROVE_RUNNER_MODULE", "engine.runs.runner")
        self.lost_after = LOST_HEARTBEATS * HEARTBEAT_S
        self.handles: dict[str, RayHandle] = {}
        self.slots = RaySlots(self)
        self._token = home_token()
        self._host_cls = self.ray.remote(RunHost)
        self._orphans_at = -ORPHAN_EVERY_S

    # -- the seam ----------------------------------------------------------------------------------------
    def launch(self, run: dict[str, Any], gpus: list[int]) -> RayHandle:
        h = self.adopt(run)
        if h is not None:  # a host of this run is alive already (a restart, or a re-queue): attach, never run twice
            return h
        gpus_wanted = int(run.get("gpus_wanted") or 0)
        opts = {"name": ACTOR_PREFIX + run["id"], "namespace": NAMESPACE, "lifetime": "detached",
                "num_cpus": self.cpus_per_run, "num_gpus": gpus_wanted, "max_restarts": 0}
        if self.resources:
            opts["resources"] = dict(self.resources)
        actor = self._host_cls.options(**opts).remote(run["id"])
        h = RayHandle(run["id"], actor)
        h.started = actor.start.remote(_row(run), str(paths.home()), self._token, self.module)
        self.handles[run["id"]] = h
        self.reg.update_run(run["id"], stage="waiting for Ray resources")
        self.reg.add_event(run["id"], "log", {"level": "INFO", "message":
                           f"submitted to Ray ({self.address}): num_cpus={self.cpus_per_run:g}, num_gpus={gpus_wanted}"
                           + (f", resources={self.resources}" if self.resources else "")})
        return h

    def poll(self, h: RayHandle) -> int | None:
        if h.code is not None:
            return h.code
        ray = self.ray
        if h.info is None:
            if not ray.wait([h.started], timeout=0)[0]:
                return None  # Ray has not placed it yet (no node has the resources free)
            try:
                self._placed(h, ray.get(h.started))
            except ray.exceptions.RayActorError as e:
                return self._lost(h, f"its Ray actor died before the runner started: {_first_line(e)}")
            except Exception as e:  # noqa: BLE001 - the node refused it (GROVE_HOME not shared, ...)
                return self._end(h, "launch_failed", f"the node could not start the runner: {_first_line(e)}")
        if h.pending is not None:
            if not ray.wait([h.pending], timeout=0)[0]:
                quiet = time.monotonic() - h.last_contact
                if quiet > self.lost_after:
                    return self._lost(h, f"its node {h.info.get('address')} ({h.info.get('host')}) stopped answering for {quiet:.1f}s")
                return None
            try:
                msgs, code = ray.get(h.pending)
            except ray.exceptions.RayActorError as e:
                return self._lost(h, f"its node {h.info.get('address')} ({h.info.get('host')}) died: {_first_line(e)}")
            h.pending = None
            h.last_contact = time.monotonic()
            for seq, kind, method, args, kwargs in msgs:
                result = apply(self.reg, method, args, kwargs)
                if kind == "call":
                    h.answers.append((seq, result))
                elif result[0] == "err":
                    log.warning("run %s: relayed %s failed: %s", h.run_id, method, result[1])
                h.acked = max(h.acked, seq)
            if code is not None:
                return self._release(h, code)
        h.pending = h.actor.exchange.remote(h.acked, h.answers)
        h.answers = []
        return None

    def signal(self, h: RayHandle, sig: int) -> None:
        if h.code is not None:
            return
        if h.info is None:  # not started: nothing runs yet, remove the request from Ray's queue
            self.ray.kill(h.actor, no_restart=True)
            return
        h.actor.signal.remote(int(sig))

    # -- restart ---------------------------------------------------------------------------------------------
    def adopt(self, run: dict[str, Any]) -> RayHandle | None:
        """The handle of a run whose host actor is alive (after a worker restart), or None."""
        if run["id"] in self.handles and self.handles[run["id"]].code is None:
            return self.handles[run["id"]]
        ray = self.ray
        try:
            actor = ray.get_actor(ACTOR_PREFIX + run["id"], namespace=NAMESPACE)
        except ValueError:
            return None
        try:
            info = ray.get(actor.describe.remote(), timeout=max(5.0, self.lost_after))
        except Exception:  # noqa: BLE001 - dead or unreachable: not adoptable
            self._kill(actor)
            return None
        h = RayHandle(run["id"], actor)
        if info is None:
            h.started = actor.start.remote(_row(run), str(paths.home()), self._token, self.module)
        else:
            h.info, h.pid = info, info["pid"]
        self.handles[run["id"]] = h
        return h

    def release_orphans(self, older_than_s: float = ORPHAN_AFTER_S) -> list[str]:
        """Kill the host actors of runs that ended more than ``older_than_s`` ago: a worker that stopped in the
        seconds between a run's end and its runner's exit never released that actor, and a detached actor would
        hold its CPUs and GPUs for good. Returns the run ids released (called from the worker's sweep)."""
        from engine.runs.registry import ACTIVE

        if time.monotonic() - self._orphans_at < ORPHAN_EVERY_S:
            return []
        self._orphans_at = time.monotonic()
        try:
            named = self.ray.util.list_named_actors(all_namespaces=True)
        except Exception as e:  # noqa: BLE001 - a sweep must not fail the tick for this
            log.warning("could not list Ray's actors: %s", _first_line(e))
            return []
        ids = [a["name"][len(ACTOR_PREFIX):] for a in named
               if a.get("namespace") == NAMESPACE and a.get("name", "").startswith(ACTOR_PREFIX)]
        out = []
        for run_id in ids:
            if run_id in self.handles:
                continue
            try:
                run = self.reg.get_run(run_id)
            except Exception:  # noqa: BLE001 - a run this registry does not know (another Grove on the cluster)
                continue
            if run["status"] in ACTIVE or time.time() - (run.get("finished_at") or time.time()) < older_than_s:
                continue
            try:
                actor = self.ray.get_actor(ACTOR_PREFIX + run_id, namespace=NAMESPACE)
            except ValueError:
                continue
            self._kill(actor)
            log.warning("released the Ray actor of run %s (%s %.0fs ago; its worker had stopped before releasing it)",
                        run_id, run["status"], time.time() - run["finished_at"])
            out.append(run_id)
        return out

    # -- endings ---------------------------------------------------------------------------------------------
    def _placed(self, h: RayHandle, info: dict[str, Any]) -> None:
        h.info, h.pid, h.started, h.last_contact = info, info["pid"], None, time.monotonic()
        self.reg.update_run(h.run_id, pid=info["pid"], gpus=json.dumps([int(g) for g in info["gpus"]]))
        self.reg.add_event(h.run_id, "placed", {k: info[k] for k in ("node_id", "address", "host", "gpus", "pid")})
        log.info("run %s placed on %s (%s), pid %s, gpus %s", h.run_id, info["address"], info["node_id"][:8], info["pid"], info["gpus"] or "cpu")

    def _release(self, h: RayHandle, code: int) -> int:
        h.code = code
        self._kill(h.actor)
        self.handles.pop(h.run_id, None)
        return code

    def _end(self, h: RayHandle, etype: str, msg: str) -> int:
        run = self.reg.get_run(h.run_id)
        if run["status"] == "running":
            self.reg.add_event(h.run_id, "log_tail", {"text": log_tail(Path(run["log_path"]))})
            try:
                if run["cancel_requested"]:
                    self.reg.transition(h.run_id, "cancelled", expect=("running",), exit_code=-9)
                else:
                    self.reg.transition(h.run_id, "failed", expect=("running",), error_type=etype, error_message=msg, exit_code=-1)
            except RunStateError:
                pass
        return self._release(h, -1)

    def _lost(self, h: RayHandle, why: str) -> int:
        log.warning("run %s: %s", h.run_id, why)
        return self._end(h, "node_lost", f"the run's node was lost: {why}")

    def _kill(self, actor: Any) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _row(run: dict[str, Any]) -> dict[str, Any]:
    return {"id": run["id"], "run_dir": run.get("run_dir") or str(paths.run_dir(run["id"]))}




def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:500]
