"""The Ray executor on a real two-node Ray cluster on this machine (127.0.0.1): a head with one CPU and a custom
resource ``head``, and a second node with one CPU and a custom resource ``node2``, started and stopped here.
Real Olive on the tiny demo model, real Ray, the real worker; nothing is mocked. Runs are forced onto a node
through its custom resource (``RayExecutor(resources=...)``, what ``GROVE_RAY_RESOURCES`` sets).

Both nodes share this machine's filesystem, so GROVE_HOME is shared as the executor requires (docs/ray.md);
the registry is only ever opened by this process (the head-side worker), which the tests check on the runner."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import ResourceError
from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.runs.worker import Worker
from engine.spec import recipes
from engine.spec.schema import parse_spec

from .helpers import pid_alive, wait_for

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.ray]

HEARTBEAT = 1.0  # GROVE_HEARTBEAT_S: a lost node fails its run within three of them
LONG = 5000  # LoRA steps of a run that is stopped before it ends


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(demo, grove_home):
    """Head (1 CPU, resource head) and node2 (1 CPU, resource node2); the test process connects as the driver."""
    from engine.runs import ray_cluster as rc

    port, client_port = _free_port(), _free_port()
    head = rc.start_node(head=True, port=port, num_cpus=1, num_gpus=0, resources={"head": 1}, object_store_mb=80,
                         client_port=client_port)
    node2 = rc.start_node(head=False, addr=f"127.0.0.1:{port}", num_cpus=1, num_gpus=0, resources={"node2": 1},
                          object_store_mb=80)
    nodes = {"head": head, "node2": node2, "address": f"127.0.0.1:{port}", "client": f"ray://127.0.0.1:{client_port}"}
    try:
        rc.connect(nodes["address"])
        wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2, 120, step=0.5)
        node_ids = {next(iter(k for k in n["Resources"] if k in ("head", "node2"))): n["NodeID"] for n in ray.nodes() if n["Alive"]}
        nodes.update(node_ids=node_ids)
        yield nodes
    finally:
        # a failed test must not leave its runs queued for the next module's workers (they share the registry)
        for r in Registry().list_runs():
            if r["name"].startswith("ray:") and r["status"] in ("queued", "running"):
                service.cancel(r["id"])
        ray.shutdown()
        rc.stop_node(node2)
        rc.stop_node(head)


def _worker(cluster, node: str, **kw) -> Worker:
    from engine.runs.ray_executor import RayExecutor

    ex = RayExecutor(addr=cluster["address"], resources={node: 1})
    return Worker(Registry(), ex, worker_id=f"w-test-{node}-{time.monotonic_ns()}", **kw)


def _spec(steps: int, name: str):
    d = recipes.lab_recipe(str(Path(os.environ["GROVE_HOME"]) / "demo" / "model"),
                           str(Path(os.environ["GROVE_HOME"]) / "demo" / "travel_sample.jsonl"), name=name, max_steps=steps)
    return parse_spec(d)


def _placed(reg: Registry, run_id: str) -> dict:
    ev = reg.events(run_id, kinds=["placed"])
    return ev[-1]["data"] if ev else {}


def _training(reg: Registry, run_id: str) -> bool:
    return (reg.get_run(run_id)["stage"] or "").startswith("training")


def _actor_exists(name: str) -> bool:
    try:
        ray.get_actor(name, namespace="grove")
        return True
    except ValueError:
        return False


def _open_files(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    except OSError:
        pass
    return out


def test_demo_recipe_on_the_second_node_is_recorded_on_the_head(cluster):
    reg = Registry()
    w = _worker(cluster, "node2")
    w.start()
    run = service.submit(_spec(12, "ray: demo on node2"))
    wait_for(lambda: _placed(reg, run["id"]), 120, w.tick, 0.2)
    placed = _placed(reg, run["id"])
    assert placed["node_id"] == cluster["node_ids"]["node2"]
    seen: set[str] = set()
    env = ""
    nice: int | None = None

    def tick() -> None:
        nonlocal env, nice
        w.tick()
        seen.update(_open_files(placed["pid"]))
        if not env:
            try:
                env = Path(f"/proc/{placed['pid']}/environ").read_bytes().decode()
            except OSError:
                pass
        if nice is None and _training(reg, run["id"]):
            try:  # field 19 of /proc/PID/stat (after the command name in parentheses)
                nice = int(Path(f"/proc/{placed['pid']}/stat").read_text().rsplit(")", 1)[1].split()[16])
            except (OSError, IndexError, ValueError):
                pass

    wait_for(lambda: reg.get_run(run["id"])["status"] in ("succeeded", "failed", "cancelled"), 400, tick, 0.2)
    done = reg.get_run(run["id"])
    assert done["status"] == "succeeded", (done["error_message"], Path(done["log_path"]).read_text()[-3000:])
    # the runner wrote through the relay, never to grove.db
    assert "GROVE_RELAY=" in env
    # the runner trains at normal priority, not at the niceness 15 Ray gives its workers (which slowed its training
    # and its speed figures beside anything else on the CPU)
    assert nice == 0, nice
    assert not any(f.endswith(("grove.db", "grove.db-wal")) for f in seen), seen
    # everything it said landed in the head's registry
    cands = reg.candidates(run["id"])
    assert sorted(" > ".join(c["pass_chain"]) for c in cands) == ["lora", "lora > modelbuilder", "lora > modelbuilder > extractadapters"]
    final = next(c for c in cands if c["is_output"])
    assert (Path(final["path"]) / "model.onnx").is_file()  # the output is in the shared GROVE_HOME
    def kinds() -> list[str]:
        return [e["kind"] for e in reg.events(run["id"])]

    try:
        wait_for(lambda: kinds().count("pass_finished") + kinds().count("pass_cached") == 3, 60, w.tick, 0.2)
    except AssertionError:
        raise AssertionError((kinds(), Path(done["log_path"]).read_text()[-4000:])) from None
    assert "train_step" in kinds(), kinds()
    assert done["exit_code"] == 0 and done["progress"] == 1.0
    wait_for(lambda: not w.active, 60, w.tick, 0.1)  # the worker saw the runner exit and removed its host actor
    wait_for(lambda: not _actor_exists("grove-run-" + run["id"]), 60, step=0.2)
    # Home's view of the cluster, from the worker's heartbeat
    from engine.runs.cluster import cluster_status, node_rows

    w.reg.worker_beat(w.id, w.slots.describe())
    st = cluster_status(reg)
    assert st is not None and {n["node_id"] for n in st["nodes"]} == set(cluster["node_ids"].values())
    assert [r["CPUs"] for r in node_rows(st)] and all("/ 1" in r["CPUs"] for r in node_rows(st))
    # more GPUs than any node has: refused at submit with the cluster's figure
    d = recipes.lab_recipe("m", "d", device="gpu")
    d["model"]["name"] = str(Path(os.environ["GROVE_HOME"]) / "demo" / "model")
    d["dataset"]["path"] = str(Path(os.environ["GROVE_HOME"]) / "demo" / "travel_sample.jsonl")
    d["resources"] = {"gpus": 2}
    os.environ["GROVE_EXECUTOR"] = "ray"
    try:
        with pytest.raises(ResourceError, match="largest node of the Ray cluster has 0"):
            service.submit(parse_spec(d))
    finally:
        del os.environ["GROVE_EXECUTOR"]
    w.reg.worker_stopped(w.id)


def test_cancel_mid_lora_on_the_second_node(cluster):
    reg = Registry()
    w = _worker(cluster, "node2")
    w.start()
    run = service.submit(_spec(LONG, "ray: cancel mid-LoRA"))
    wait_for(lambda: _training(reg, run["id"]), 240, w.tick, 0.2)
    pid = _placed(reg, run["id"])["pid"]
    service.cancel(run["id"])
    took = wait_for(lambda: reg.get_run(run["id"])["status"] == "cancelled", 60, w.tick, 0.05)
    assert took < 5, f"cancel took {took:.1f} s (TERM, then SIGKILL after the grace)"
    wait_for(lambda: not pid_alive(pid), 60, w.tick, 0.1)
    wait_for(lambda: not w.active, 60, w.tick, 0.1)
    wait_for(lambda: not _actor_exists("grove-run-" + run["id"]), 60, w.tick, 0.1)  # its host actor is gone too
    w.reg.worker_stopped(w.id)


def test_worker_restart_with_a_run_in_flight_adopts_it(cluster):
    reg = Registry()
    env = dict(os.environ, GROVE_EXECUTOR="ray", GROVE_RAY_ADDRESS=cluster["address"],
               GROVE_RAY_RESOURCES=json.dumps({"node2": 1}), GROVE_POLL_S="0.2",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    log = open(Path(os.environ["GROVE_HOME"]) / "ray-test-worker.log", "ab")  # noqa: SIM115
    start = lambda: subprocess.Popen([sys.executable, "-m", "engine.runs.worker"], env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: E731
    run = service.submit(_spec(40, "ray: worker restart"))
    w1 = start()
    w2 = None
    try:
        wait_for(lambda: _training(reg, run["id"]), 240, step=0.3)
        pid = _placed(reg, run["id"])["pid"]
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        steps_before = len(reg.events(run["id"], kinds=["train_step"]))
        time.sleep(3)
        assert pid_alive(pid) and reg.get_run(run["id"])["status"] == "running"  # the run goes on without a worker
        w2 = start()
        wait_for(lambda: reg.events(run["id"], kinds=["recovered"]), 60, step=0.3)
        wait_for(lambda: reg.get_run(run["id"])["status"] in ("succeeded", "failed", "cancelled"), 400, step=0.5)
        done = reg.get_run(run["id"])
        assert done["status"] == "succeeded", (done["error_message"], Path(done["log_path"]).read_text()[-3000:])
        assert reg.events(run["id"], kinds=["recovered"])[0]["data"]["adopted_pid"] == pid
        assert len(reg.events(run["id"], kinds=["train_step"])) > steps_before  # what it said meanwhile landed
        assert any(c["is_output"] for c in reg.candidates(run["id"]))
        assert done["attempts"] == 1  # adopted, not run again
        wait_for(lambda: not _actor_exists("grove-run-" + run["id"]), 60, step=0.3)  # released by the new worker
    finally:
        for p in (w1, w2):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
        log.close()


def test_a_worker_reaching_the_cluster_through_ray_client(cluster):
    """GROVE_RAY_ADDRESS=ray://host:port (Ray Client, as from a laptop outside the cluster): the worker, in its own
    process, places the run on node2, and the run's events and candidates land in the head's registry."""
    reg = Registry()
    env = dict(os.environ, GROVE_EXECUTOR="ray", GROVE_RAY_ADDRESS=cluster["client"],
               GROVE_RAY_RESOURCES=json.dumps({"node2": 1}), GROVE_POLL_S="0.2",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    log_path = Path(os.environ["GROVE_HOME"]) / "ray-client-worker.log"
    with open(log_path, "ab") as log:
        w = subprocess.Popen([sys.executable, "-m", "engine.runs.worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    run = service.submit(_spec(4, "ray: through ray://"))
    try:
        wait_for(lambda: reg.get_run(run["id"])["status"] in ("succeeded", "failed", "cancelled") or w.poll() is not None,
                 400, step=0.5)
        done = reg.get_run(run["id"])
        if done["status"] != "succeeded":
            print(log_path.read_text()[-12000:])  # the worker's whole traceback in the test's report
        assert done["status"] == "succeeded", (done["status"], done["error_message"])
        assert _placed(reg, run["id"])["node_id"] == cluster["node_ids"]["node2"]
        assert reg.events(run["id"], kinds=["train_step"]) and any(c["is_output"] for c in reg.candidates(run["id"]))
        wait_for(lambda: not _actor_exists("grove-run-" + run["id"]), 60, step=0.3)  # node2's CPU is free again
    finally:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
            w.wait(timeout=30)
        if reg.get_run(run["id"])["status"] == "queued":  # never left for the next test's workers to claim
            service.cancel(run["id"])


def test_a_host_actor_no_worker_released_is_released_by_the_next_worker(cluster):
    """A worker that stops between a run's end and its runner's exit never releases the run's detached host actor,
    which would hold node2's CPU for good; the next worker's sweep releases it once the run has been over a while."""
    from engine.runs import ray_executor as rx

    reg = Registry()
    w = _worker(cluster, "node2")
    w.start()
    run = service.submit(_spec(5, "ray: host actor left behind"))
    wait_for(lambda: reg.get_run(run["id"])["status"] in ("succeeded", "failed", "cancelled"), 400, w.tick, 0.2)
    assert reg.get_run(run["id"])["status"] == "succeeded"
    w.reg.worker_stopped(w.id)  # the worker stops here: it never sees the runner exit
    name = "grove-run-" + run["id"]
    time.sleep(3)
    assert _actor_exists(name)  # nobody released it
    w2 = _worker(cluster, "head")
    w2.start()
    took = wait_for(lambda: not _actor_exists(name), 60, w2.tick, 0.3)
    ended = reg.get_run(run["id"])
    assert ended["status"] == "succeeded" and time.time() - ended["finished_at"] >= rx.ORPHAN_AFTER_S
    wait_for(lambda: not pid_alive(_placed(reg, run["id"])["pid"]), 60, step=0.2)  # nor is its runner left behind
    print(f"orphaned host actor released {took:.1f}s after the next worker started")
    w2.reg.worker_stopped(w2.id)


def test_killing_the_second_node_fails_its_run_and_others_go_on(cluster):
    """Last: it kills node2. A long LoRA on node2 and another on the head; node2's Ray processes are killed."""
    from engine.runs import ray_cluster as rc

    reg = Registry()
    w2, wh = _worker(cluster, "node2"), _worker(cluster, "head")
    w2.start()
    wh.start()

    def tick() -> None:
        w2.tick()
        wh.tick()

    lost = service.submit(_spec(LONG + 1, "ray: on the node that dies"))
    wait_for(lambda: _placed(reg, lost["id"]), 120, tick, 0.2)
    other = service.submit(_spec(LONG + 2, "ray: on the head"))
    wait_for(lambda: _placed(reg, other["id"]), 120, wh.tick, 0.2)  # only the head's worker claims it
    wait_for(lambda: _training(reg, lost["id"]) and _training(reg, other["id"]), 300, tick, 0.2)
    assert _placed(reg, other["id"])["node_id"] == cluster["node_ids"]["head"]
    pid = _placed(reg, lost["id"])["pid"]
    os.killpg(cluster["node2"].pid, signal.SIGKILL)  # the node's raylet, its workers and the run's host actor
    took = wait_for(lambda: reg.get_run(lost["id"])["status"] == "failed", 60, tick, 0.05)
    run = reg.get_run(lost["id"])
    assert run["error_type"] == "node_lost" and "node" in run["error_message"], run["error_message"]
    assert took <= 3 * HEARTBEAT + 2, f"the lost node's run failed after {took:.1f} s"
    wait_for(lambda: not pid_alive(pid), 60, tick, 0.2)  # the runner ended itself with its host
    # the run on the head goes on: it keeps training after the node died
    n = len(reg.events(other["id"], kinds=["train_step"]))
    wait_for(lambda: len(reg.events(other["id"], kinds=["train_step"])) > n, 60, tick, 0.2)
    assert reg.get_run(other["id"])["status"] == "running"
    service.cancel(other["id"])
    wait_for(lambda: reg.get_run(other["id"])["status"] == "cancelled", 60, tick, 0.05)
    wait_for(lambda: not wh.active and not w2.active, 60, tick, 0.1)
    rc.stop_node(cluster["node2"])
