"""The GPU benchmarks' command lines work on any machine (CI has no GPU): they import and print their help, so a
user on a CUDA host gets a working command (docs/gpu.md). Runs everywhere: tests/gpu/conftest.py does not skip it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["gpu_adapters.py", "gpu_decode.py", "gpu_lab.py", "gpu_awq.py"])
def test_bench_help(script: str) -> None:
    p = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"], capture_output=True, text=True,
                       timeout=300, cwd=str(REPO))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage:" in p.stdout and "--out" in p.stdout


def test_adapters_bench_reads_adapter_placement(tmp_path: Path) -> None:
    """The table says where each genai version keeps adapter weights, read from its library's symbols."""
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_adapters

    for name, data, want in (
        ("old", b"x\0_ZN10Generators7AdapterC1EPKcPN3Ort9AllocatorE\0y", "device"),
        ("new", b"x\0_ZN10Generators7AdapterC1EPKc\0y", "host"),
        ("none", b"nothing here", "unknown"),
    ):
        d = tmp_path / name
        d.mkdir()
        (d / "libonnxruntime-genai.so").write_bytes(data)
        assert gpu_adapters.adapter_placement(d) == want
