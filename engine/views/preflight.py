"""Pre-flight check of a draft before launch: every problem Grove can see now, each with what to change.

``check()`` returns findings ``{"level": "error"|"warning"|"info", "where": str, "message": str, "fix": str}``.
Errors block the launch; warnings do not. It looks at: the spec's own validation (field paths), the model
folder, the dataset (readable, template columns, split sizes, duplicates, examples longer than max_seq_len),
each pass against the target (device, execution provider, precision, GPU-only passes, dataset need, required
parameters, packages, order), GPUs wanted vs present, and the memory estimate of each pass vs a run slot.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from engine import machine, paths
from engine.data import inspect as dataview
from engine.errors import DataError, SpecError
from engine.models import tokens
from engine.olive import validate
from engine.spec import drafts
from engine.spec.passes import ADAPTER_PASSES, GPU_ONLY, GROVE_FILLED, ONNX_PRODUCERS
from engine.spec.schema import DatasetSpec, parse_spec
from engine.views import dataset, estimate
from engine.views.format import estimate_gb

PAGE = {"model": "Model & data", "dataset": "Model & data"}


def _f(level: str, where: str, message: str, fix: str = "") -> dict[str, str]:
    return {"level": level, "where": where, "message": message, "fix": fix}


def _spec_findings(spec_dict: dict[str, Any]) -> tuple[Any, list[dict[str, str]]]:
    try:
        return parse_spec(spec_dict), []
    except SpecError as e:
        out = []
        for path, msg in e.problems:
            page = PAGE.get((path or "").split(".")[0], "Workflow")
            out.append(_f("error", path or "(spec)", msg, f"fix '{path or 'the spec'}' on the {page} page"))
        return None, out


def _model_findings(draft: dict[str, Any], card: dict[str, Any] | None) -> list[dict[str, str]]:
    m = draft.get("model") or {}
    name = (m.get("name") or "").strip()
    if not name:
        return [
            _f("error", "model.name", "no model chosen", "pick a model folder or a Hugging Face id on Model & data")
        ]
    out = []
    p = Path(name).expanduser()
    local = name.startswith(("/", ".", "~")) or p.exists()
    if local:
        problem = paths.model_folder_problem(p)
        if problem in ("missing", "file"):
            out.append(
                _f("error", "model.name", f"model folder not found: {p}", "pick an existing folder on Model & data")
            )
        elif problem == "no_config":
            out.append(_f("error", "model.name", f"{p} has no config.json", "pick a Hugging Face model folder"))
        else:  # (outside the allowed roots: engine.olive.validate's error, added by check())
            out += _token_findings(p)
    elif card is None:
        out.append(
            _f(
                "info",
                "model.name",
                f"'{name}' is not in the local Hugging Face cache: the run downloads it",
                "make sure the worker's machine can reach huggingface.co (or pre-download it)",
            )
        )
    if card and card.get("remote_code") and not m.get("trust_remote_code"):
        out.append(
            _f(
                "error",
                "model.trust_remote_code",
                "this model ships its own Python code (auto_map in config.json)",
                "opt in to trust_remote_code on Model & data if you trust its authors",
            )
        )
    return out


_TOKEN_CHECKS: dict[tuple[Any, ...], dict[str, Any]] = {}
_TOKEN_LOCK = threading.Lock()


def _in_child(store: dict[tuple[Any, ...], dict[str, Any]], key: tuple[Any, ...], args: list[str], *,
              stdin: str | None = None, failed: dict[str, Any], extra: dict[str, Any] | None = None,
              wait: bool = False) -> dict[str, Any] | None:
    """``python -m engine.models.tokens ARGS`` in a child process on a background thread, its JSON answer kept in
    ``store`` under ``key`` (``failed`` plus the error when it could not run; ``extra`` added to either). None while
    it runs; ``wait`` blocks until it is done."""

    def work() -> None:
        try:
            p = subprocess.run([sys.executable, "-m", "engine.models.tokens", *args], input=stdin,
                               capture_output=True, text=True, timeout=300)
            result = json.loads(p.stdout)
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            result = {**failed, "error": f"{type(e).__name__}: {e}"}
        result.update(extra or {})
        with _TOKEN_LOCK:
            store[key] = result

    with _TOKEN_LOCK:
        started = key in store
        if not started:
            store[key] = {"running": True}
    if not started:
        t = threading.Thread(target=work, name="grove-tokens", daemon=True)
        t.start()
        if wait:
            t.join()
    elif wait:
        while store[key].get("running"):
            threading.Event().wait(0.2)
    r = store[key]
    return None if r.get("running") else r


def token_check(folder: Path, wait: bool = False) -> dict[str, Any] | None:
    """engine.models.tokens' check (transformers vs onnxruntime-genai token ids) in a child process, so the UI process
    never imports either; reused while the folder's tokenizer files are unchanged. Started in the background: None
    while it runs (``wait`` blocks until it is done)."""
    return _in_child(_TOKEN_CHECKS, tokens._signature(folder), [str(folder), "--json"], failed={"ok": False}, wait=wait)


_ROUND_TRIPS: dict[tuple[Any, ...], dict[str, Any]] = {}
_EXAMPLES: dict[tuple[Any, ...], str | None] = {}


def _first_example(ds_dict: dict[str, Any], folder: Path) -> str | None:
    """The round trip's request for the dataset's first row: its training text and its conversation (JSON); None
    when the data or template cannot be read (the dataset findings say why) or the row has no prompt/response."""
    try:
        ds = DatasetSpec.model_validate(ds_dict)
        from engine.data import prepare

        rows, _ = prepare.load_local(ds)
        row = rows[0]
        train_text = dataview.render(row, ds, dataview.chat_template_of(folder))
    except Exception:  # noqa: BLE001
        return None
    if not isinstance(row.get("messages"), list) and (ds.prompt_column not in row or ds.response_column not in row):
        return None
    return json.dumps({"train_text": train_text, "messages": prepare.messages_of(row, ds), "chat": ds.chat_template,
                       "max_len": ds.max_seq_len}, ensure_ascii=False)


def round_trip(draft: dict[str, Any], wait: bool = False) -> dict[str, Any] | None:
    """The chat-template round trip of the dataset's first example (``engine.models.tokens.round_trip``: the
    training text, the tokenizer's chat template and onnxruntime-genai's chat prompt), computed in a child process
    so the UI process never imports transformers or onnxruntime-genai, and reused while the model's tokenizer files,
    the example and the template are unchanged. ``{}`` when it does not apply (no local model folder with a
    tokenizer, no local dataset, a row without prompt and response columns); None while it runs."""
    ds_dict = {k: v for k, v in (draft.get("dataset") or {}).items() if v is not None and not k.startswith("_")}
    name = ((draft.get("model") or {}).get("name") or "").strip()
    folder = Path(name).expanduser() if name else None
    if not folder or not folder.is_dir() or not (folder / "config.json").is_file() or not ds_dict.get("path"):
        return {}
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        return {}
    src = Path(str(ds_dict["path"])).expanduser()
    try:
        st_ = src.stat()
    except OSError:
        return {}
    sig = tokens._signature(folder)
    ex_key = (json.dumps(ds_dict, sort_keys=True, default=str), st_.st_size, st_.st_mtime_ns, sig)
    if ex_key not in _EXAMPLES:  # read and render the first example once per file and settings, not per page run
        _EXAMPLES[ex_key] = _first_example(ds_dict, folder)
    req = _EXAMPLES[ex_key]
    if req is None:
        return {}
    return _in_child(_ROUND_TRIPS, (sig, req), [str(folder), "--round-trip"], stdin=req, failed={},
                     extra={"example": json.loads(req)["messages"]}, wait=wait)


def _round_trip_findings(draft: dict[str, Any]) -> list[dict[str, str]]:
    r = round_trip(draft)
    if r is None:
        return [_f("info", "dataset", "rendering one example three ways (training text, the tokenizer's chat template, "
                   "onnxruntime-genai's chat prompt) in the background")]
    if not r or r.get("error") or r.get("ok") is None:
        return []
    if r["ok"]:
        return [_f("info", "dataset", "chat-template round trip: chat asks in the format the model is trained on")]
    field = "dataset.chat_template" if (draft.get("dataset") or {}).get("chat_template") else "dataset.text_template"
    return [_f("error", field, f"the training text and the prompt chat builds describe different conversations: "
               f"{r['problem']}", "use the tokenizer's chat template (chat_template: true), or write the text template "
               "with this model's turn markers (see the three renderings below)")]


def _token_findings(folder: Path) -> list[dict[str, str]]:
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        return []
    r = token_check(folder)
    if r is None:
        return [_f("info", "model.name", "checking that transformers and onnxruntime-genai tokenize this model the same "
                   "way (a few seconds, in the background)")]
    if r.get("error") or r.get("ok"):
        return []  # a tokenizer onnxruntime-genai cannot read at all is reported by the build, not guessed here
    m = r.get("mismatch") or {}
    return [_f("error", "model.name",
               f"transformers and onnxruntime-genai tokenize this model differently (prompt {m.get('prompt_index')}, "
               f"token {m.get('position')}: {m.get('transformers_ids')} vs {m.get('genai_ids')}); a fine-tune and "
               "its ONNX build would read different text", "fix the tokenizer files (engine/models/smollm.py shows "
               "the usual repair: a ByteLevel decoder and tokenizer_class GPT2Tokenizer)")]


def _dataset_findings(ds_dict: dict[str, Any] | None, tok_model: str, needs: list[str]) -> list[dict[str, str]]:
    if not ds_dict:
        if needs:
            return [
                _f(
                    "error",
                    "dataset",
                    f"{', '.join(needs)} need(s) a dataset and none is chosen",
                    "choose a dataset on Model & data",
                )
            ]
        return []
    try:
        ds = DatasetSpec.model_validate({k: v for k, v in ds_dict.items() if v is not None})
    except Exception:  # noqa: BLE001 - the spec findings already name the field
        return []
    if ds.hf_name:
        return [
            _f(
                "info",
                "dataset.hf_name",
                f"Hugging Face dataset '{ds.hf_name}' is fetched and checked when the run starts",
                "preview it on Model & data first if the machine has network",
            )
        ]
    out = []
    p = Path(ds.path or "").expanduser()
    if not dataview.is_allowed(p):
        out.append(
            _f("warning", "dataset.path", f"{p} is outside the allowed roots", "add its folder to GROVE_ALLOWED_ROOTS")
        )
    try:
        stats = dataview.split_stats(ds)
    except DataError as e:
        return out + [_f("error", "dataset", str(e), "fix the file, or the column mapping / template on Model & data")]
    if stats["eval_rows"] < stats["min_eval"] or stats["train_rows"] < stats["min_train"]:
        out.append(
            _f(
                "error",
                "dataset.eval_split",
                f"split too small: {stats['train_rows']} train / {stats['eval_rows']} eval rows "
                f"(at least {stats['min_train']} / {stats['min_eval']})",
                "use more rows or raise eval_split",
            )
        )
    if stats["duplicates_train_eval"]:
        out.append(
            _f(
                "warning",
                "dataset",
                f"{stats['duplicates_train_eval']} prompt(s) appear in both train and eval",
                "deduplicate the file, or accept optimistic eval scores",
            )
        )
    try:
        r = dataset.rendered(ds, tok_model, limit=2000)
        lens, exact = r["lengths"], r["exact"]
    except DataError as e:
        return out + [_f("error", "dataset", str(e), "pick another template preset on Model & data")]
    cut = sum(n > ds.max_seq_len for n in lens)
    if cut:
        out.append(
            _f(
                "warning",
                "dataset.max_seq_len",
                f"{cut} of {len(lens)} examples are longer than max_seq_len {ds.max_seq_len}"
                + ("" if exact else " (estimated: no tokenizer.json)")
                + " and will be cut",
                f"raise max_seq_len to {max(lens)} to keep them whole, or accept truncation",
            )
        )
    return out


def _pass_findings(
    passes: list[dict[str, Any]], target: dict[str, Any], has_data: bool, catalog: dict[str, Any] | None
) -> tuple[list[dict[str, str]], list[str]]:
    out: list[dict[str, str]] = []
    needs_data: list[str] = []
    device, ep, prec = target.get("device", "cpu"), target.get("execution_provider", ""), target.get("precision", "")
    for i, p in enumerate(passes):
        t, where = p.get("type", "?"), f"passes.{i} ({p.get('name') or p.get('type', '?').lower()})"
        prior = [q.get("type") for q in passes[:i]]
        if t in ADAPTER_PASSES:
            needs_data.append(t)
            onnx = [q for q in prior if q in ONNX_PRODUCERS]
            if onnx:
                out.append(
                    _f(
                        "error",
                        where,
                        f"{t} fine-tunes a PyTorch model but comes after {onnx[0]} (ONNX)",
                        f"move {t} above {onnx[0]}",
                    )
                )
        if t == "ExtractAdapters":
            if not any(q in ONNX_PRODUCERS for q in prior):
                out.append(_f("error", where, "ExtractAdapters works on an ONNX model", "put ModelBuilder before it"))
            if not any(q in ADAPTER_PASSES for q in prior):
                out.append(
                    _f(
                        "warning",
                        where,
                        "no adapter to extract: no LoRA-style pass before it",
                        "add LoRA earlier, or remove ExtractAdapters",
                    )
                )
        if device == "cpu" and t in GPU_ONLY:
            out.append(
                _f(
                    "error",
                    where,
                    f"{t} cannot run on a CPU target: {GPU_ONLY[t]}",
                    f"set the target device to GPU (on a machine with one), or remove {t}",
                )
            )
        if catalog is None:
            continue
        meta = catalog.get(t)
        if meta is None:
            out.append(
                _f("error", where, f"{t} is not a pass of this Olive version", "pick a pass from the catalog list")
            )
            continue
        if meta.get("import_error"):
            out.append(
                _f(
                    "error",
                    where,
                    f"{t} cannot be loaded here: {meta['import_error'][:200]}",
                    "install its packages, or remove it",
                )
            )
        accs = meta.get("accelerators") or []
        if accs and device not in accs and "any" not in accs:
            out.append(
                _f(
                    "error",
                    where,
                    f"{t} runs on {', '.join(accs)}, not on a {device} target",
                    f"set the target device to {accs[0]}, or remove {t}",
                )
            )
        provs = meta.get("providers") or []
        if provs and ep not in provs:
            out.append(_f("error", where, f"{t} does not support {ep}", f"pick one of: {', '.join(provs[:4])}"))
        precs = meta.get("precisions") or []
        if precs and len(precs) < 10 and prec not in precs:
            out.append(
                _f(
                    "warning",
                    where,
                    f"{t} produces {', '.join(precs)}; the target precision is {prec}",
                    "change the target precision, or the pass",
                )
            )
        if meta.get("dataset") in ("dataset_required", "dataset"):
            needs_data.append(t)
        if meta.get("missing_packages"):
            out.append(
                _f(
                    "info",
                    where,
                    f"packages Olive lists for {t} are not installed: {', '.join(meta['missing_packages'])}",
                    "pip install them if the run fails with a missing module (Olive's list is not always needed)",
                )
            )
        params = meta.get("params") or {}
        if not p.get("raw"):
            unknown = sorted(set(p.get("params") or {}) - set(params))
            if unknown:
                out.append(
                    _f(
                        "error",
                        where,
                        f"{t} has no parameter(s) {', '.join(unknown)}",
                        "remove them, or import the pass as raw JSON",
                    )
                )
        for k, meta_p in params.items():
            filled = t in GROVE_FILLED.get(k, ()) and has_data
            if (
                meta_p.get("required")
                and meta_p.get("default") in (None, [], {})
                and not filled
                and k not in (p.get("params") or {})
                and k not in (p.get("search") or {})
            ):
                out.append(
                    _f(
                        "error",
                        where,
                        f"{t} needs '{k}' ({meta_p.get('description', '')[:120]})",
                        f"set '{k}' in the pass's parameters"
                        + (" (Grove does not wire datasets into it yet)" if "data" in k else ""),
                    )
                )
    return out, needs_data


def _resource_findings(draft: dict[str, Any], gpus_available: int, slots: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    want = int((draft.get("resources") or {}).get("gpus") or 0)
    if machine.gpus_short(want, gpus_available) is not None:
        out.append(
            _f(
                "error",
                "resources.gpus",
                f"the run asks for {want} GPU(s); this machine has {gpus_available}",
                "set the target device to CPU, or launch on a machine with GPUs",
            )
        )
    if not slots.get("workers"):
        out.append(
            _f(
                "warning",
                "worker",
                "no worker is running: the run will wait in the queue",
                "start Grove with ./grove up",
            )
        )
    return out


def memory_rows(
    draft: dict[str, Any], card: dict[str, Any] | None, machine: dict[str, Any], slots: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per planned pass: estimated peak memory and the slot it runs in."""
    if not card or not estimate.params_of(card):
        return []
    target = draft.get("target") or {}
    device = target.get("device", "cpu")
    seq = int(((draft.get("dataset") or {}).get("max_seq_len")) or 512)
    est = estimate.plan_memory(card, draft.get("passes") or [], seq_len=seq, device=device)
    cpu_slots = max(1, slots.get("cpu") or 1)
    ram_slot = (machine.get("ram") or 0) // cpu_slots
    gpu_slot = None
    if device == "gpu" and machine.get("gpus"):
        per = max(1, max((g["slots"] for g in slots.get("gpus", [])), default=1))
        gpu_slot = min(machine["gpus"]) // per
    for e in est:
        if e.get("where") == "gpu" and gpu_slot is not None:
            e["slot"], e["slot_bytes"] = "GPU slot", gpu_slot
        else:
            e["slot"], e["slot_bytes"] = "CPU slot (RAM)" if device == "cpu" else "host RAM", ram_slot
        e["share"] = e["bytes"] / e["slot_bytes"] if e["slot_bytes"] else None
    return est


TAG = re.compile(r"<\|[A-Za-z_]+\|>|<(?:/?s|start_of_turn|end_of_turn)>")


def _special_tokens(folder: Path) -> set[str] | None:
    """The tokenizer's special tokens (None when the folder has no readable tokenizer.json)."""
    try:
        tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {t.get("content", "") for t in tj.get("added_tokens") or [] if t.get("special", True)}


def template_findings(draft: dict[str, Any]) -> list[dict[str, str]]:
    """The chat-template round trip: the training text's turn markers must be tokens this model knows, or training
    and chat describe different conversations (the Phi-3 ``<|user|>`` template on a ChatML model, say)."""
    ds = draft.get("dataset") or {}
    tmpl = ds.get("text_template") or ""
    folder = Path(((draft.get("model") or {}).get("name") or "").strip() or "/nonexistent").expanduser()
    if ds.get("chat_template") or not tmpl or not folder.is_dir():
        return []
    known = _special_tokens(folder)
    if known is None:
        return []
    unknown = sorted({t for t in TAG.findall(tmpl) if t not in known})
    if not unknown:
        return []
    chat = dataview.chat_template_of(folder) or ""
    theirs = sorted(set(TAG.findall(chat)) & known)
    return [_f("error", "dataset.text_template",
               f"the template's turn markers {', '.join(unknown)} are not tokens of this model"
               + (f"; its chat template uses {', '.join(theirs)}" if theirs else "")
               + ": the model would be trained on one conversation format and chatted with in another",
               "use the tokenizer's chat template (chat_template: true) or write the template with this model's markers")]


def check(
    draft: dict[str, Any],
    *,
    catalog: dict[str, Any] | None,
    card: dict[str, Any] | None = None,
    gpus_available: int = 0,
    slots: dict[str, Any] | None = None,
    machine: dict[str, Any] | None = None,
) -> list[dict[str, str]]:
    slots = slots or {}
    spec, out = _spec_findings(drafts.to_spec_dict(draft))
    out += _model_findings(draft, card)
    target = draft.get("target") or {}
    passes = draft.get("passes") or []
    if not passes:
        out.append(
            _f("error", "passes", "the workflow has no passes", "apply a recipe or add passes on the Workflow page")
        )
    pf, needs = _pass_findings(passes, target, bool(draft.get("dataset")), catalog)
    out += pf
    out += _dataset_findings(draft.get("dataset"), (draft.get("model") or {}).get("name", ""), sorted(set(needs)))
    out += _resource_findings(draft, gpus_available, slots)
    out += template_findings(draft)
    if not any(f["where"] == "dataset.text_template" for f in out):
        out += _round_trip_findings(draft)
    out += validate.draft_findings(draft, catalog)  # issue 12: the one check every entrance runs (engine.olive.validate)
    for e in memory_rows(draft, card, machine or {}, slots):
        if e["share"] is None:
            continue
        msg = f"needs about {estimate_gb(e['bytes'])} ({e['basis']}); a {e['slot']} has {estimate_gb(e['slot_bytes'])}"
        if e["share"] > 1:
            out.append(
                _f(
                    "error",
                    f"pass {e['pass']}",
                    msg,
                    "lower the batch size or max_seq_len, use a smaller model, or run where a slot has more memory",
                )
            )
        elif e["share"] > 0.75:
            out.append(_f("warning", f"pass {e['pass']}", msg, "it may not fit beside other runs"))
    if spec is not None and not any(f["level"] == "error" for f in out):
        out.insert(0, _f("info", "spec", "the spec is valid", ""))
    return out
