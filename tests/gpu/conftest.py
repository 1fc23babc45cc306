"""GPU tests: marked ``gpu`` and skipped unless PyTorch sees CUDA and onnxruntime has the CUDA provider.

Run them on a GPU machine with ``python -m pytest -m gpu tests/gpu`` (docs/gpu.md: the install on an offline host)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine import machine


def cuda_ready() -> tuple[bool, str]:
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU (torch.cuda.is_available() is False)"
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    except Exception as e:  # noqa: BLE001
        return False, f"CUDA check failed: {e}"
    return True, ""


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    ok, why = cuda_ready()
    for item in items:
        path = str(item.fspath).replace("\\", "/")
        if "tests/gpu/" in path:
            item.add_marker(pytest.mark.gpu)
            torch_only = path.endswith("test_gpu_scheduling.py")  # LoRA runs and chat policy: PyTorch CUDA only
            if not ok and not (torch_only and gpu_count()):
                item.add_marker(pytest.mark.skip(reason=why))


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
    """The end of a run's log, for a failure message (engine.runs.worker.log_tail reads it)."""
    from engine.runs.worker import log_tail

    return log_tail(Path(run.get("log_path") or ""))
