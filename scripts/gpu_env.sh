#!/usr/bin/env bash
# Source on an offline CUDA 13 GPU host (Python 3.12, torch there) from the repository root, after
# scripts/gpu_wheels.sh's wheels were carried over (.whl/, .whl2/, onnxruntime-gpu rebuilt in /root/ort/):
#   source scripts/gpu_env.sh && python -m pytest -m gpu tests/gpu
if [ ! -d /tmp/site/olive ]; then
  # onnxruntime-gpu only where it was rebuilt (runs and chat on PyTorch alone do not need it)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $(ls /root/ort/*.whl 2>/dev/null) .whl/*.whl .whl2/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
LD_LIBRARY_PATH=$(python3 -c "import glob,site; print(':'.join(glob.glob(site.getsitepackages()[0]+'/nvidia/*/lib')))")
export LD_LIBRARY_PATH
export GROVE_HOME=${GROVE_HOME:-/root/grove} HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
