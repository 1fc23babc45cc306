"""The Ray cluster as Grove sees it: connecting (offline, quiet, on the loopback interface for a local cluster, Ray
Client connections tried again), the token proving a node sees the head's ``GROVE_HOME``, the alive nodes and their
resources, and local nodes started and stopped for ``grove up --ray`` and the tests (``start_node``, ``stop_node``,
``up_env``). The executor itself is ``engine.runs.ray_executor``; the actor on a run's node ``engine.runs.ray_host``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import GroveError

log = logging.getLogger("grove.ray")
NAMESPACE = "grove"
HOME_TOKEN = ".grove-home-token"
CLIENT_CONNECT_TRIES = 3
OFFLINE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
# Ray's raylet starts its workers at niceness 15; a runner is a worker's child, and a run at niceness 15 trains slower
# and measures lower speed figures beside anything at normal priority (issue 21). Nodes Grove starts run them at 0.
NODE_ENV = {"RAY_worker_niceness": "0"}


# -- connecting ------------------------------------------------------------------------------------------
def address() -> str:
    return os.environ.get("GROVE_RAY_ADDRESS") or "auto"


def connect(addr: str | None = None) -> Any:
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
    """``ray start`` with ``keep_loopback`` (``python -c 'from engine.runs.ray_cluster import ray_start_main;
    ray_start_main()' start ...``)."""
    keep_loopback()
    from ray.scripts.scripts import main

    sys.exit(main())


def home_token(home: Path | None = None) -> str:
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


# -- local nodes: `grove up --ray` and the tests -------------------------------------------------------------
def start_node(*, head: bool, port: int = 6380, addr: str = "", num_cpus: int | None = None,
               num_gpus: int | None = None, resources: dict[str, float] | None = None,
               object_store_mb: int = 200, client_port: int = 0, timeout: float = 120) -> subprocess.Popen:
    """One Ray node on 127.0.0.1 (``ray start --block`` in its own process group, so stopping it ends exactly its
    processes): the head without the dashboard or usage statistics, or a node joining ``addr``."""
    cmd = [sys.executable, "-c", "from engine.runs.ray_cluster import ray_start_main; ray_start_main()",
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
    env = dict(os.environ, **OFFLINE_ENV, **NODE_ENV)
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


def up_env(env: dict[str, str], want_ray: bool, port: int = 6380) -> str | None:
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
