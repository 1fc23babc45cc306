"""This machine: GPUs, memory, disk usage, processes and installed package versions. The only module that runs nvidia-smi or reads /proc.

Every reader is best effort: a machine without nvidia-smi has no GPUs, an unreadable /proc entry means "unknown".
"""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

NVIDIA_SMI_TIMEOUT_S = 10


def _nvidia_smi(*args: str) -> list[list[str]] | None:
    """Rows of ``nvidia-smi ... --format=csv,noheader,nounits`` split on commas; None when it cannot run."""
    try:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [[x.strip() for x in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def detect_gpus() -> list[int]:
    """GPU indices runs may use: ``GROVE_GPUS`` (e.g. ``0,1``; empty for none) or every GPU nvidia-smi lists."""
    env = os.environ.get("GROVE_GPUS")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip()]
    rows = _nvidia_smi("--query-gpu=index") or []
    return [int(r[0]) for r in rows if r and r[0].isdigit()]


def gpu_memory() -> list[dict[str, int]]:
    """Each GPU's ``index``, ``free`` and ``total`` bytes; empty without a GPU."""
    gpus = []
    for parts in _nvidia_smi("--query-gpu=index,memory.free,memory.total") or []:
        if len(parts) == 3 and all(x.isdigit() for x in parts):
            gpus.append({"index": int(parts[0]), "free": int(parts[1]) * 1024**2, "total": int(parts[2]) * 1024**2})
    return gpus


def gpu_used_mb(index: str | None = None) -> float | None:
    """Device memory in use (MB) on ``index`` (default: the first GPU this process sees); None if unreadable."""
    visible = index or (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0] or "0"
    rows = _nvidia_smi("-i", visible, "--query-gpu=memory.used")
    try:
        return float(rows[0][0]) * 1.048576 if rows else None
    except (ValueError, IndexError):
        return None


def ram_bytes() -> int:
    """Total RAM in bytes (0 if /proc/meminfo cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Start a new peak-RSS window for this process (where the kernel allows it)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith("VmHWM:"):
            return int(ln.split()[1]) / 1024
    return float("nan")


def dir_size(p: Path | str) -> int:
    """Bytes in a file or under a folder (files that vanish while walking are skipped)."""
    p = Path(p)
    if p.is_file():
        return p.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(p):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def cmdline(pid: int | None) -> list[bytes] | None:
    """A live (not zombie) process's command line as arguments; None when it is gone or unreadable."""
    if not pid:
        return None
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else cmd


def process_runs(pid: int | None, *needles: str) -> bool:
    """Whether process ``pid`` is alive and its command line contains any of ``needles``."""
    cmd = cmdline(pid)
    if cmd is None:
        return False
    joined = b" ".join(cmd)
    return any(n.encode() in joined for n in needles)


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the named distributions (those not installed are left out)."""
    out = {}
    for p in names:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return out


def hostname() -> str:
    return os.uname().nodename


def gpus_short(want: int, gpus_available: int | None = None) -> int | None:
    """None when ``want`` GPUs are there (or none are wanted); else how many this machine has (detected when
    ``gpus_available`` is None)."""
    if want <= 0:
        return None
    if gpus_available is None:
        gpus_available = len(detect_gpus())
    return gpus_available if want > gpus_available else None


def describe() -> dict[str, Any]:
    """What the pre-flight check compares memory needs with: total RAM and each GPU's total memory."""
    return {"ram": ram_bytes(), "gpus": [g["total"] for g in gpu_memory()]}
