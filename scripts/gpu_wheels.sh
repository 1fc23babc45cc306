#!/usr/bin/env bash
# Wheels for an offline CUDA 13 GPU host with Python 3.12 and torch already installed (the lent H100/H200):
# Grove's pinned packages (requirements.txt) minus torch, with the CUDA 13 onnxruntime set
# (onnxruntime-genai-cuda 0.15.2 + onnxruntime-gpu 1.28.0; 0.14.1 is built for CUDA 12).
# Result: .whl/ (git-ignored) and onnxruntime-gpu split in .ort1/ ... .ort5/ (a device call carries 64 MiB at most).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
excl="$(git rev-parse --git-dir)/info/exclude"; mkdir -p "$(dirname "$excl")"
for d in /.whl/ /.whl2/ /.ort1/ /.ort2/ /.ort3/ /.ort4/ /.ort5/; do grep -qxF "$d" "$excl" 2>/dev/null || echo "$d" >> "$excl"; done
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
# .whl2/: what the GPU host's own packages do not fit (tokenizers <= 0.23.0 for transformers 5.10), the test runner,
# and bitsandbytes with only its CPU and CUDA 13 libraries (the full wheel is 43 MB; this one about 4 MB)
mkdir -p .whl2
for req in tokenizers==0.22.2 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pytest-timeout==2.4.0; do dl .whl2 "$req"; done
if [ ! -f .whl2/bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl ]; then
  root=$(pwd); tmp=$(mktemp -d); dl "$tmp" bitsandbytes==0.50.2
  mkdir "$tmp/x" && (cd "$tmp/x" && unzip -q "$tmp"/bitsandbytes-*.whl \
    && find . -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*cpu*' -delete \
    && zip -qr "$root/.whl2/bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl" .)
  rm -rf "$tmp"
fi
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
du -sh .whl .whl2 .ort1 .ort2 .ort3 .ort4 .ort5
