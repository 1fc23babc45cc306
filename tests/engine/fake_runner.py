"""A stand-in runner for worker fault tests: ``python -m tests.engine.fake_runner RUN_ID``.

Its behaviour comes from the run's name: ``fake:sleep`` (heartbeats until killed, exits cleanly on SIGTERM),
``fake:ignore-term`` (ignores SIGTERM), ``fake:crash`` (exits 3 without ending its run), ``fake:ok`` (ends its
run succeeded), ``fake:hang`` (stays alive, ignores SIGTERM and never heart-beats: a wedged runner). It writes CUDA_VISIBLE_DEVICES and its pid to the log so tests can check pinning.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from engine.runs.registry import Registry


def main() -> int:
    run_id = sys.argv[1]
    reg = Registry()
    run = reg.get_run(run_id)
    mode = run["name"].split(":", 1)[1]
    if mode in ("ignore-term", "hang"):  # before the pid line tests wait for: a SIGTERM after it must be ignored
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"fake runner pid={os.getpid()} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} TMPDIR={os.environ.get('TMPDIR')}", flush=True)
    os.makedirs(os.environ["TMPDIR"], exist_ok=True)
    open(os.path.join(os.environ["TMPDIR"], "scratch.bin"), "wb").write(b"x" * 1024)
    reg.update_run(run_id, pid=os.getpid())
    if mode == "ok":
        reg.transition(run_id, "succeeded", expect=("running",), exit_code=0)
        return 0
    if mode == "crash":
        print("fake runner: crashing now", flush=True)
        return 3
    if mode == "hang":
        while True:
            time.sleep(1)
    try:
        while True:
            reg.heartbeat(run_id, stage="sleeping")
            time.sleep(0.2)
    except KeyboardInterrupt:
        reg.transition(run_id, "cancelled", expect=("running",), exit_code=130)
        return 130


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())
