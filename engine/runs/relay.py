"""The registry seen from a runner that may not open ``grove.db``: its calls relayed to the one writer on the head.

On the Ray executor a runner executes on some node of the cluster; SQLite stays on the machine that runs
``grove up``. The runner's process gets ``GROVE_RELAY`` (a Unix socket of its host process on the same node,
engine/runs/ray_host.py ``RunHost``) and ``GROVE_RELAY_KEY``; ``open_registry()`` then returns a
``RelayRegistry`` whose methods travel as messages:

    runner --(Unix socket)--> RunHost actor on the node --(Ray, polled)--> worker on the head --> Registry

- writes that return nothing (events, heartbeats, candidates, evaluations) are sent and not waited for; the
  order of one runner's messages is kept end to end, so a later call sees every earlier write applied;
- reads and state transitions wait for the head's answer; the head's errors (``RunStateError``...) are raised
  again in the runner with their message.

This module imports neither Ray nor SQLite code beyond ``Registry``'s name, so a runner stays a plain process.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.connection import Client
from typing import Any

from engine import errors

RELAY_ENV = "GROVE_RELAY"
RELAY_KEY_ENV = "GROVE_RELAY_KEY"

# Registry methods a runner (and the evaluator it calls) uses: sent without waiting, or waited for.
NOTIFY = frozenset({"add_event", "add_events", "heartbeat", "update_run", "upsert_candidates", "save_evaluation",
                    "link_evaluation"})
CALL = frozenset({"get_run", "transition", "run_evaluations", "get_evaluation", "events", "candidates"})


def open_registry() -> Any:
    """The registry for this process: relayed to the head when the executor says so, else ``grove.db`` itself."""
    if os.environ.get(RELAY_ENV):
        return RelayRegistry(os.environ[RELAY_ENV], bytes.fromhex(os.environ[RELAY_KEY_ENV]))
    from engine.runs.registry import Registry

    return Registry()


def apply(reg: Any, method: str, args: tuple, kwargs: dict[str, Any]) -> tuple[str, Any]:
    """Run one relayed call against the real registry (on the head): ``("ok", value)`` or ``("err", (type, msg))``."""
    if method not in NOTIFY and method not in CALL:
        return "err", ("AttributeError", f"the registry relay does not carry '{method}'")
    try:
        return "ok", getattr(reg, method)(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - every error goes back to the caller, by name
        return "err", (type(e).__name__, str(e))


def raise_remote(err: tuple[str, str]) -> None:
    name, msg = err
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            raise cls(msg)
        except TypeError:
            pass
    raise RuntimeError(f"{name}: {msg}")


class RelayRegistry:
    """The subset of ``Registry`` a runner uses, relayed to the head. Thread-safe (one connection, one lock).

    A guard thread ends this process's group when its host process is gone (the node's Ray processes were
    killed): a runner never outlives the node agent that stands for it."""

    def __init__(self, address: str, authkey: bytes, guard: bool = True) -> None:
        self.path = address
        self._conn = Client(address, family="AF_UNIX", authkey=authkey)
        self._lock = threading.Lock()
        self._ppid = os.getppid()
        if guard:
            threading.Thread(target=self._guard, name="grove-relay-guard", daemon=True).start()

    def _guard(self) -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != self._ppid:
                print("[grove] the run's host process is gone (its node stopped): ending the run's processes", flush=True)
                self._die()

    @staticmethod
    def _die() -> None:
        try:
            os.killpg(os.getpgid(0), 9)
        finally:
            os._exit(137)

    def _send(self, msg: tuple) -> None:
        try:
            self._conn.send(msg)
        except (OSError, EOFError):
            print("[grove] lost the relay to the head: ending the run's processes", flush=True)
            self._die()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._send(("call", method, args, kwargs))
            try:
                status, value = self._conn.recv()
            except (OSError, EOFError):
                print("[grove] lost the relay to the head: ending the run's processes", flush=True)
                self._die()
        if status == "err":
            raise_remote(value)
        return value

    def _notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._send(("notify", method, args, kwargs))

    def __getattr__(self, name: str) -> Any:
        if name in CALL:
            return lambda *a, **kw: self._call(name, *a, **kw)
        if name in NOTIFY:
            return lambda *a, **kw: self._notify(name, *a, **kw)
        raise AttributeError(f"the registry relay does not carry '{name}' (engine/runs/relay.py)")

