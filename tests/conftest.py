"""Shared fixtures. Every test session gets its own GROVE_HOME (registry, runs, Olive cache) in a temp folder;
the demo model is built once per session into it (about a minute on 2 cores)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared").resolve()  # resolved, as the UI lists paths
LAB_SAMPLE = SHARED / "data" / "travel_qa.jsonl"

_session_home = Path(os.environ.get("GROVE_TEST_HOME") or "")


def pytest_configure(config: pytest.Config) -> None:
    global _session_home
    import tempfile

    if not os.environ.get("GROVE_TEST_HOME"):
        _session_home = Path(tempfile.mkdtemp(prefix="grove-test-"))
    _session_home.mkdir(parents=True, exist_ok=True)
    os.environ["GROVE_HOME"] = str(_session_home)
    os.environ.setdefault("GROVE_GPUS", "")  # the CPU path unless a test says otherwise


def pytest_unconfigure(config: pytest.Config) -> None:
    if not os.environ.get("GROVE_TEST_HOME") and not os.environ.get("GROVE_KEEP_TEST_HOME"):
        shutil.rmtree(_session_home, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        # tests/gpu/conftest.py decides for its own tests: skipped without a GPU, failed on a GPU host without the GPU set
        if "gpu" in item.keywords and not has_cuda and "tests/gpu/" not in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def grove_home() -> Path:
    return _session_home


@pytest.fixture(scope="session")
def demo(grove_home: Path) -> dict:
    """The embedded demo model, built once per session."""
    from engine.models import tiny as demo_mod

    return demo_mod.build_demo()


@pytest.fixture(scope="session")
def lab_sample() -> Path:
    if not LAB_SAMPLE.is_file():
        pytest.skip(f"{LAB_SAMPLE} not found (../shared is beside the repository in CI)")
    return LAB_SAMPLE


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A GROVE_HOME of its own, for tests that need an empty registry."""
    monkeypatch.setenv("GROVE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
