#!/usr/bin/env bash
# Build, here (with access to the package registry), the wheels an offline CUDA 13 GPU host needs for Grove, packed
# into folders that can each be carried to that host on its own: .whl1/ ... .whlN/ (git-ignored), each under 60 MiB.
#
#   scripts/gpu_wheels.sh            # from the repository root (or anywhere inside it)
#
# The host is expected to have Python 3.12 (x86-64) with torch (CUDA 13) and the scientific stack (numpy, pandas,
# pyarrow, protobuf, pillow...), as the lent H100/H200 machines do. What is carried: Grove's pinned packages
# (requirements.txt) that such a host lacks or has at another version, with the CUDA 13 onnxruntime set in place of
# the CPU/CUDA 12 pins:
#   onnxruntime-genai-cuda 0.15.2 + onnxruntime-gpu 1.31.1   (chosen by bench/gpu_adapters.py, one H100, 2026-12-06:
#                                                            the last genai that keeps LoRA adapters on the GPU, 3x
#                                                            faster with an adapter active than 0.16.0-0.18.0, same
#                                                            speed without; docs/gpu.md. GROVE_GENAI_CUDA=0.18.0 picks
#                                                            another. genai-cuda 0.14.1, the CPU pin, is built for CUDA 12)
#   bitsandbytes 0.50.2 (its wheel is tagged manylinux_2_24; only its CPU and CUDA 13 libraries are kept)
#   autoawq 0.2.9 (an sdist of pure Python: its wheel is built here)
#   ray 2.60.0 (ray[client]: grpcio is pinned on its own line) without its Java jars, RLlib and the dashboard's web
#            pages (scripts/slim_wheel.py): 41 MiB instead of 76
# onnxruntime-gpu (244 MiB) is split into parts; scripts/gpu_install.sh joins them and checks the sha256.
#
# Every folder holds MANIFEST.tsv, the list of every file in every folder with its sha256, so the install on the
# host knows what is missing. One version of each package, each file in exactly one folder.
# The script does not stop at the first failed download: it reports every failure at the end and exits non-zero.
set -uo pipefail
cd "$(git rev-parse --show-toplevel)" || exit 1
PY=${PYTHON:-python3}
MAX_MIB=${GROVE_WHEEL_FOLDER_MIB:-58}   # per folder; the device tool carries 64 MiB a call, the checkout included
CACHE=.whl-cache                        # downloads kept between runs (git-ignored)
excl="$(git rev-parse --git-common-dir)/info/exclude"; mkdir -p "$(dirname "$excl")"
for d in /.whl-cache/ '/.whl[0-9]*/'; do grep -qxF "$d" "$excl" 2>/dev/null || echo "$d" >> "$excl"; done
mkdir -p "$CACHE/dl" "$CACHE/built"

failed=()
platforms=()
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
         manylinux2014 manylinux1; do platforms+=(--platform "${p}_x86_64"); done

dl() {  # dl NAME==VERSION: one wheel for CPython 3.12 on x86-64 Linux into the cache (no dependencies)
  local req=$1 name=${1%%==*} ver=${1#*==}
  local norm; norm=$(echo "$name" | tr 'A-Z-.' 'a-z__')
  if ls "$CACHE/dl/" 2>/dev/null | tr 'A-Z-.' 'a-z__' | grep -q "^${norm}-$(echo "$ver" | tr '-' '_')-"; then return 0; fi
  if ! out=$("$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d "$CACHE/dl" "$req" 2>&1); then
    failed+=("$req: $(echo "$out" | grep -v '^WARNING' | tail -1)")
  fi
}

# 1. Grove's pins, minus what the GPU host provides (torch and its CUDA libraries, the scientific stack, the test
#    runner), minus ruff (the linter) and what only the browser UI needs (the host runs the engine, its tests and the
#    benchmarks), minus what steps 3-6 fetch themselves. The host lacks jsonschema and its stack (ray needs them)
#    and tzdata: those are carried.
skip='^(torch|triton|nvidia-.*|onnxruntime-gpu|onnxruntime-genai-cuda|autoawq|bitsandbytes|ray|numpy|scipy|sympy|mpmath|networkx|pandas|pyarrow|pillow|protobuf|jinja2|markupsafe|fsspec|filelock|typing_extensions|setuptools|pytest|pytest-timeout|pluggy|iniconfig|ruff|playwright|greenlet|pyee|streamlit|altair|pydeck|plotly|narwhals|tornado|watchdog|gitpython|gitdb|smmap|starlette|uvicorn|websockets|python-multipart|itsdangerous|anyio|h11|httpx|httpcore|certifi|idna|charset-normalizer|urllib3|requests|pygments|rich|markdown-it-py|mdurl|click|typer|shellingham|six|python-dateutil|psutil|pyyaml|regex|safetensors|hf-xet|attrs|ml_dtypes|tqdm)(\[[^]]*\])?=='
# A pin with extras (ray[client]==...) is fetched by its name alone: the extras' packages are pinned lines too.
mapfile -t pins < <(grep -E '^[A-Za-z0-9_.-]+(\[[^]]*\])?==' requirements.txt | grep -viE "$skip" | sed -E 's/\[[^]]*\]//')
# 2. the CUDA 13 onnxruntime set
gpu_set=(onnxruntime-genai-cuda==${GROVE_GENAI_CUDA:-0.15.2})
# one genai version in the cache: a wheel of another version (an earlier run's choice) would stop the packing below
find "$CACHE/dl" -name 'onnxruntime_genai_cuda-*.whl' ! -name "onnxruntime_genai_cuda-${GROVE_GENAI_CUDA:-0.15.2}-*" -delete
for req in "${pins[@]}" "${gpu_set[@]}"; do dl "$req"; done

# 3. pins published only as sdists of pure Python (autoawq; lm_eval's rouge_score, sqlitedict, word2number): their
#    wheels are built here (py3-none-any, so they install on the host's 3.12)
sdists=(autoawq==0.2.9)
for f in "${failed[@]}"; do
  case "$f" in *"No matching distribution found"*) sdists+=("${f%%: *}") ;; esac
done
kept=()
for f in "${failed[@]}"; do case "$f" in *"No matching distribution found"*) ;; *) kept+=("$f") ;; esac; done
failed=("${kept[@]}")
for req in "${sdists[@]}"; do
  norm=$(echo "${req%%==*}" | tr 'A-Z-.' 'a-z__')
  if ls "$CACHE/built/" 2>/dev/null | tr 'A-Z-.' 'a-z__' | grep -q "^${norm}-${req#*==}-"; then continue; fi
  # build isolation: pip takes setuptools and wheel from the registry (a bare python3 has no `wheel`; building
  # without isolation failed on a fresh machine), then the machine's own build tools as a fallback
  "$PY" -m pip wheel -q --no-deps -w "$CACHE/built" "$req" >/dev/null 2>&1 \
    || "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CACHE/built" "$req" >/dev/null 2>&1 \
    || failed+=("$req: no wheel for Python 3.12 and its sdist did not build")
done
# 4. bitsandbytes: the wheel is tagged manylinux_2_24 and holds a library per CUDA version (43 MB): keep CPU + CUDA 13
bnb=bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl
if [ ! -f "$CACHE/built/$bnb" ]; then
  tmp=$(mktemp -d)
  if "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       "${platforms[@]}" -d "$tmp" bitsandbytes==0.50.2 >/dev/null 2>&1 && ls "$tmp"/bitsandbytes-*.whl >/dev/null 2>&1; then
    mkdir "$tmp/x" && (cd "$tmp/x" && unzip -q "$tmp"/bitsandbytes-*.whl \
      && find . -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*cpu*' -delete \
      && zip -qr "$tmp/slim.whl" .) && mv "$tmp/slim.whl" "$CACHE/built/$bnb" || failed+=("bitsandbytes==0.50.2: repack failed")
  else
    failed+=("bitsandbytes==0.50.2: download failed")
  fi
  rm -rf "$tmp"
fi
# 5. ray: the wheel (76 MiB) holds Java workers (ray/jars, 31 MiB), RLlib and the dashboard's web pages, none of
#    which Grove uses (the dashboard is off); keep the rest (41 MiB), so it fits one folder
rayw=ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
if [ ! -f "$CACHE/built/$rayw" ]; then
  tmp=$(mktemp -d)
  if "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       "${platforms[@]}" -d "$tmp" ray==2.60.0 >/dev/null 2>&1 && [ -f "$tmp/$rayw" ]; then
    "$PY" scripts/slim_wheel.py "$tmp/$rayw" "$CACHE/built/$rayw" \
      ray/jars/ ray/rllib/ ray/dashboard/client/ || failed+=("ray==2.60.0: repack failed")
  else
    failed+=("ray==2.60.0: download failed")
  fi
  rm -rf "$tmp"
fi
# 6. onnxruntime-gpu: too large for one folder; split below
ort=onnxruntime-gpu==1.31.1
if ! ls "$CACHE/built"/onnxruntime_gpu-1.31.1-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$CACHE/built" "$ort" >/dev/null 2>&1 || failed+=("$ort: download failed")
fi

# 7. pack: one version of each package; parts and wheels into folders of at most MAX_MIB, first fit, largest first
rm -rf .whl[0-9]*
"$PY" - "$MAX_MIB" "$CACHE" <<'EOF' || failed+=("packing: see the message above")
import hashlib, os, re, shutil, sys
from pathlib import Path

max_bytes, cache = int(sys.argv[1]) * 2**20, Path(sys.argv[2])
wheels = sorted(p for d in ("dl", "built") for p in (cache / d).glob("*.whl"))
by_name = {}
for w in wheels:
    name = re.sub(r"[-_.]+", "_", w.name.split("-")[0]).lower()
    by_name.setdefault(name, []).append(w)
dupes = {n: [w.name for w in ws] for n, ws in by_name.items() if len(ws) > 1}
if dupes:
    sys.exit(f"two versions of one package in {cache}: {dupes} (delete the unwanted one)")

def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

items, whole = [], []  # (size, file name, source path or (path, offset, length), kind, wheel it belongs to)
for name, (w,) in sorted(by_name.items()):
    size = w.stat().st_size
    if size <= max_bytes - 2**20:
        items.append((size, w.name, w, "wheel", w.name))
        continue
    n = -(-size // (max_bytes - 4 * 2**20))  # parts leave room in their folder for small wheels
    step = -(-size // n)
    whole.append((w.name, size, sha(w)))
    for i in range(n):
        off = i * step
        items.append((min(step, size - off), f"{w.name}.part{i}", (w, off, min(step, size - off)), "part", w.name))
bins = []  # [used, [items]]
for it in sorted(items, key=lambda t: -t[0]):
    for b in bins:
        if b[0] + it[0] <= max_bytes:
            b[0] += it[0]; b[1].append(it); break
    else:
        bins.append([it[0], [it]])
rows = []
for i, (used, its) in enumerate(bins, 1):
    folder = Path(f".whl{i}")
    folder.mkdir()
    for size, fname, src, kind, wheel in its:
        dst = folder / fname
        if kind == "wheel":
            shutil.copyfile(src, dst)
        else:
            path, off, length = src
            with open(path, "rb") as f, open(dst, "wb") as g:
                f.seek(off); g.write(f.read(length))
        rows.append((folder.name, fname, str(size), sha(dst), kind, wheel))
for wheel, size, digest in whole:
    rows.append(("-", wheel, str(size), digest, "whole", wheel))
manifest = "folder\tfile\tsize\tsha256\tkind\twheel\n" + "".join("\t".join(r) + "\n" for r in sorted(rows))
for i in range(1, len(bins) + 1):
    Path(f".whl{i}/MANIFEST.tsv").write_text(manifest)
for i, (used, its) in enumerate(bins, 1):
    print(f".whl{i}: {len(its)} files, {used / 2**20:.1f} MiB")
print(f"{len(rows) - len(whole)} files in {len(bins)} folders; {len(by_name)} packages")
EOF

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_wheels.sh: ${#failed[@]} problem(s); the folders above are INCOMPLETE:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "Carry each folder to the GPU host in its own call and stage it: scripts/gpu_install.sh stage .whlN (docs/gpu.md)"
