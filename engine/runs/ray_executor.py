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
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine import paths
from engine.errors import GroveError, RunStateError
from engine.runs import relay
from engine.runs.logs import log_tail

log = logging.getLogger("grove.ray")
NAMESPACE = "grove"
ACTOR_PREFIX = "grove-run-"
HOME_TOKEN = ".grove-home-token"
HEARTBEAT_S = float(os.environ.get("GROVE_HEARTBEAT_S", "1.0"))
LOST_HEARTBEATS = int(os.environ.get("GROVE_RAY_LOST_HEARTBEATS", "3"))
CLIENT_CONNECT_TRIES = 3
ORPHAN_AFTER_S = 10.0  # a run's host actor still alive this long after the run ended is an orphan
ORPHAN_EVERY_S = 5.0
OFFLINE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}



# -- connecting ------------------------------------------------------------------------------------------
def address() -> str:
    return os.environ.get("GROVE_RAY_ADDRESS") or "auto"


def connect(addr: Optional[str] = None) -> Any:
    """Connect this process to the cluster once (``ray.init``), offline and quiet."""
    addr = addr or address()
    os.environ.update(OFFLINE_ENV)
    if addr.startswith(("127.", "localhost")):
        keep_loopback()
    import ray

    tries = CLIENT_CONNECT_TRIES if addr.startswith("ray://") else 1
    for attempt in range(1, tries + 1):
        if ray.is_initialized():
            break
        try:
            ray.init(address=addr, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as e:
            # Ray Client: the head starts a server process for each client; one that dies while starting (Ray's
            # proxier then reports its own race, "psutil.ZombieProcess", as the reason) fails only this connection.
            if attempt == tries:
                raise
            log.warning("Ray Client connection to %s failed (try %d of %d), trying again: %s", addr, attempt, tries,
                        (str(e).strip().splitlines() or [type(e).__name__])[-1][:300])
            time.sleep(2.0 * attempt)
    return ray


def keep_loopback() -> None:
    """Keep a cluster on 127.0.0.1 there. On Linux Ray rewrites a loopback address to the machine's own address
    (``services.resolve_ip_for_localhost``, for clusters spanning machines); a local cluster (``grove up --ray``,
    the tests) must only ever talk over the loopback interface."""
    from ray._private import services

    if getattr(services.resolve_ip_for_localhost, "_grove", False):
        return

    def resolve(host: str) -> str:
        return host

    resolve._grove = True  # type: ignore[attr-defined]
    services.resolve_ip_for_localhost = resolve


def ray_start_main() -> None:
    """``ray start`` with ``keep_loopback`` (``python -c 'from engine.runs.ray_executor import ray_start_main;
    ray_start_main()' start ...``)."""
    keep_loopback()
    from ray.scripts.scripts import main

    sys.exit(main())


def home_token(home: Optional[Path] = None) -> str:
    """The token that proves a node sees the head's ``GROVE_HOME`` (created once)."""
    p = (home or paths.home()) / HOME_TOKEN
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        tmp = p.with_suffix(f".{os.getpid()}")
        tmp.write_text(secrets.token_hex(16))
        os.replace(tmp, p)
    return p.read_text().strip()


# -- the cluster -----------------------------------------------------------------------------------------
def cluster_nodes() -> list[dict[str, Any]]:
    """Alive nodes: address, CPUs and GPUs (total and in use), custom resources. Needs ``connect()``."""
    import ray
    from ray._private import state as ray_state  # available per node: a DeveloperAPI, no dashboard needed

    avail = ray_state.available_resources_per_node()
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        total, free = n.get("Resources", {}), avail.get(n["NodeID"], {})
        custom = {k: v for k, v in total.items() if k not in ("CPU", "GPU", "memory", "object_store_memory")
                  and not k.startswith("node:") and not k.startswith("accelerator_type")}
        out.append({
            "node_id": n["NodeID"], "address": n.get("NodeManagerAddress"), "host": n.get("NodeManagerHostname"),
            "head": "node:__internal_head__" in total,
            "cpus": total.get("CPU", 0.0), "cpus_used": round(total.get("CPU", 0.0) - free.get("CPU", 0.0), 3),
            "gpus": total.get("GPU", 0.0), "gpus_used": round(total.get("GPU", 0.0) - free.get("GPU", 0.0), 3),
            "resources": custom,
        })
    return sorted(out, key=lambda n: (not n["head"], n["address"] or "", n["node_id"]))


def max_gpus_per_node(reg: Any = None) -> int:
    """The most GPUs one node of the cluster has: what a run may ask for. Read from a live Ray worker's heartbeat
    when there is one (no Ray connection in the UI), else from the cluster itself."""
    from engine.runs.cluster import cluster_status

    st = cluster_status(reg)
    if st is None:
        connect()
        st = {"nodes": cluster_nodes()}
    return int(max((n["gpus"] for n in st["nodes"]), default=0))


# -- one run on its node -----------------------------------------------------------------------------------
class RunHost:
    """Lives on the run's node for the run's lifetime: starts the runner, relays its registry calls, signals it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.proc: Optional[subprocess.Popen] = None
        self.info: Optional[dict[str, Any]] = None
        self._lock = threading.Lock()
        self._seq = 0
        self._out: list[tuple[int, str, str, tuple, dict]] = []  # (seq, kind, method, args, kwargs), not yet acked
        self._conns: dict[int, Any] = {}  # seq of a call -> connection waiting for its answer
        self._open = 0
        self._exited_at: Optional[float] = None
        self._sockdir: Optional[str] = None

    def start(self, run: dict[str, Any], home: str, token: str, module: str) -> dict[str, Any]:
        """Start the runner (once; a second call returns what the first started)."""
        if self.info is not None:
            return self.info
        from multiprocessing.connection import Listener

        import ray

        import engine

        os.environ["GROVE_HOME"] = home
        mine = Path(home) / HOME_TOKEN
        if not mine.is_file() or mine.read_text().strip() != token:
            raise GroveError(
                f"node {ray.util.get_node_ip_address()} does not see the head's GROVE_HOME at {home}: "
                "the Ray executor needs GROVE_HOME on a filesystem shared by every node, at the same path")
        rdir = Path(run["run_dir"])
        rdir.mkdir(parents=True, exist_ok=True)
        env = paths.olive_env(tmp=rdir / "tmp")
        # Ray sets OMP_NUM_THREADS=<num_cpus> in its workers; a runner uses the node's threads as a local run does, so
        # the two executors compare (on the loaded 2-core bench machine the demo took 57 s with 1 thread, 204 s without)
        env.pop("OMP_NUM_THREADS", None)
        gpus = [str(g) for g in ray.get_gpu_ids()]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        code_root = str(Path(engine.__file__).resolve().parent.parent)  # the runner runs the same Grove as its host
        env["PYTHONPATH"] = os.pathsep.join([code_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        self._sockdir = tempfile.mkdtemp(prefix="grove-relay-")  # node-local: Unix sockets do not cross machines
        addr, key = os.path.join(self._sockdir, "s"), secrets.token_bytes(16)
        listener = Listener(addr, family="AF_UNIX", authkey=key)
        threading.Thread(target=self._accept, args=(listener,), name="grove-relay-accept", daemon=True).start()
        env[relay.RELAY_ENV], env[relay.RELAY_KEY_ENV] = addr, key.hex()
        with open(rdir / "run.log", "ab", buffering=0) as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", module, run["id"]], cwd=rdir, env=env,
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True)
        ctx = ray.get_runtime_context()
        self.info = {"pid": self.proc.pid, "node_id": ctx.get_node_id(), "address": ray.util.get_node_ip_address(),
                     "host": os.uname().nodename, "gpus": gpus}
        return self.info

    def describe(self) -> Optional[dict[str, Any]]:
        return self.info

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                conn = listener.accept()
            except Exception:  # noqa: BLE001 - a bad handshake must not stop the relay
                continue
            with self._lock:
                self._open += 1
            threading.Thread(target=self._read, args=(conn,), name="grove-relay-read", daemon=True).start()

    def _read(self, conn: Any) -> None:
        try:
            while True:
                kind, method, args, kwargs = conn.recv()
                with self._lock:
                    self._seq += 1
                    self._out.append((self._seq, kind, method, args, kwargs))
                    if kind == "call":
                        self._conns[self._seq] = conn
        except (EOFError, OSError):
            pass
        finally:
            with self._lock:
                self._open -= 1

    def exchange(self, acked: int, answers: list[tuple[int, tuple[str, Any]]]) -> tuple[list[tuple], Optional[int]]:
        """Answer the calls the head has run, drop what it acknowledged, and hand over the rest; with the runner's
        exit status once it has exited and every message it sent is handed over."""
        with self._lock:
            self._out = [m for m in self._out if m[0] > acked]
            pending = [(seq, self._conns.pop(seq, None), ans) for seq, ans in answers]
            out = list(self._out)
            code = self.proc.poll() if self.proc is not None else None
            if code is not None and self._exited_at is None:
                self._exited_at = time.monotonic()
            done = code is not None and (self._open == 0 or time.monotonic() - (self._exited_at or 0) > 5)
        for _seq, conn, ans in pending:
            if conn is not None:
                try:
                    conn.send(ans)
                except OSError:
                    pass
        if done and self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
        return out, (code if done else None)

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


@dataclass
class RayHandle:
    run_id: str
    actor: Any
    pid: Optional[int] = None
    started: Any = None  # ref of RunHost.start (None once placed)
    info: Optional[dict[str, Any]] = None
    pending: Any = None  # ref of the exchange in flight
    acked: int = 0
    answers: list[tuple[int, Any]] = field(default_factory=list)
    last_contact: float = field(default_factory=time.monotonic)
    code: Optional[int] = None


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

    def fit(self, gpus_wanted: int) -> Optional[list[int]]:
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

    def __init__(self, reg: Any = None, addr: Optional[str] = None, resources: Optional[dict[str, float]] = None,
                 cpus_per_run: Optional[float] = None, module: Optional[str] = None) -> None:
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

    def poll(self, h: RayHandle) -> Optional[int]:
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
    def adopt(self, run: dict[str, Any]) -> Optional[RayHandle]:
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


# -- local nodes: `grove up --ray` and the tests -------------------------------------------------------------
def start_node(*, head: bool, port: int = 6380, addr: str = "", num_cpus: Optional[int] = None,
               num_gpus: Optional[int] = None, resources: Optional[dict[str, float]] = None,
               object_store_mb: int = 200, client_port: int = 0, timeout: float = 120) -> subprocess.Popen:
    """One Ray node on 127.0.0.1 (``ray start --block`` in its own process group, so stopping it ends exactly its
    processes): the head without the dashboard or usage statistics, or a node joining ``addr``."""
    cmd = [sys.executable, "-c", "from engine.runs.ray_executor import ray_start_main; ray_start_main()",
           "start", "--block", "--node-ip-address=127.0.0.1",
           "--disable-usage-stats", f"--object-store-memory={object_store_mb * 1024 * 1024}"]
    if head:
        cmd += ["--head", f"--port={port}", "--include-dashboard=false", f"--ray-client-server-port={client_port or _free_port()}"]
    else:
        cmd += [f"--address={addr}"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    env = dict(os.environ, **OFFLINE_ENV)
    if head:
        # Every process the head starts resolves "localhost" to the loopback address, not the machine's: keep_loopback
        # patches only the node's own interpreter, and Ray Client's per-client servers (ray://) are new interpreters
        # that otherwise look for the GCS on the machine's address and time out.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # the node's processes (and so the runners they start) import this Grove
    env["PYTHONPATH"] = os.pathsep.join([str(paths.REPO_ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    paths.home().mkdir(parents=True, exist_ok=True)
    name = f"ray-head-{port}.log" if head else f"ray-node-{addr.rsplit(':', 1)[-1]}-{secrets.token_hex(3)}.log"
    logf = open(paths.home() / name, "ab")  # noqa: SIM115 - the node owns it
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    logf.close()
    if head:
        _wait_port("127.0.0.1", port, timeout, p)
    return p


def stop_node(p: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop one node started by ``start_node``: SIGTERM to its process group, SIGKILL to what is left after
    ``grace`` seconds (``ray start --block`` itself does not exit on SIGTERM)."""
    import signal

    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_members(p.pid) - {p.pid}:
        time.sleep(0.2)
    for _ in range(50):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        if p.poll() is None:
            p.wait(timeout=10)
        if not _group_members(p.pid):
            break
        time.sleep(0.1)


def _group_members(pgid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.add(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(host: str, port: int, timeout: float, p: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise GroveError(f"ray start exited with code {p.returncode} (see {paths.home()}/ray-head-{port}.log)")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise GroveError(f"the Ray head did not open {host}:{port} within {timeout:.0f}s")


def up_env(env: dict[str, str], want_ray: bool, port: int = 6380) -> Optional[str]:
    """``grove up``: with ``--ray`` (or ``GROVE_EXECUTOR=ray``), set the worker's environment for Ray and, when no
    ``GROVE_RAY_ADDRESS`` is given, start a local head on 127.0.0.1:``port`` (or reuse the one answering there).
    The head is left running when ``grove up`` stops, as runs are: a restarted ``grove up`` adopts them.
    Returns a line to print, or None when Ray is not used."""
    import socket

    if want_ray:
        env["GROVE_EXECUTOR"] = "ray"
    if env.get("GROVE_EXECUTOR", "").strip().lower() != "ray":
        return None
    env.update(OFFLINE_ENV)
    if env.get("GROVE_RAY_ADDRESS"):
        return f"runs execute on the Ray cluster at {env['GROVE_RAY_ADDRESS']}"
    env["GROVE_RAY_ADDRESS"] = f"127.0.0.1:{port}"
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return f"runs execute on the local Ray head already running at 127.0.0.1:{port}"
    p = start_node(head=True, port=port)
    (paths.home() / "ray-head.pid").write_text(str(p.pid))
    return (f"started a local Ray head at 127.0.0.1:{port} (no dashboard; it keeps running after Grove stops, so runs "
            f"go on: stop it with `kill -TERM -{p.pid}`)")
