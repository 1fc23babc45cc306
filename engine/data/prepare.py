"""Datasets: read a user's file (or a Hugging Face dataset), check it, split it, and write what training sees.

Reading is strict where it matters and forgiving where real files are messy: CRLF line ends, a UTF-8 BOM and
blank lines are fine; a line that is not JSON, a missing column, an empty file are refused with the file, the
line and the column named.

``prepare()`` writes a content-addressed folder ``runs/data/<key>/`` with ``train.jsonl`` and ``eval.jsonl`` and
``stats.json``. The key depends only on the data and the split settings, so two launches of the same spec point
Olive at the same files and Olive's cache is reused.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import paths
from engine.data import formats
from engine.errors import DataError
from engine.spec.schema import CONVERSATION_FORMATS, DatasetSpec, plain_fields

SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}
# Minimum sizes, and why. A held-out split (dataset.eval_split) needs MIN_EVAL_ROWS so that a score over it says
# something; a separate eval file (dataset.eval_path) was chosen on purpose, so MIN_EVAL_FILE_ROWS is enough.
# Training needs MIN_TRAIN_ROWS so that a step sees more than a handful of examples.
MIN_EVAL_ROWS = 5
MIN_EVAL_FILE_ROWS = 1
MIN_TRAIN_ROWS = 8
# A dataset whose rows hold the conversation already rendered (mlx-lm and many exports) has one of these columns.
PRETEMPLATED_COLUMNS = ("text",)


@dataclass
class Prepared:
    dir: Path
    train_path: Path
    eval_path: Path
    stats: dict[str, Any] = field(default_factory=dict)


def _check_path(p: Path, what: str) -> None:
    if not p.exists():
        raise DataError(f"{what} file not found: {p}")
    if not p.is_file():
        raise DataError(f"{what} is not a file: {p}")
    if p.suffix.lower() not in SUFFIXES:
        raise DataError(f"{what} {p}: unsupported file type '{p.suffix}'; use .jsonl, .json, .csv or .parquet")
    if not os.access(p, os.R_OK):
        raise DataError(f"{what} file is not readable: {p}")


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line or record number, row)`` from a local file; raise DataError on the first bad line."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            yield from _iter_json(path)
        elif suffix == ".csv":
            yield from _iter_csv(path)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            yield from enumerate(table.to_pylist(), start=1)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} {_where_not_utf8(path)})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _where_not_utf8(path: Path) -> str:
    """``at line L, column C (byte B)`` of the first byte that is not UTF-8: the decoder's own offset restarts with
    every buffer it reads, so the file is scanned again line by line."""
    offset = 0
    with open(path, "rb") as f:
        for ln, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                col = len(raw[: e.start].decode("utf-8", errors="replace")) + 1
                return f"at line {ln}, column {col} (byte {offset + e.start:,} of the file)"
            offset += len(raw)
    return "somewhere in the file"


class _Lines:
    """A file's lines, counted: the csv reader pulls them one by one, so ``n`` is the last physical line read."""

    def __init__(self, f: Any) -> None:
        self.f, self.n = f, 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self.f)
        self.n += 1
        return line


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """CSV rows numbered by the physical line each record starts on, as an editor shows it (a quoted field may
    span lines, so the record count and the line differ)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = _Lines(f)
        reader = csv.reader(lines)
        start = 1
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty CSV file (no header line)")
            while True:
                start = lines.n + 1
                row = next(reader, None)
                if row is None:
                    return
                if not row:  # a blank line
                    continue
                if len(row) > len(header):
                    raise DataError(f"{path} line {start}: more fields than the header has ({len(row)} against "
                                    f"{len(header)})")
                yield start, {h: (row[i] if i < len(row) else None) for i, h in enumerate(header)}
        except csv.Error as e:
            raise DataError(f"{path} line {start}: not valid CSV ({e})") from None


def _iter_json(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == "[":  # a JSON array file: each item numbered by the line it starts on
            text = f.read()
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
            yield from zip(_item_lines(text, len(data)), _objects(path, data), strict=True)
            return
        for i, line in enumerate(f, start=1):
            text = line.strip().strip("\ufeff")
            if not text:
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {i}: not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {i}: expected a JSON object, got {type(row).__name__}")
            yield i, row


def _objects(path: Path, data: list[Any]) -> Iterator[dict[str, Any]]:
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path} item {i}: expected an object with columns, got {type(row).__name__}")
        yield row


def _item_lines(text: str, n: int) -> list[int]:
    """The line each of the ``n`` items of a (valid) JSON array text starts on, as an editor shows it."""
    dec, lines, at, line, counted = json.JSONDecoder(), [], text.index("[") + 1, 1, 0
    for _ in range(n):
        while text[at] in " \t\r\n,":
            at += 1
        line += text.count("\n", counted, at)
        counted = at
        lines.append(line)
        _, at = dec.raw_decode(text, at)
    return lines


def read_rows(path: Path, *, what: str = "dataset") -> list[tuple[int, dict[str, Any]]]:
    _check_path(path, what)
    rows = list(iter_rows(path))
    if not rows:
        raise DataError(f"{what} {path} is empty: no rows")
    return rows


def template_fields(template: str) -> list[str]:
    try:
        return plain_fields(template)
    except ValueError as e:
        raise DataError(f"text_template: {e}") from None


def pretemplated_column(rows: list[dict[str, Any]]) -> str | None:
    """The column of a dataset whose rows hold the training text already rendered (a single ``text`` field with the
    conversation templated), or None. Grove then offers ``text_template: '{text}'``: train on the text as is."""
    if not rows:
        return None
    for col in PRETEMPLATED_COLUMNS:
        if all(isinstance(r.get(col), str) and r[col].strip() for r in rows):
            return col
    return None


def head_rows(path: Path, n: int = 50) -> list[dict[str, Any]]:
    """The first ``n`` rows of a local file ([] when it cannot be read: its reading error comes with the checks)."""
    try:
        _check_path(path, "dataset")
        rows = []
        for _, r in iter_rows(path):
            rows.append(r)
            if len(rows) >= n:
                break
    except DataError:
        return []
    return rows


def detect_format(path: Path, ds: DatasetSpec | None = None) -> str | None:
    """The format (engine.data.formats) of the local file at ``path``, from its first rows; None when unknown."""
    return formats.detect(head_rows(path), ds)


def template_offer(path: Path) -> str | None:
    """``'{text}'`` when the local file at ``path`` is pre-templated (see ``pretemplated_column``), else None.
    Never raises: a file that cannot be read offers nothing (its reading error comes with the checks)."""
    col = pretemplated_column(head_rows(path))
    return "{" + col + "}" if col else None


def minimums(ds: DatasetSpec) -> tuple[int, int, str]:
    """``(min train rows, min eval rows, why)`` for this dataset's settings."""
    if ds.eval_path:
        return MIN_TRAIN_ROWS, MIN_EVAL_FILE_ROWS, (
            f"training needs at least {MIN_TRAIN_ROWS} rows; the eval file (dataset.eval_path) at least "
            f"{MIN_EVAL_FILE_ROWS}")
    return MIN_TRAIN_ROWS, MIN_EVAL_ROWS, (
        f"training needs at least {MIN_TRAIN_ROWS} rows; a held-out eval split at least {MIN_EVAL_ROWS}, so that "
        "its scores mean something")


def check_sizes(ds: DatasetSpec, n_rows: int, n_train: int, n_eval: int) -> None:
    """Refuse splits below the minimums, naming the minimum, the reason and the field to change."""
    min_train, min_eval, _ = minimums(ds)
    if ds.eval_path and n_eval < min_eval:
        raise DataError(f"dataset.eval_path {ds.eval_path} has {n_eval} rows; at least {min_eval} is needed")
    if not ds.eval_path and n_eval < min_eval:
        raise DataError(
            f"eval split too small: {n_eval} rows (of {n_rows}); a held-out split needs at least {min_eval} rows so "
            "that its scores mean something. Raise dataset.eval_split, or give a separate eval file as "
            f"dataset.eval_path (it needs only {MIN_EVAL_FILE_ROWS})."
        )
    if n_train < min_train:
        where = "dataset.path" if ds.eval_path else "dataset.path (after the eval split)"
        raise DataError(f"train split too small: {n_train} rows in {where}; training needs at least {min_train}")


def resolve_format(ds: DatasetSpec, rows: list[dict[str, Any]], source: str) -> DatasetSpec:
    """``ds`` with its format filled in from ``rows`` (as in the file) when the spec leaves it out. Only the chat
    template needs it (a text template names its columns itself): conversations (messages, sharegpt, alpaca) or
    prompt/response pairs; a file of pre-rendered text is refused, with the setting to use."""
    if ds.format or not ds.chat_template:
        return ds
    fmt = formats.detect(rows, ds)
    if fmt == "text":
        raise DataError(f"{source}: {formats.offer('text', source)} (chat_template needs conversations)")
    return ds.model_copy(update={"format": fmt or "prompt_response"})


def apply_columns(rows: list[tuple[int, dict[str, Any]]], ds: DatasetSpec, source: str) -> list[tuple[int, dict[str, Any]]]:
    """Rename columns, then check each row has every column the template needs (non-empty). For the chat template
    each row also gets ``messages``: its conversation (engine.data.formats), checked turn by turn."""
    needed = ds.template_fields if not ds.text_template else template_fields(ds.text_template)
    out = []
    for ln, row in rows:
        r = {ds.columns.get(k, k): v for k, v in row.items()}
        out.append((ln, r))
    available = sorted(out[0][1]) if out else []
    for col in needed:
        if all(col not in r for _, r in out):
            hint = f" (columns: {', '.join(available)})" if available else ""
            found = formats.detect([r for _, r in out[:50]])
            offer = formats.offer(found, source) if found in CONVERSATION_FORMATS else None
            raise DataError(f"{source}: the template uses column '{col}', which the dataset does not have{hint}"
                            + (f"; {offer}" if offer else ""))
    unit = "row" if source.lower().endswith(".parquet") or "[" in source else "line"
    for ln, r in out:
        for col in needed:
            v = r.get(col)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise DataError(f"{source} {unit} {ln}: column '{col}' is missing or empty")
        if ds.chat_template:
            msgs = formats.to_messages(r, ds.format or "prompt_response", ds, f"{source} {unit} {ln}")
            if ds.format in CONVERSATION_FORMATS:
                r.clear()
            r["messages"] = msgs
    return out


def clean(v: Any) -> Any:
    if isinstance(v, str):
        return v.replace("\r\n", "\n").replace("\r", "\n").strip()
    return v


def split_rows(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, round(len(rows) * fraction))
    eval_idx = set(idx[:n_eval])
    train = [rows[i] for i in range(len(rows)) if i not in eval_idx]
    ev = [rows[i] for i in sorted(eval_idx)]
    return train, ev


def key_text(r: dict[str, Any], ds: DatasetSpec) -> str:
    """What makes two rows the same example (for duplicates between train and eval): the user turns of a
    conversation, else the template's first column."""
    if isinstance(r.get("messages"), list):
        text = " ".join(str(m.get("content", "")) for m in r["messages"] if m.get("role") == "user")
    else:
        col = ds.prompt_column if ds.chat_template else (template_fields(ds.text_template or "") or [""])[0]
        text = str(r.get(col, ""))
    return " ".join(text.lower().split())


def messages_of(r: dict[str, Any], ds: DatasetSpec) -> list[dict[str, str]]:
    """One (mapped) row as a conversation: its ``messages`` when it has them (apply_columns), else the dataset's
    system prompt, the user turn, the assistant turn."""
    if isinstance(r.get("messages"), list):
        return r["messages"]
    return formats.to_messages(r, ds.format or "prompt_response", ds, "row")


def dataset_key(ds: DatasetSpec) -> str:
    """Content address of the prepared data: file bytes (or hub coordinates) + every setting that shapes it."""
    h = hashlib.sha256()
    h.update(b"prepared-v3")  # bump when the prepared files change shape
    settings = ds.model_dump(exclude={"max_seq_len"})
    h.update(json.dumps(settings, sort_keys=True).encode())
    for p, what in ((ds.path, "dataset"), (ds.eval_path, "eval dataset")):
        if p:
            _check_path(Path(p).expanduser(), what)  # a friendly message, not a FileNotFoundError traceback
            with open(Path(p).expanduser(), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def load_local(ds: DatasetSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    assert ds.path
    src = Path(ds.path).expanduser()
    raw = read_rows(src)
    ds = resolve_format(ds, [r for _, r in raw[:50]], str(src))
    rows = apply_columns(raw, ds, str(src))
    ev = None
    if ds.eval_path:
        esrc = Path(ds.eval_path).expanduser()
        ev = [r for _, r in apply_columns(read_rows(esrc, what="eval dataset"), ds, str(esrc))]
    return [r for _, r in rows], ev


def load_hub(ds: DatasetSpec) -> list[dict[str, Any]]:
    """The Hugging Face path users take with their own data on the hub (needs network or a warm HF cache)."""
    import datasets

    try:
        d = datasets.load_dataset(ds.hf_name, ds.hf_subset, split=ds.hf_split)
    except Exception as e:  # datasets raises many types; all mean "cannot use it"
        raise DataError(f"Hugging Face dataset '{ds.hf_name}' (split {ds.hf_split}) could not be loaded: {e}") from None
    rows = [(i + 1, dict(r)) for i, r in enumerate(d)]
    if not rows:
        raise DataError(f"Hugging Face dataset '{ds.hf_name}' split {ds.hf_split} is empty")
    source = f"{ds.hf_name}[{ds.hf_split}]"
    ds = resolve_format(ds, [r for _, r in rows[:50]], source)
    return [r for _, r in apply_columns(rows, ds, source)]


def calib_text(r: dict[str, Any], ds: DatasetSpec) -> str:
    """One training row as calibration text: the text template's rendering, or a conversation's turns one after the
    other (no chat template: the prepared data does not depend on the model, and AWQ needs activations of the
    data's words, not of one model's special tokens)."""
    if ds.chat_template:
        return "\n".join(str(m.get("content", "")) for m in messages_of(r, ds))
    return (ds.text_template or "").format(**r)


def write_calib(folder: Path, train: list[dict[str, Any]], ds: DatasetSpec) -> None:
    """``folder/calib/train.jsonl``: the training rows' texts in a 'text' column, for calibration passes that load a
    dataset by folder name (Olive's AutoAWQQuantizer). Written atomically (a finished folder or none)."""
    tmp = folder / f"calib.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "train.jsonl", "w", encoding="utf-8") as f:
        for r in train:
            f.write(json.dumps({"text": calib_text(r, ds)}, ensure_ascii=False) + "\n")
    try:
        tmp.rename(folder / "calib")
    except OSError:  # another process wrote it first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)


def prepared(ds: DatasetSpec) -> Prepared:
    """Where ``prepare`` writes (or wrote) this dataset: a folder named by its content address."""
    out = paths.data_dir() / dataset_key(ds)
    return Prepared(out, out / "train.jsonl", out / "eval.jsonl")


def prepare(ds: DatasetSpec) -> Prepared:
    """Check, split and write the data training and evaluation will read. Idempotent; writes atomically. The
    one path for every dataset: the runner calls it before Olive starts (local files were already prepared at
    submit, so bad data is refused before it is queued; a Hub dataset is fetched there)."""
    prep = prepared(ds)
    out = prep.dir
    if (out / "stats.json").is_file():
        prep.stats = json.loads((out / "stats.json").read_text())
        if not (out / "calib" / "train.jsonl").is_file():  # prepared by a Grove that wrote none for conversations
            write_calib(out, [r for _, r in iter_rows(prep.train_path)], ds)
        return prep
    if ds.path:
        rows, ev = load_local(ds)
    else:
        rows, ev = load_hub(ds), None
    rows = [{k: clean(v) for k, v in r.items()} for r in rows]
    if ev is None:
        train, ev = split_rows(rows, ds.eval_split or 0.1, ds.split_seed)
    else:
        train, ev = rows, [{k: clean(v) for k, v in r.items()} for r in ev]
    if ds.max_samples:
        train = train[: ds.max_samples]
    check_sizes(ds, len(rows), len(train), len(ev))
    eval_keys = {key_text(r, ds) for r in ev}
    dups = sorted({key_text(r, ds) for r in train} & eval_keys)
    stats = {
        "rows": len(rows),
        "train_rows": len(train),
        "eval_rows": len(ev),
        "duplicates_train_eval": len(dups),
        "duplicate_examples": dups[:10],
        "split_seed": ds.split_seed,
        "source": ds.path or f"hf:{ds.hf_name}[{ds.hf_split}]",
    }
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", train), ("eval.jsonl", ev)):
        with open(tmp / name, "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    write_calib(tmp, train, ds)
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    try:
        tmp.rename(out)
    except OSError:  # another process prepared the same data first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    prep.stats = stats
    return prep
