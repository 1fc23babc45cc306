#!/usr/bin/env bash
# Wheels for an offline CUDA 13 GPU host with Python 3.12 and torch already installed (the lent H100/H200):
# Grove's pinned packages (requirements.txt) minus torch, with the CUDA 13 onnxruntime set
# (onnxruntime-genai-cuda 0.15.2 + onnxruntime-gpu 1.28.0; 0.14.1 is built for CUDA 12).
# Result: .whl/ (git-ignored) and onnxruntime-gpu split in .ort1/ ... .ort5/ (a device call carries 64 MiB at most).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
excl="$(git rev-parse --git-dir)/info/exclude"; mkdir -p "$(dirname "$excl")"
for d in /.whl/ /.ort1/ /.ort2/ /.ort3/ /.ort4/ /.ort5/; do grep -qxF "$d" "$excl" 2>/dev/null || echo "$d" >> "$excl"; done
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$1" "$2" 2>&1 | grep -v '^WARNING' || true
}
mkdir -p .whl
skip='^(torch|onnxruntime-gpu|onnxruntime-genai-cuda|triton|autoawq|nvidia-|playwright|streamlit|pyarrow|pandas|altair|pydeck|plotly|tornado|watchdog|gitpython|gitdb|smmap|pillow|protobuf|numpy|scipy|sympy|mpmath|networkx|jinja2|markupsafe|fsspec|filelock|typing_extensions|setuptools|pytest|pluggy|iniconfig|ruff|greenlet|pyee)=='
grep -E '^[A-Za-z0-9_.-]+==' requirements.txt | grep -viE "$skip" | while read -r req; do dl .whl "$req"; done
dl .whl onnxruntime-genai-cuda==0.15.2
# autoawq 0.2.9 is an sdist of pure Python: build its wheel here
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl autoawq==0.2.9 2>&1 | grep -v '^WARNING' || true
if [ ! -f .ort5/part4 ]; then
  tmp=$(mktemp -d)
  dl "$tmp" onnxruntime-gpu==1.28.0
  whl=$(ls "$tmp"/onnxruntime_gpu-*.whl)
  basename "$whl" > .whl/onnxruntime_gpu.name
  sha256sum "$whl" | awk '{print $1}' > .whl/onnxruntime_gpu.sha256
  split -n 5 -d -a 1 "$whl" "$tmp/part"
  for i in 0 1 2 3 4; do mkdir -p ".ort$((i+1))"; mv "$tmp/part$i" ".ort$((i+1))/part$i"; done
  rm -rf "$tmp"
fi
du -sh .whl .ort1 .ort2 .ort3 .ort4 .ort5
