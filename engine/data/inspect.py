"""What the Model & data page shows about inputs: allowed roots and the models / datasets found under them,
template presets and the rendered training text, tokens per example, and the train/eval split with duplicates.

Pure Python over ``engine.data.prepare``; tokens are counted with the ``tokenizers`` package (no transformers). Hub
datasets are previewed in a child process (``python -m engine.data.inspect preview``) so the UI never imports
``datasets``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine import paths
from engine.data import prepare as data
from engine.errors import DataError
from engine.spec.schema import DatasetSpec

PRESETS: dict[str, str | None] = {
    "Phi-3 chat (the lab's)": "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}<|end|>",
    "Llama-3 chat": "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{response}<|eot_id|>",
    "ChatML": "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>",
    "Tokenizer's chat template": None,
    "Free text template": "",
}
TOKENIZER_PRESET = "Tokenizer's chat template"
FREE_PRESET = "Free text template"
RUN_DIR = re.compile(r"^r\d{8}-\d{6}-[0-9a-f]{4,8}$")  # a run's own folder (outputs are not inputs)
SKIP_DIRS = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    "cache",
    "tmp",
    "hf",
    "telemetry",
    ".pytest_cache",
    "catalog",
    "site-packages",
    "data",
}


# allowed roots live in engine.paths (every entrance checks them); re-exported for app/services/sources.py
allowed_roots = paths.allowed_roots
is_allowed = paths.is_allowed


def _walk(root: Path, depth: int):
    if depth < 0 or not root.is_dir():
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    yield root, entries
    for e in entries:
        if (
            e.is_dir(follow_symlinks=False)
            and e.name not in SKIP_DIRS
            and not e.name.startswith(".")
            and not RUN_DIR.match(e.name)
        ):
            yield from _walk(Path(e.path), depth - 1)


def find_models(roots: list[Path] | None = None, depth: int = 3, limit: int = 200) -> list[str]:
    """Folders with a config.json under the allowed roots (Hugging Face model folders)."""
    found: list[str] = []
    for root in roots or allowed_roots():
        for d, entries in _walk(root, depth):
            names = {e.name for e in entries}
            if "config.json" in names and "genai_config.json" not in names:
                found.append(str(d))
                if len(found) >= limit:
                    return found
    return found


def find_datasets(roots: list[Path] | None = None, depth: int = 3, limit: int = 200) -> list[str]:
    found: list[str] = []
    for root in roots or allowed_roots():
        for _d, entries in _walk(root, depth):
            for e in entries:
                if (
                    e.is_file()
                    and Path(e.name).suffix.lower() in data.SUFFIXES
                    and e.name
                    not in (
                        "config.json",
                        "tokenizer.json",
                        "tokenizer_config.json",
                        "generation_config.json",
                        "demo.json",
                        "stats.json",
                        "genai_config.json",
                        "special_tokens_map.json",
                    )
                ):
                    found.append(e.path)
                    if len(found) >= limit:
                        return found
    return found


# -- rows and templates ------------------------------------------------------------------------------------------
def read_page(path: str, page: int, size: int = 20) -> tuple[list[dict[str, Any]], int]:
    """One page of a local dataset's rows (as in the file, before mapping) and the total row count."""
    rows = data.read_rows(Path(path).expanduser())
    return [r for _, r in rows[page * size : (page + 1) * size]], len(rows)




def chat_template_of(model_dir: str | Path) -> str | None:
    """The tokenizer's own chat template (chat_template.jinja or tokenizer_config.json), if the folder has one."""
    p = Path(str(model_dir)).expanduser()
    if (p / "chat_template.jinja").is_file():
        return (p / "chat_template.jinja").read_text()
    tc = p / "tokenizer_config.json"
    if tc.is_file():
        ct = json.loads(tc.read_text()).get("chat_template")
        if isinstance(ct, list):  # named templates
            ct = next((t["template"] for t in ct if t.get("name") == "default"), None)
        return ct if isinstance(ct, str) else None
    return None


def render(row: dict[str, Any], ds: DatasetSpec, chat_template: str | None = None) -> str:
    """The training text for one (mapped) row, as the run will see it."""
    r = {ds.columns.get(k, k): v for k, v in row.items()}
    if ds.chat_template:
        if not chat_template:
            raise DataError("the model has no chat template of its own: pick a text template preset")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        msgs = r["messages"] if isinstance(r.get("messages"), list) else (
            [{"role": "system", "content": ds.system_prompt}] if ds.system_prompt else []) + [
            {"role": "user", "content": str(r.get(ds.prompt_column, ""))},
            {"role": "assistant", "content": str(r.get(ds.response_column, ""))},
        ]
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(chat_template).render(
            messages=msgs, add_generation_prompt=False, bos_token="", eos_token=""
        )
    try:
        return (ds.text_template or "").format(**r)
    except KeyError as e:
        raise DataError(
            f"the template uses column {e}, which this row does not have (columns: {', '.join(r)})"
        ) from None
    except (ValueError, IndexError) as e:
        raise DataError(f"text_template is not a valid format string: {e}") from None


def trained_parts(row: dict[str, Any], ds: DatasetSpec, chat_template: str | None) -> list[tuple[str, bool]]:
    """One (prepared) row's training text in parts, ``[(text, trained)]``: with the chat template only the
    assistant turns are trained (engine.data.chat's spans, rendered here with jinja: no transformers in the UI);
    with a text template every part is. Raises DataError like ``render``."""
    if not ds.chat_template or not isinstance(row.get("messages"), list) or not chat_template:
        return [(render(row, ds, chat_template), True)]
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from engine.data.chat import assistant_spans

    tpl = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(chat_template)
    full, spans = assistant_spans(row["messages"], lambda m, gen: tpl.render(
        messages=m, add_generation_prompt=gen, bos_token="", eos_token=""))
    parts, at = [], 0
    for s, e in spans:
        parts += [(full[at:s], False), (full[s:e], True)]
        at = e
    parts.append((full[at:], False))
    return [(t, f) for t, f in parts if t]


def format_of(path: str | Path) -> str | None:
    """The format (engine.data.formats) the local file's rows have, or None."""
    return data.detect_format(Path(str(path)).expanduser())


def template_offer(path: str | Path) -> str | None:
    """For Model & data: ``'{text}'`` when the file's rows hold the conversation already templated in a ``text``
    column (mlx-lm style), so the page can offer "train on the text as is"; None otherwise."""
    return data.template_offer(Path(str(path)).expanduser())


def tokenizer_file(model: str | Path) -> Path | None:
    p = Path(str(model)).expanduser()
    if p.is_dir():
        return p / "tokenizer.json" if (p / "tokenizer.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(str(model), "tokenizer.json")
    except Exception:  # noqa: BLE001
        return None
    return Path(hit) if isinstance(hit, str) else None


def token_lengths(texts: list[str], tok_path: Path | None) -> tuple[list[int], bool]:
    """Tokens per text with the model's tokenizer; ``(lengths, exact)``; without one, ~4 characters a token."""
    if tok_path is None:
        return [max(1, len(t) // 4) for t in texts], False
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(tok_path))
    return [len(e.ids) for e in tk.encode_batch(texts)], True


def split_stats(ds: DatasetSpec) -> dict[str, Any]:
    """Rows, train/eval sizes and duplicates between them, exactly as ``data.prepare`` splits (nothing written)."""
    rows, ev = data.load_local(ds)
    rows = [{k: data.clean(v) for k, v in r.items()} for r in rows]
    if ev is None:
        train, ev = data.split_rows(rows, ds.eval_split or 0.1, ds.split_seed)
    else:
        train = rows
    if ds.max_samples:
        train = train[: ds.max_samples]
    eval_keys = {data.key_text(r, ds) for r in ev}
    dups = sorted({data.key_text(r, ds) for r in train} & eval_keys)
    return {
        "rows": len(rows),
        "train_rows": len(train),
        "eval_rows": len(ev),
        "duplicates_train_eval": len(dups),
        "duplicate_examples": dups[:10],
        "min_eval": data.minimums(ds)[1],
        "min_train": data.minimums(ds)[0],
        "min_reason": data.minimums(ds)[2],
    }


def hub_preview(ds: DatasetSpec, n: int = 20, timeout: float = 120) -> list[dict[str, Any]]:
    """First rows of a Hugging Face dataset, fetched in a child process (needs network or a warm cache)."""
    res = subprocess.run(
        [sys.executable, "-m", "engine.data.inspect", "preview", ds.model_dump_json(), str(n)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=paths.olive_env(),
    )
    if res.returncode != 0:
        raise DataError((res.stderr.strip().splitlines() or ["could not load the dataset"])[-1])
    return json.loads(res.stdout.strip().splitlines()[-1])


def _main(argv: list[str]) -> int:
    if argv[:1] == ["preview"]:
        ds = DatasetSpec.model_validate_json(argv[1])
        try:
            rows = data.load_hub(ds)
        except DataError as e:
            print(str(e), file=sys.stderr)
            return 1
        print(json.dumps(rows[: int(argv[2])], default=str))
        return 0
    print("usage: python -m engine.data.inspect preview DATASET_JSON N", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
