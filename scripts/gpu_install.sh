#!/usr/bin/env bash
# Install Grove's GPU packages on an offline CUDA GPU host, from the folders scripts/gpu_wheels.sh built.
#
#   scripts/gpu_install.sh stage .whlN ...   copy carried folder(s) into $GROVE_WHEELS (sha256 checked); says which
#                                            folders are still missing
#   scripts/gpu_install.sh install           once every folder is staged: join the split wheels, install everything
#                                            into $GROVE_SITE (a fresh folder), then run the checks below
#   scripts/gpu_install.sh check             the checks alone: every package at its version, Olive and Grove's
#                                            patches, torch on CUDA, onnxruntime running a graph on its CUDA provider,
#                                            onnxruntime-genai, AutoAWQ, bitsandbytes
#
# Any failure stops with a message saying what is missing and a non-zero exit status; nothing is left half-installed
# ($GROVE_SITE is replaced only after pip succeeded, and marked usable only after the checks passed).
# Defaults: GROVE_WHEELS=$HOME/.grove-gpu/wheels, GROVE_SITE=$HOME/.grove-gpu/site. Then, in each shell:
#   source scripts/gpu_env.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${GROVE_WHEELS:-$HOME/.grove-gpu/wheels}
S=${GROVE_SITE:-$HOME/.grove-gpu/site}
PY=${PYTHON:-python3}
die() { echo "gpu_install.sh: ERROR: $*" >&2; exit 1; }

manifest_rows() {  # manifest_rows FILE: folder file size sha kind wheel (header dropped)
  tail -n +2 "$1"
}

missing_folders() {  # folders whose files are not all staged with the right sha256
  local m=$W/MANIFEST.tsv
  manifest_rows "$m" | while IFS=$'\t' read -r folder file size sha kind wheel; do
    [ "$kind" = whole ] && continue
    if [ ! -f "$W/$file" ] || [ "$(stat -c %s "$W/$file")" != "$size" ]; then echo "$folder"; fi
  done | sort -u -V
}

stage() {
  [ $# -gt 0 ] || die "stage needs the carried folder(s), e.g. scripts/gpu_install.sh stage .whl1"
  mkdir -p "$W" || die "cannot create $W"
  for d in "$@"; do
    [ -f "$d/MANIFEST.tsv" ] || die "$d/MANIFEST.tsv not found: is $d a folder made by scripts/gpu_wheels.sh, carried here?"
    if [ -f "$W/MANIFEST.tsv" ] && ! cmp -s "$d/MANIFEST.tsv" "$W/MANIFEST.tsv"; then
      die "$d comes from another run of gpu_wheels.sh than the folders staged in $W (rm -rf $W and stage them all again)"
    fi
    cp "$d"/* "$W"/ || die "copying $d to $W failed"
    local name; name=$(basename "$d")
    local bad
    bad=$(manifest_rows "$d/MANIFEST.tsv" | awk -F'\t' -v f="$name" -v w="$W" '$1==f {print $4"  "w"/"$2}' \
      | sha256sum -c --quiet 2>&1 | grep -v '^sha256sum: WARNING' || true)
    [ -z "$bad" ] || die "$d: files damaged in transfer (sha256 mismatch):"$'\n'"$bad"
    echo "staged $d ($(manifest_rows "$d/MANIFEST.tsv" | awk -F'\t' -v f="$name" '$1==f' | wc -l) files) into $W"
  done
  local left; left=$(missing_folders | tr '\n' ' ')
  if [ -n "$left" ]; then echo "still to stage: $left"; else echo "all folders staged: now run scripts/gpu_install.sh install"; fi
}

install() {
  [ -f "$W/MANIFEST.tsv" ] || die "nothing staged in $W: carry each .whlN folder and run scripts/gpu_install.sh stage .whlN"
  local left; left=$(missing_folders | tr '\n' ' ')
  [ -z "$left" ] || die "folders not staged yet: $left-- carry each and run scripts/gpu_install.sh stage FOLDER"
  local bad
  bad=$(manifest_rows "$W/MANIFEST.tsv" | awk -F'\t' -v w="$W" '$5!="whole" {print $4"  "w"/"$2}' \
    | sha256sum -c --quiet 2>&1 | grep -v '^sha256sum: WARNING' || true)
  [ -z "$bad" ] || die "staged files damaged (sha256 mismatch):"$'\n'"$bad"
  local joined=$W/joined; rm -rf "$joined"; mkdir -p "$joined"
  local wheels=()
  while IFS=$'\t' read -r folder file size sha kind wheel; do
    case $kind in
      wheel) wheels+=("$W/$file") ;;
      whole)
        local parts; parts=$(ls "$W/$wheel".part* | sort -V)
        # shellcheck disable=SC2086
        cat $parts > "$joined/$wheel" || die "joining $wheel failed"
        [ "$(sha256sum "$joined/$wheel" | cut -d' ' -f1)" = "$sha" ] || die "$wheel: joined parts do not match its sha256"
        wheels+=("$joined/$wheel") ;;
    esac
  done < <(manifest_rows "$W/MANIFEST.tsv")
  echo "installing ${#wheels[@]} wheels into $S ..."
  rm -rf "$S.new"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$S.new" "${wheels[@]}" \
    || die "pip install into $S.new failed (see above)"
  rm -rf "$S" && mv "$S.new" "$S" || die "cannot move $S.new to $S"
  rm -rf "$joined"
  check
}

check() {
  [ -d "$S" ] || die "$S does not exist: run scripts/gpu_install.sh install"
  rm -f "$S/.grove-ok"
  # shellcheck source=/dev/null
  GROVE_ENV_NO_CHECK=1 source "$root/scripts/gpu_env.sh"
  "$PY" "$root/scripts/gpu_check.py" --manifest "$W/MANIFEST.tsv" --site "$S" \
    || die "the GPU set is not usable (see the FAIL lines above)"
  touch "$S/.grove-ok"
  echo "Grove's GPU set is installed and works: in each shell, source scripts/gpu_env.sh"
}

cmd=${1:-}
shift || true
case $cmd in
  stage) stage "$@" ;;
  install) install ;;
  check) check ;;
  *) die "usage: scripts/gpu_install.sh stage FOLDER... | install | check" ;;
esac
