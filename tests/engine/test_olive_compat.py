"""Each Olive fix is still needed by the pinned Olive (these fail when an upstream release fixes it: then delete
the patch), and the fixes reach a plain `olive` process through the .pth hook, not only Grove's runner."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.olive import compat as olive_compat


@pytest.mark.parametrize("name", list(olive_compat.PATCHES))
def test_patch_still_needed_then_fixed(name):
    if "GPU set only" in name and not olive_compat.PATCHES[name][0]():
        pytest.skip("applies to onnxruntime-genai >= 0.15 (the CUDA 13 GPU set), not to the CPU set pinned here")
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_Hook']\n"
        "from engine.olive import compat as c\n"
        f"needed, fix = c.PATCHES[{name!r}]\n"
        "assert needed(), 'upstream no longer needs this patch: delete it'\n"
        "fix()\n"
        "assert not needed(), 'the patch does not fix it'\n"
    )
    # a fresh interpreter with the start-up hook removed, so the patch is seen unapplied first
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_plain_olive_process_gets_the_fixes():
    assert olive_compat.hook_path().is_file(), "run `python -m engine.olive.compat --install` (./grove does)"
    code = (
        "import olive.workflows.run.run\n"
        "from engine.olive import compat as c\n"
        "left = [n for n, (needed, _) in c.PATCHES.items() if needed()]\n"
        "assert not left, left\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
