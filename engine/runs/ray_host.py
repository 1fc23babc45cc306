"""``RunHost``: the Ray actor that lives on a run's node for the run's lifetime. It starts the runner as a fresh
interpreter in its own process group (``CUDA_VISIBLE_DEVICES`` from Ray's assignment), relays the runner's registry
calls (``engine.runs.relay``, a node-local Unix socket) to the worker on the head, which collects them with
``exchange``, and signals the runner's process group. The head's side is ``engine.runs.ray_executor``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import GroveError
from engine.runs import relay
from engine.runs.ray_cluster import HOME_TOKEN


class RunHost:
    """Lives on the run's node for the run's lifetime: starts the runner, relays its registry calls, signals it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._out: list[tuple[int, str, str, tuple, dict]] = []  # (seq, kind, method, args, kwargs), not yet acked
        self._conns: dict[int, Any] = {}  # seq of a call -> connection waiting for its answer
        self._open = 0
        self._exited_at: float | None = None
        self._sockdir: str | None = None

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
        from engine.targets.env import python_for_run

        python = python_for_run(run)  # the run's target environment on this node (engine.targets), else this one
        with open(rdir / "run.log", "ab", buffering=0) as logf:
            self.proc = subprocess.Popen([python, "-m", module, run["id"]], cwd=rdir, env=env,
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True)
        ctx = ray.get_runtime_context()
        self.info = {"pid": self.proc.pid, "node_id": ctx.get_node_id(), "address": ray.util.get_node_ip_address(),
                     "host": os.uname().nodename, "gpus": gpus}
        return self.info

    def describe(self) -> dict[str, Any] | None:
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

    def exchange(self, acked: int, answers: list[tuple[int, tuple[str, Any]]]) -> tuple[list[tuple], int | None]:
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
