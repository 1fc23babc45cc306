"""The one check every entrance runs: ``grove submit``, the Python API (``engine.runs.submit.submit``), the import
of an Olive config and the Workflow page's pre-flight all ask this module, so they refuse the same things with the
same words.

What it checks, without running Olive or writing anything:

- each pass type exists in this Olive (the catalog, ``engine.olive.catalog``), read as Olive reads it (without
  regard to case, a dotted type by its last part), with a close name offered;
- each parameter exists for its pass, has the type the catalog gives, is one of its choices, and lies in the
  range Olive (or the trainer under it) would accept (``RANGES``, Grove's table: Olive's metadata has no ranges);
  a LoRA-style pass's ``training_args`` are checked field by field against transformers.TrainingArguments;
- parameters Grove fills itself (``train_data_config``...) are not set by hand;
- parameters that run Python code (``user_script``, ``script_dir``, functions named by string) need
  ``allow_user_code: true``, and then still warn;
- the model: a local folder (exists, has config.json, inside the allowed roots, ``auto_map`` needs
  ``trust_remote_code``) or a Hugging Face id (a name that looks like a path but is no folder is refused);
- the dataset files: exist, are files of a known type, lie inside the allowed roots (after symlinks).

``problems(spec)`` returns findings; ``refuse(spec)`` raises ``SpecError`` with every error in it;
``draft_findings(draft)`` is what the pre-flight adds to its own findings; ``load_spec`` wraps
``engine.spec.schema.load_spec`` to offer ``{text}`` for a pre-templated dataset and ``format:`` for conversations.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from engine import paths
from engine.data import prepare as data
from engine.errors import DataError, SpecError
from engine.spec.passes import GROVE_FILLED, canonical_pass_type
from engine.spec.schema import RunSpec, parse_spec
from engine.spec.schema import load_spec as _load_spec

Finding = dict[str, str]  # {"level": "error"|"warning"|"info", "where": field path, "message": ..., "fix": ...}

# Values Olive or the trainer would refuse (or that make no sense), by parameter name; Olive's metadata has types,
# not ranges. (lower, lower inclusive, upper, upper inclusive, allowed exceptions)
RANGES: dict[str, tuple[float | None, bool, float | None, bool, tuple[Any, ...]]] = {
    "r": (0, False, None, False, ()),
    "alpha": (0, False, None, False, ()),
    "lora_dropout": (0, True, 1, False, ()),
    "max_steps": (0, False, None, False, (-1,)),
    "num_train_epochs": (0, False, None, False, ()),
    "learning_rate": (0, False, None, False, ()),
    "per_device_train_batch_size": (1, True, None, False, ()),
    "per_device_eval_batch_size": (1, True, None, False, ()),
    "gradient_accumulation_steps": (1, True, None, False, ()),
    "warmup_ratio": (0, True, 1, True, ()),
    "warmup_steps": (0, True, None, False, ()),
    "weight_decay": (0, True, None, False, ()),
    "max_grad_norm": (0, True, None, False, ()),
    "logging_steps": (0, False, None, False, ()),
    "eval_steps": (0, False, None, False, ()),
    "save_steps": (0, False, None, False, ()),
    "seed": (0, True, None, False, ()),
}
CODE_PARAMS = {"user_script", "script_dir"}
DATA_PARAMS = {"train_data_config", "eval_data_config", "data_config", "calibration_data_config"}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _f(level: str, where: str, message: str, fix: str = "") -> Finding:
    return {"level": level, "where": where, "message": message, "fix": fix}


def _close(name: str, options: list[str]) -> str:
    by_case = [o for o in options if o.lower() == name.lower()]
    near = by_case or difflib.get_close_matches(name, options, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(near)}?)" if near else ""


# -- types -----------------------------------------------------------------------------------------------------------
def _split_union(inner: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for c in inner:
        if c == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += c in "[" and 1 or c in "]" and -1 or 0
        cur += c
    return out + [cur.strip()] if cur.strip() else out


def _type_error(v: Any, t: str) -> str | None:
    """Why ``v`` is not of catalog type ``t`` (``int``, ``Optional[float]``, ``list[str]``...), or None. Types this
    cannot judge (Olive classes) pass."""
    t = t.strip()
    if t.startswith("Optional[") and t.endswith("]"):
        return None if v is None else _type_error(v, t[9:-1])
    if t.startswith("Union[") and t.endswith("]"):
        members = _split_union(t[6:-1])
        errs = [_type_error(v, m) for m in members]
        return None if any(e is None for e in errs) else errs[0]
    if t in ("None", "NoneType", "Any", "") or "." in t.split("[")[0]:
        return None
    if t == "int":
        ok = isinstance(v, int) and not isinstance(v, bool)
        return None if ok else f"must be an integer, not {v!r}"
    if t == "float":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        return None if ok else f"must be a number, not {v!r}"
    if t == "bool":
        return None if isinstance(v, bool) else f"must be true or false, not {v!r}"
    if t == "str":
        return None if isinstance(v, str) else f"must be a string, not {v!r}"
    if t.startswith(("list", "tuple")):
        return None if isinstance(v, list) else f"must be a list, not {v!r}"
    if t.startswith("dict"):
        return None if isinstance(v, dict) else f"must be a mapping, not {v!r}"
    return None


def _range_error(name: str, v: Any) -> str | None:
    rng = RANGES.get(name)
    if rng is None or not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    lo, lo_inc, hi, hi_inc, extra = rng
    if v in extra:
        return None
    if lo is not None and (v < lo or (v == lo and not lo_inc)):
        msg = f"must be {'>=' if lo_inc else '>'} {lo:g}"
        return msg + (f" (or {', '.join(map(str, extra))})" if extra else "")
    if hi is not None and (v > hi or (v == hi and not hi_inc)):
        return f"must be {'<=' if hi_inc else '<'} {hi:g}"
    return None


def value_error(name: str, v: Any, meta: dict[str, Any]) -> str | None:
    """Why Olive would refuse ``v`` for parameter ``name`` with catalog metadata ``meta``, or None."""
    if v == "DEFAULT_VALUE" or v is None and not meta.get("required"):
        return None
    choices = meta.get("choices")
    if choices:
        if v in choices or str(v) in [str(c) for c in choices]:
            return None
        return f"{v!r} is not one of {', '.join(map(str, choices))}"
    return _type_error(v, str(meta.get("type") or "")) or _range_error(name, v)


# -- passes ----------------------------------------------------------------------------------------------------------
def _code_in(v: Any) -> bool:
    if isinstance(v, dict):
        return any(k in CODE_PARAMS or _code_in(x) for k, x in v.items()) or (
            isinstance(v.get("type"), str) and "components" in v
        )
    if isinstance(v, list):
        return any(_code_in(x) for x in v)
    return False


def _pass_problems(i: int, p: dict[str, Any], catalog: dict[str, Any], allow_code: bool) -> list[Finding]:
    t = canonical_pass_type(str(p.get("type") or ""), catalog)  # as Olive resolves it: without regard to case
    meta = catalog.get(t)
    if meta is None:
        return [_f("error", f"passes.{i}.type", f"'{t}' is not a pass of this Olive{_close(t, list(catalog))}",
                   "pick a pass type from Olive's catalog (the Workflow page lists them)")]
    out: list[Finding] = []
    known = meta.get("params") or {}
    for group in ("params", "search"):
        for k, v in (p.get(group) or {}).items():
            where = f"passes.{i}.{group}.{k}"
            if k == "type":
                out.append(_f("error", where, "a parameter cannot change the pass type", f"remove {k} from {group}"))
                continue
            if k not in known:
                out.append(_f("error", where, f"{t} has no parameter '{k}'{_close(k, list(known))}",
                              "remove it or correct its name"))
                continue
            mp = known[k]
            if k in DATA_PARAMS or t in GROVE_FILLED.get(k, ()):
                if _code_in(v) and not allow_code:
                    out.append(_f("error", where, "this data config runs Python code (user_script/script_dir or "
                                  "custom components)", "remove it: Grove wires the run's dataset into the pass"))
                else:
                    out.append(_f("error", where, "Grove fills this from the run's dataset",
                                  "remove it and set the dataset on Model & data (dataset: in a spec)"))
                continue
            if k in CODE_PARAMS or (mp.get("category") == "object" and isinstance(v, str)):
                if not allow_code:
                    out.append(_f("error", where, f"'{k}' makes Olive run Python code",
                                  "remove it, or set allow_user_code: true if you trust that code"))
                    continue
                out.append(_f("warning", where, f"'{k}' makes Olive run Python code (allow_user_code is on)",
                              "run only code you trust"))
            values = v if group == "search" else [v]
            for j, x in enumerate(values):
                w = f"{where}.{j}" if group == "search" else where
                out += _value_findings(w, k, x, mp)
    return out


def _value_findings(where: str, k: str, v: Any, mp: dict[str, Any]) -> list[Finding]:
    fields = mp.get("fields")
    if fields and isinstance(v, dict):
        out = []
        for fk, fv in v.items():
            if fk not in fields:
                hint = " (renamed eval_strategy)" if fk == "evaluation_strategy" else _close(fk, list(fields))
                out.append(_f("error", f"{where}.{fk}", f"not a training argument{hint}; Olive would ignore it",
                              "remove it or correct its name"))
                continue
            why = value_error(fk, fv, fields[fk])
            if why:
                out.append(_f("error", f"{where}.{fk}", why, f"fix {fk}"))
        return out
    why = value_error(k, v, mp)
    return [_f("error", where, why, f"fix {k}")] if why else []


# -- model and data --------------------------------------------------------------------------------------------------
def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.endswith("/") or \
        not HUB_ID.match(name)


def _model_problems(spec: RunSpec) -> list[Finding]:
    m = spec.model
    name = m.name.strip()
    p = Path(name).expanduser()
    if not p.exists():
        if looks_like_path(name):
            return [_f("error", "model.name", f"model folder not found: {p.resolve()} (read as a path from "
                       f"{Path.cwd()}; it is not a Hugging Face id)",
                       "give an existing folder (an absolute path is safest) or a Hugging Face id like org/name")]
        return [_f("info", "model.name", f"'{name}' is not a folder here ({Path.cwd()}): taken as a Hugging Face id",
                   "give a path starting with / or ./ if you meant a local folder")]
    out: list[Finding] = []
    rp = p.resolve()
    if not paths.is_allowed(rp):
        out.append(_f("error", "model.name", f"{rp} is outside the allowed roots "
                      f"({', '.join(map(str, paths.allowed_roots()))})",
                      "move the model under GROVE_HOME or add its folder to GROVE_ALLOWED_ROOTS (a:b:c)"))
    problem = paths.model_folder_problem(rp)
    if problem == "file":
        return out + [_f("error", "model.name", f"model.name must be a folder with config.json, not a file: {rp}",
                         "give the model's folder")]
    if problem == "no_config":
        return out + [_f("error", "model.name", f"model folder {rp} has no config.json: is it a Hugging Face model "
                         "folder?", "give the folder that holds config.json")]
    out += model_files_problems(rp)
    cfg = rp / "config.json"
    try:
        auto_map = json.loads(cfg.read_text(encoding="utf-8")).get("auto_map")
    except (OSError, ValueError, AttributeError):
        auto_map = None
    if auto_map and not m.trust_remote_code:
        out.append(_f("error", "model.trust_remote_code", f"{cfg} has auto_map: this model ships its own Python code",
                      "set model.trust_remote_code: true if you trust its authors, or pick another model"))
    elif auto_map:
        out.append(_f("warning", "model.trust_remote_code", f"{cfg} has auto_map: the run executes the model's own "
                      "Python code (trust_remote_code is on)", "run only models whose authors you trust"))
    return out


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.pth")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_SETS = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("vocab.txt",),
                  ("spiece.model",))


def model_files_problems(folder: Path) -> list[Finding]:
    """A model folder that holds config.json but no weights (or no tokenizer) would be queued and fail in its
    first pass: refuse it here, naming what is missing. Sharded weights: every shard the index names must be there."""
    out: list[Finding] = []
    index = next((folder / n for n in WEIGHT_INDEXES if (folder / n).is_file()), None)
    if index is not None:
        try:
            shards = sorted(set((json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}).values()))
        except (OSError, ValueError, AttributeError):
            shards = []
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            out.append(_f("error", "model.name", f"model folder {folder} lacks {len(missing)} weight shard(s) that "
                          f"{index.name} names: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                          "copy the whole model folder (every shard)"))
    elif not any(any(folder.glob(pat)) for pat in WEIGHT_PATTERNS):
        out.append(_f("error", "model.name", f"model folder {folder} has config.json but no weights (no "
                      "*.safetensors, pytorch_model*.bin or a sharded index)",
                      "copy the model's weight files into the folder (a download may have stopped half-way)"))
    if not any(all((folder / n).is_file() for n in names) for names in TOKENIZER_SETS):
        out.append(_f("error", "model.name", f"model folder {folder} has no tokenizer (none of tokenizer.json, "
                      "tokenizer.model, vocab.json + merges.txt, vocab.txt)",
                      "copy the tokenizer files beside config.json"))
    return out


def _dataset_problems(spec: RunSpec) -> list[Finding]:
    ds = spec.dataset
    out: list[Finding] = []
    if ds is None:
        return out
    for field, value in (("dataset.path", ds.path), ("dataset.eval_path", ds.eval_path)):
        if not value:
            continue
        p = Path(value).expanduser()
        try:
            data._check_path(p, field)
        except DataError as e:
            out.append(_f("error", field, str(e), "give an existing .jsonl, .json, .csv or .parquet file"))
            continue
        if not paths.is_allowed(p):
            out.append(_f("error", field, f"{p.resolve()} is outside the allowed roots "
                          f"({', '.join(map(str, paths.allowed_roots()))})",
                          "move the file under GROVE_HOME or add its folder to GROVE_ALLOWED_ROOTS (a:b:c)"))
    return out


def _benchmark_problems(spec: RunSpec) -> list[Finding]:
    """Each benchmark task must be defined somewhere: in its include_path (a folder or YAML file inside the allowed
    roots) or among the tasks lm-eval ships (which read their data from the hub at run time)."""
    from engine.data.benchmark_task import task_file

    out: list[Finding] = []
    for i, b in enumerate(spec.evaluation.benchmarks):
        where = f"evaluation.benchmarks.{i}"
        if b.include_path:
            p = Path(b.include_path).expanduser()
            if not p.exists():
                out.append(_f("error", f"{where}.include_path", f"not found: {p.resolve()} (read from {Path.cwd()})",
                              "give the folder (or YAML file) of lm-eval task definitions"))
                continue
            if not paths.is_allowed(p):
                out.append(_f("error", f"{where}.include_path", f"{p.resolve()} is outside the allowed roots "
                              f"({', '.join(map(str, paths.allowed_roots()))})",
                              "move the tasks under GROVE_HOME or add their folder to GROVE_ALLOWED_ROOTS (a:b:c)"))
                continue
            if task_file(b.task, str(p.resolve())) is None:
                out.append(_f("error", f"{where}.task", f"no task '{b.task}' is defined in {p.resolve()}",
                              "name a task that a YAML file there defines (its 'task:' line)"))
        elif task_file(b.task, None) is None:
            out.append(_f("error", f"{where}.task", f"'{b.task}' is not a task lm-eval ships",
                          "check the name (lm_eval ls tasks), or set include_path to the folder of your own task"))
        else:
            out.append(_f("info", f"{where}.task", f"'{b.task}' is lm-eval's own task: its data is read from the "
                          "Hugging Face hub when the run starts (the machine needs access to it)"))
    return out


# -- entry points ----------------------------------------------------------------------------------------------------
def _catalog() -> dict[str, Any] | None:
    from engine.olive import catalog

    try:
        return catalog.load()["passes"]
    except RuntimeError:  # Olive cannot be imported here: the run would fail anyway; the other checks still run
        return None


def problems(spec: RunSpec, *, catalog: dict[str, Any] | None = None, files: bool = True) -> list[Finding]:
    """Every finding for a parsed spec. ``catalog``: ``engine.olive.catalog.load()["passes"]`` (loaded when None).
    ``files``: check the model folder and dataset files too (off for an imported draft still being edited)."""
    catalog = _catalog() if catalog is None else catalog
    out: list[Finding] = []
    if files:
        out += _model_problems(spec)
        out += _dataset_problems(spec)
        out += _benchmark_problems(spec)
    if catalog:
        for i, p in enumerate(spec.passes):
            out += _pass_problems(i, p.model_dump(), catalog, spec.allow_user_code)
    return out


def refuse(spec: RunSpec, *, catalog: dict[str, Any] | None = None, source: str = "") -> list[Finding]:
    """Raise ``SpecError`` with every error ``problems`` finds (field path, message and fix); return the rest."""
    found = problems(spec, catalog=catalog)
    errors = [(f["where"], f["message"] + (f"; {f['fix']}" if f["fix"] else "")) for f in found
              if f["level"] == "error"]
    if errors:
        raise SpecError(errors, source=source)
    return found


def draft_findings(draft: dict[str, Any], catalog: dict[str, Any] | None) -> list[Finding]:
    """For the pre-flight (engine.views.preflight.check): what this module finds that the pre-flight does not check
    itself. A draft that does not parse yields nothing here (the pre-flight reports the spec's own errors)."""
    from engine.spec import drafts

    try:
        spec = parse_spec(drafts.to_spec_dict(draft))
    except SpecError:
        return []
    # the pre-flight already names unknown pass types and parameters, missing model folders and dataset files
    covered = ("is not a pass of this Olive", "has no parameter", "model folder not found", "file not found",
               "has no config.json", "has auto_map: this model")
    found = problems(spec, catalog=catalog or {}, files=True)
    return [f for f in found if not any(s in f["message"] for s in covered)]


def load_spec(path: str | Path) -> RunSpec:
    """``engine.spec.schema.load_spec``, and when the dataset has no template but its rows hold the conversation
    already rendered in a ``text`` column, say so and offer ``text_template: '{text}'``."""
    try:
        return _load_spec(path)
    except SpecError as e:
        offer = _template_offer_for(path, e)
        if offer:
            e.problems.append(("dataset.text_template", offer))
            raise SpecError(e.problems, source=str(path)) from None
        raise


def template_offer_message(dataset_path: str) -> str | None:
    """The setting a dataset's own shape calls for, in words, or None (for the CLI and Model & data): a
    pre-templated 'text' column, or conversations (messages, ShareGPT, Alpaca) for the chat template."""
    from engine.data import formats

    fmt = data.detect_format(Path(dataset_path).expanduser())
    return formats.offer(fmt, dataset_path) if fmt in ("text", *formats.CONVERSATION_FORMATS) else None


def _template_offer_for(path: str | Path, e: SpecError) -> str | None:
    if not any("text_template" in msg for _, msg in e.problems):
        return None
    try:
        import yaml

        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        ds_path = ((raw or {}).get("dataset") or {}).get("path")
    except Exception:  # noqa: BLE001 - the offer is a courtesy; the spec's own error stands
        return None
    return template_offer_message(str(ds_path)) if isinstance(ds_path, str) else None
