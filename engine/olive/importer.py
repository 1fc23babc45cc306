"""Read an existing Olive workflow config (JSON or YAML) into a dashboard draft.

What maps onto Grove's spec is mapped: the input model, the first training data config (local file or Hub
dataset, text template, sequence length), each pass's parameters (Olive ``SearchParameter`` values become
searchable values), the target system and the search strategy. Only what Grove's spec can express is imported:
a parameter this Olive does not know is dropped, never passed on verbatim. Older-schema configs (the Phi-3
cookbook's ``PyTorchModel`` with ``hf_config``, ``systems`` with ``accelerators: ["gpu"]``, ``params_config`` /
``params`` data configs, LoRA's ``lora_r``/``lora_alpha``...) are read too. Nothing is dropped silently: every
mapping and every part left out is named in the notes.

Olive's own rules are applied where a config relies on them: pass types are read without regard to case (``gptq``
is Gptq, as Olive's package config resolves them); an accelerator with execution providers and no ``device`` gets
the device Olive infers from them, and one with a device and no providers gets Olive's default provider for it; a
``HuggingfaceContainer`` data config with no pre-processing settings reads Olive's default ``text`` column. A config
with an input model and an evaluator but no passes is a baseline run (it measures the input model). Olive's
accuracy, latency and size metrics are mapped onto Grove's evaluation where they mean the same thing; the rest is
named. A config for a known target with an environment of its own (engine.targets: OpenVINO, and QNN, VitisAI,
NvTensorRTRTX, which this machine cannot run) is imported for that target with its passes; a config for another
target (DirectML, WebGPU...) is refused in one sentence. Either is imported as a CPU or CUDA version of it when the
caller asks (``target="cpu"|"cuda"``): the passes that exist only for that target are dropped, each named.

Anything that runs code (``user_script``, ``script_dir``, custom data components) and ``trust_remote_code: true``
are refused (``SpecError``) unless the caller opts in with ``allow_code=True``; then they come with a warning.
Every imported draft is checked as a submit would check it (engine.olive.validate): each finding becomes a note
naming the field to fill in.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import yaml

from engine import targets
from engine.errors import SpecError
from engine.spec.drafts import DEFAULT_SEARCH, new_draft
from engine.spec.passes import GROVE_PROVIDERS, GROVE_TARGETS_TEXT, canonical_pass_type, target_specific
from engine.spec.schema import PASS_NAME, PERCENT_RANGES, yaml_error_location

# Olive 0.13's defaults a config may rely on (olive/data/component/text_generation.py: TextGenParams)
OLIVE_TEXT_COL = "text"
OLIVE_MAX_SEQ_LEN = 1024
# olive/hardware/constants.py DEVICE_TO_EXECUTION_PROVIDERS: the devices each execution provider runs on
OLIVE_EP_DEVICES = {
    "CPUExecutionProvider": ("cpu",),
    "OpenVINOExecutionProvider": ("cpu", "gpu", "npu"),
    "QNNExecutionProvider": ("gpu", "npu"),
    "DmlExecutionProvider": ("gpu", "npu"),
    "CUDAExecutionProvider": ("gpu",),
    "ROCMExecutionProvider": ("gpu",),
    "MIGraphXExecutionProvider": ("gpu",),
    "TensorrtExecutionProvider": ("gpu",),
    "NvTensorRTRTXExecutionProvider": ("gpu",),
    "JsExecutionProvider": ("gpu",),
    "WebGpuExecutionProvider": ("gpu",),
    "VitisAIExecutionProvider": ("npu",),
}
GROVE_MANAGED = {"train_data_config", "eval_data_config", "data_config", "calibration_data_config"}
CODE_KEYS = {"user_script", "script_dir"}
# older Olive names -> today's, per parameter (a note is written for each mapping)
RENAMED = {"lora_r": "r", "lora_alpha": "alpha"}
RENAMED_TRAINING_ARGS = {"evaluation_strategy": "eval_strategy"}
LORA_NODE = re.compile(r"^/model/layers\.\d+/.+/lora_[AB]/MatMul$")
KNOWN_TOP = {
    "input_model",
    "systems",
    "data_configs",
    "passes",
    "search_strategy",
    "host",
    "target",
    "cache_dir",
    "output_dir",
    "workflow_id",
    "evaluate_input_model",
    "log_severity_level",
    "engine",
    "evaluators",
    "evaluator",
    "output_model_num",
    "clean_cache",
    "no_artifacts",
    "log_to_file",
    "verbose",
    "execution_providers",
    "packaging_config",
    "plot_pareto_frontier",
}
LATENCY_TO_GROVE = {"avg": "ttft_ms"}  # one forward pass over the prompt, timed: what Grove's time to first token is


def parse_text(text: str) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where, what = yaml_error_location(e)
        raise SpecError([(where, f"not valid JSON or YAML: {what}")], source="Olive config") from None
    if not isinstance(cfg, dict) or not {"passes", "engine", "input_model"} & set(cfg):
        raise SpecError([("input_model", "an Olive workflow config has an 'input_model', and 'passes' or an "
                          "evaluator (a baseline run)")], source="Olive config")
    return cfg


class _Import:
    """One import: the draft, its notes, and whether code may be kept."""

    def __init__(self, allow_code: bool, target: str | None = None) -> None:
        self.draft, self.notes, self.allow_code = new_draft(), [], allow_code
        self.refused: list[tuple[str, str]] = []
        self.target = target

    def code(self, where: str, what: str) -> bool:
        """True when code at ``where`` may be kept (opted in, with a warning); else it is recorded as refused."""
        if self.allow_code:
            self.notes.append(f"WARNING {where}: {what}; kept because code was allowed: run only code you trust")
            return True
        self.refused.append((where, f"{what}: refused; import again with code allowed if you trust it"))
        return False


def _has_code(v: Any) -> bool:
    if isinstance(v, dict):
        return any(k in CODE_KEYS or _has_code(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_has_code(x) for x in v)
    return False


def _model(cfg: dict[str, Any], imp: _Import) -> None:
    draft, notes = imp.draft, imp.notes
    m = cfg.get("input_model") or {}
    if not isinstance(m, dict):
        notes.append("input_model is not a mapping: set the model by hand (model.name)")
        return
    inner = m.get("config") if isinstance(m.get("config"), dict) else m
    hf = inner.get("hf_config") if isinstance(inner.get("hf_config"), dict) else {}
    path = inner.get("model_path") or inner.get("model_name") or hf.get("model_name")
    if hf.get("model_name") and not inner.get("model_path"):
        notes.append(f"input_model.config.hf_config.model_name → model.name ({hf['model_name']})")
    if isinstance(path, dict):
        notes.append(f"input_model.model_path is a resource ({path.get('type')}): check model.name")
        path = path.get("config", {}).get("path") or path.get("path")
    if isinstance(path, str) and path.startswith(("azureml:", "https://", "http://")):
        notes.append(f"input_model {path} is a remote model store: dropped; set model.name by hand")
        path = ""
    draft["model"]["name"] = str(path or "")
    trust, revision = False, None
    for where, kw in (("load_kwargs", inner.get("load_kwargs")),
                      ("hf_config.model_loading_args", hf.get("model_loading_args")),
                      ("hf_config.from_pretrained_args", hf.get("from_pretrained_args"))):
        if isinstance(kw, dict):
            trust = trust or bool(kw.get("trust_remote_code"))
            revision = revision or kw.get("revision")
            if kw.get("trust_remote_code"):
                src = f"input_model.{where}.trust_remote_code"
                if imp.code(src, "trust_remote_code: true runs the model repository's own Python code"):
                    notes.append(f"{src} → model.trust_remote_code")
                else:
                    trust = False
    draft["model"]["trust_remote_code"] = trust
    if revision:
        draft["model"]["revision"] = revision
    for k in ("io_config", "dummy_inputs_func", "model_script", "script_dir", "model_loader"):
        if inner.get(k) or hf.get(k):
            if k in ("model_script", "script_dir", "dummy_inputs_func", "model_loader"):
                imp.code(f"input_model.{k}", f"{k} names Python code")
            notes.append(f"input_model.{k} dropped: Grove loads Hugging Face models itself")
    if m.get("type") and str(m["type"]).lower() not in ("hfmodel", "pytorchmodel"):
        notes.append(f"input model type {m['type']} is not a Hugging Face model; Grove starts from HfModel")
    elif str(m.get("type", "")).lower() == "pytorchmodel":
        notes.append("input_model.type PyTorchModel (older Olive) → HfModel")


def _data_params(dc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(load settings, pre-processing settings)`` of a data config in any of Olive's shapes."""
    pc = dc.get("params_config") if isinstance(dc.get("params_config"), dict) else {}
    ld = dict(dc.get("load_dataset_config") or {})
    ld = {**ld, **(ld.get("params") or {})} if isinstance(ld.get("params"), dict) else ld
    pre = dict(dc.get("pre_process_data_config") or {})
    pre = {**pre, **(pre.get("params") or {})} if isinstance(pre.get("params"), dict) else pre
    if pc:
        ld = {**{k: v for k, v in pc.items() if k in ("data_name", "data_files", "split", "subset")}, **ld}
        ck = (pc.get("component_kwargs") or {}).get("pre_process_data") or {}
        pre = {**ck, **pre}
    return ld, pre


def _dataset(cfg: dict[str, Any], train_ref: str | None, imp: _Import, eval_size: Any) -> None:
    draft, notes = imp.draft, imp.notes
    dcs = cfg.get("data_configs") or []
    if isinstance(dcs, dict):
        dcs = [{**v, "name": v.get("name") or k, "_key": k} for k, v in dcs.items() if isinstance(v, dict)]
    dcs = [d for d in dcs if isinstance(d, dict)]
    dc = next((d for d in dcs if train_ref in (d.get("name"), d.get("_key"))), None) or (dcs[0] if dcs else None)
    if dc is None:
        return
    name = dc.get("name")
    if _has_code(dc) or dc.get("components") or any(
        isinstance(dc.get(k), dict) and dc[k].get("type") not in (None, "huggingface_dataset", "text_generation_huggingface_pre_process",
                                                                   "default_pre_process_data", "skip_post_process")
        for k in ("load_dataset_config", "pre_process_data_config", "post_process_data_config", "dataloader_config")
    ):
        imp.code(f"data_configs.{name}", "custom data components or a user_script")
        notes.append(f"data_configs.{name}: custom components dropped: Grove reads and templates the data itself")
    ld, pre = _data_params(dc)
    seq = pre.get("max_seq_len") or pre.get("source_max_len")
    if not seq:
        seq = OLIVE_MAX_SEQ_LEN
        notes.append(f"data_configs.{name}: no max_seq_len: Olive's default {seq} → dataset.max_seq_len")
    ds: dict[str, Any] = {"eval_split": 0.1, "max_seq_len": int(seq)}
    files = ld.get("data_files")
    if isinstance(files, dict):
        files = files.get("train") or next(iter(files.values()), None)
    if isinstance(files, list):
        if len(files) > 1:
            notes.append(f"data_configs.{name}: {len(files)} data files; only the first is imported")
        files = files[0] if files else None
    if isinstance(files, str) and files.startswith(("azureml:", "https://", "http://", "abfs", "wasb")):
        notes.append(f"data_configs.{name}: {files} is a remote data store: dropped; set dataset.path by hand")
        files = None
    if ld.get("data_name") in ("json", "csv", "parquet", None) and files:
        ds["path"] = str(files)
        notes.append(f"data_configs.{name}.data_files → dataset.path ({files})")
    elif ld.get("data_name") and ld.get("data_name") not in ("json", "csv", "parquet"):
        ds.update(hf_name=ld["data_name"], hf_split=ld.get("split", "train"))
        if ld.get("subset"):
            ds["hf_subset"] = ld["subset"]
    if pre.get("text_template"):
        ds["text_template"] = pre["text_template"]
        notes.append(f"data_configs.{name} text_template → dataset.text_template")
    elif pre.get("chat_template"):
        ds["chat_template"] = True
    elif pre.get("text_cols") or pre.get("text_col"):
        cols = pre.get("text_col") or pre["text_cols"]
        cols = [cols] if isinstance(cols, str) else list(cols)
        ds["text_template"] = "\n".join("{" + str(c) + "}" for c in cols)
        notes.append(f"data_configs.{name} text_cols {cols} → dataset.text_template {ds['text_template']!r}")
    elif not pre.get("text_formatting_func") and str(dc.get("type") or "HuggingfaceContainer") == "HuggingfaceContainer":
        # Olive's text-generation pre-processing (olive/data/component/text_generation.py, TextGenParams) reads
        # text_cols=["text"] when the config names no template, columns or formatting function
        ds["text_template"] = "{" + OLIVE_TEXT_COL + "}"
        notes.append(f"data_configs.{name}: no template or text columns: Olive's default pre-processing reads the "
                     f"'{OLIVE_TEXT_COL}' column → dataset.text_template '{ds['text_template']}'")
    if isinstance(eval_size, float) and 0 < eval_size < 0.9:
        ds["eval_split"] = eval_size
        notes.append(f"eval_dataset_size {eval_size} → dataset.eval_split")
    elif eval_size is not None:
        notes.append(f"eval_dataset_size {eval_size!r} dropped: Grove holds out the fraction dataset.eval_split")
    if not ds.get("path") and not ds.get("hf_name"):
        notes.append(f"data_configs.{name}: no local file or Hub dataset found: set dataset.path")
    if not ds.get("text_template") and not ds.get("chat_template"):
        notes.append(f"data_configs.{name}: no template found: set dataset.text_template or chat_template")
    dropped = sorted(set(pre) - {"text_template", "chat_template", "text_cols", "text_col", "max_seq_len",
                                 "source_max_len", "params", "type"})
    if dropped:
        notes.append(f"data_configs.{name} pre-processing settings dropped (Grove prepares data itself): "
                     + ", ".join(dropped))
    draft["dataset"] = ds
    if len(dcs) > 1:
        notes.append(
            f"{len(dcs) - 1} other data config(s) not imported ({', '.join(str(d.get('name')) for d in dcs if d is not dc)})"
        )


def _split_params(
    name: str, ptype: str, params: dict[str, Any], known: dict[str, Any] | None, imp: _Import
) -> tuple[dict[str, Any], dict[str, list[Any]], Any]:
    fixed: dict[str, Any] = {}
    search: dict[str, list[Any]] = {}
    eval_size = None
    for k, v in params.items():
        where = f"passes.{name}.{k}"
        if k == "type":
            imp.notes.append(f"{where} dropped: a parameter cannot change the pass type ({ptype})")
            continue
        if k in GROVE_MANAGED:
            if _has_code(v) or (isinstance(v, dict) and v.get("components")):
                imp.code(where, "a data config with a user_script or custom components")
            if isinstance(v, dict):
                imp.notes.append(f"{where} (a data config) dropped: Grove wires the run's dataset into the pass")
            continue
        if k in CODE_KEYS:
            if imp.code(where, f"{k} names Python code Olive would run"):
                fixed[k] = v
                imp.draft["allow_user_code"] = True
            continue
        if k == "eval_dataset_size":
            eval_size = v
            continue
        if k == "int4_nodes_to_exclude" and isinstance(v, list) and v:
            v = [x for x in v if not (isinstance(x, str) and LORA_NODE.match(x))]  # Grove adds these after an adapter
            if not v:
                continue
        if v == "DEFAULT_VALUE":
            continue
        if k in RENAMED and (known is None or k not in known):
            imp.notes.append(f"{where} → {RENAMED[k]} (renamed in Olive)")
            k = RENAMED[k]
        if k == "training_args" and isinstance(v, dict):
            v = dict(v)
            for old, new in RENAMED_TRAINING_ARGS.items():
                if old in v:
                    imp.notes.append(f"{where}.{old} → {new} (renamed in transformers)")
                    v.setdefault(new, v.pop(old))
            fields = ((known or {}).get("training_args") or {}).get("fields")
            if fields:
                gone = sorted(x for x in v if x not in fields)
                for x in gone:
                    v.pop(x)
                if gone:
                    imp.notes.append(f"{where} dropped (not training arguments of this transformers): {', '.join(gone)}")
        if isinstance(v, dict) and v.get("olive_parameter_type") == "SearchParameter":
            search[k] = list(v.get("support") or v.get("values") or [])
            continue
        if v == "SEARCHABLE_VALUES":
            sv = ((known or {}).get(k) or {}).get("search_values")
            if isinstance(sv, list):
                search[k] = sv
            continue
        if known is not None and k not in known:
            hint = " (a QLoRA setting: use a QLoRA pass for 4-bit training)" if k == "double_quant" else ""
            imp.notes.append(f"{where} dropped: {ptype} in this Olive has no parameter '{k}'{hint}")
            continue
        fixed[k] = v
    return fixed, search, eval_size


def from_olive_config(
    cfg: dict[str, Any], catalog: dict[str, Any] | None = None, *, allow_code: bool = False,
    target: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``(draft, notes)`` for an Olive workflow config dict. ``catalog``: engine.olive.catalog.load()["passes"].

    Never crashes on an odd shape: what cannot be read is named in the notes. Code (user_script, script_dir,
    custom data components, trust_remote_code) raises SpecError unless ``allow_code``. A config for a target this
    Grove does not run raises SpecError in one sentence unless ``target`` ("cpu" or "cuda") asks for a CPU or CUDA
    version of it; ``target`` also turns a CPU config into a CUDA one and back."""
    if target not in (None, "", "cpu", "cuda"):
        raise SpecError([("target", f"{target!r} is not a target this Grove runs: give 'cpu' or 'cuda'")],
                        source="Olive config")
    cfg = copy.deepcopy(cfg)
    imp = _Import(allow_code, target or None)
    draft, notes = imp.draft, imp.notes
    if isinstance(cfg.get("engine"), dict):  # older configs nest engine settings
        notes.append("engine.* settings (older Olive) read as top-level settings")
        cfg = {**cfg["engine"], **{k: v for k, v in cfg.items() if k != "engine"}}
    _model(cfg, imp)
    train_ref: str | None = None
    eval_size: Any = None
    passes = cfg.get("passes") or {}
    if isinstance(passes, list):
        passes = {str(p.get("name") or p.get("type") or i): p for i, p in enumerate(passes) if isinstance(p, dict)}
    for name, pc in passes.items():
        if isinstance(pc, list):  # alternatives: the first is used, the others are named in the notes
            notes.append(
                f"pass '{name}' lists {len(pc)} alternative configs; the first is used, the others were: "
                + json.dumps(pc[1:])[:500]
            )
            pc = pc[0] if pc else {"type": "?"}
        if not isinstance(pc, dict):
            notes.append(f"pass '{name}' is not a mapping: dropped")
            continue
        given = str(pc.get("type", "?"))
        ptype = canonical_pass_type(given, catalog)  # Olive reads pass types without regard to case
        if ptype != given:
            notes.append(f"passes.{name}.type {given} → {ptype} (Olive reads pass types without regard to case)")
        inner = pc.get("config") if isinstance(pc.get("config"), dict) else {k: v for k, v in pc.items() if k != "type"}
        params = dict(inner)
        if isinstance(params.get("train_data_config"), str):
            train_ref = train_ref or params["train_data_config"]
        known = (catalog or {}).get(ptype, {}).get("params") if catalog is not None else None
        if catalog is not None and ptype not in catalog:
            notes.append(f"pass '{name}': {ptype} is not a pass of this Olive; its parameters were not checked")
        fixed, search, es = _split_params(name, ptype, params, known, imp)
        eval_size = es if es is not None else eval_size
        draft["passes"].append({"type": ptype, "name": _name(name, ptype), "params": fixed, "search": search,
                                "raw": False})
    eval_ref = _evaluators(cfg, imp)
    _dataset(cfg, train_ref or eval_ref, imp, eval_size)
    ev = draft.get("evaluation") or {}
    if ev.get("enabled") and ev.get("benchmarks") and not draft.get("dataset"):
        # lm-eval tasks bring their own data: without a dataset the run measures them alone (engine.spec.schema)
        notes.append("evaluation: no dataset, so candidates are measured on the benchmark tasks only (no held-out "
                         "loss or ROUGE-L; speed timed on Grove's built-in prompts); add a dataset in the Dataset "
                         "section for those")
    _target(cfg, imp, catalog)
    ss = cfg.get("search_strategy")
    if isinstance(ss, dict):
        sc = ss.get("sampler_config") or {}
        draft["search"] = {
            **DEFAULT_SEARCH,
            "sampler": ss.get("sampler", "sequential")
            if ss.get("sampler") in ("sequential", "random", "tpe")
            else "sequential",
            "execution_order": ss.get("execution_order", "joint")
            if ss.get("execution_order") in ("joint", "pass-by-pass") else "joint",
            "max_samples": sc.get("max_samples"),
            "max_time_s": ss.get("max_time"),
            "stop_when_goals_met": bool(ss.get("stop_when_goals_met")),
            "seed": int(sc.get("seed", 0) or 0),
        }
    if not draft["passes"]:
        notes.append("no passes: a baseline run that measures the input model as it is")
    extra = sorted(set(cfg) - KNOWN_TOP)
    if extra:
        notes.append(f"top-level keys not used by Grove: {', '.join(extra)}")
    if imp.refused:
        raise SpecError(imp.refused, source="Olive config")
    notes += _checked(draft, catalog)
    return draft, notes


def _checked(draft: dict[str, Any], catalog: dict[str, Any] | None) -> list[str]:
    """The draft checked as a submit checks it: one note per field to fill in or fix."""
    from engine.olive import validate
    from engine.spec.drafts import to_spec_dict
    from engine.spec.schema import parse_spec

    try:
        spec = parse_spec(to_spec_dict(draft))
    except SpecError as e:
        return [f"to fill in: {path or '(spec)'}: {msg}" for path, msg in e.problems]
    return [f"to fix: {f['where']}: {f['message']}" for f in validate.problems(spec, catalog=catalog or {})
            if f["level"] == "error"]


def _name(name: str, ptype: str) -> str | None:
    if name == ptype.lower() or not PASS_NAME.match(name):
        return None
    return name


def olive_device(eps: list[str]) -> str | None:
    """The device Olive infers from execution providers when an accelerator names none
    (olive/hardware/accelerator.py: AcceleratorLookup.infer_single_device_from_execution_providers): ``cpu`` for
    [CPUExecutionProvider], ``npu`` for [QNNExecutionProvider], else the one device every other provider maps to;
    None where Olive cannot infer one (it then stops and asks for the device)."""
    if not eps:
        return None
    if eps == ["CPUExecutionProvider"]:
        return "cpu"
    if eps == ["QNNExecutionProvider"]:
        return "npu"
    found: list[str] = []
    for ep in eps:
        if ep == "CPUExecutionProvider":
            continue
        devs = OLIVE_EP_DEVICES.get(ep)
        if not devs or len(devs) > 1:
            return None
        if devs[0] not in found:
            found.append(devs[0])
    return found[0] if len(found) == 1 else None


def _ep_names(eps: Any) -> list[str]:
    out = []
    for e in eps if isinstance(eps, list) else []:
        e = e[0] if isinstance(e, (list, tuple)) and e else e  # [provider, options]
        if isinstance(e, str):
            out.append(e)
    return out


def _target(cfg: dict[str, Any], imp: _Import, catalog: dict[str, Any] | None) -> None:
    draft, notes = imp.draft, imp.notes
    systems = cfg.get("systems") or {}
    if not isinstance(systems, dict):
        systems = {}
    tname = cfg.get("target")
    sysc = systems.get(tname) if isinstance(tname, str) else (tname if isinstance(tname, dict) else None)
    sysc = sysc or next(iter(systems.values()), None)
    dev: str | None = None
    eps: list[str] = []
    if isinstance(sysc, dict):
        stype = str(sysc.get("type") or "LocalSystem")
        if stype not in ("LocalSystem", "PythonEnvironment"):
            notes.append(f"system type {stype} (remote) dropped: Grove runs on its own workers")
        accs = (sysc.get("config") if isinstance(sysc.get("config"), dict) else sysc).get("accelerators") or []
        acc = accs[0] if isinstance(accs, list) and accs else None
        if isinstance(acc, str):  # older Olive: accelerators: ["gpu"]
            dev = acc.lower()
            notes.append(f"systems accelerators [{acc!r}] (older Olive) → target.device")
        elif isinstance(acc, dict):
            dev = str(acc["device"]).lower() if acc.get("device") else None
            eps = _ep_names(acc.get("execution_providers"))
    top_eps = _ep_names(cfg.get("execution_providers"))
    if not eps and top_eps:
        eps = top_eps
        notes.append(f"engine.execution_providers {top_eps} → target.execution_provider")
    if dev is None and eps:
        dev = olive_device(eps)
        if dev is not None:
            notes.append(f"systems: no device given: Olive infers '{dev}' from {', '.join(eps)} → target.device")
    if dev is not None and not eps and dev in ("cpu", "gpu"):
        eps = ["CPUExecutionProvider" if dev == "cpu" else "CUDAExecutionProvider"]  # Olive's _fill_accelerators
        notes.append(f"systems: device '{dev}' with no execution provider: Olive uses {eps[0]} → "
                     "target.execution_provider")
    foreign = [e for e in eps if e not in GROVE_PROVIDERS]
    asked = eps[0] if eps else None
    known = next((e for e in foreign if e in targets.PROVIDERS), None)
    if known is None and not foreign:
        known = _target_of_passes(draft["passes"])  # e.g. Ryzen AI / VitisAI recipes name no provider
    if imp.target is None and known is not None:  # a target Grove knows (OpenVINO...): imported for it, passes kept
        _own_target(imp, known, dev)
        return
    others = ", ".join(t for t in targets.TARGETS if t != targets.DEFAULT)
    if foreign or (dev is not None and dev not in ("cpu", "gpu")):
        what = f"{foreign[0] if foreign else asked or 'an accelerator'} on '{dev or '?'}'"
        if imp.target is None:
            raise SpecError([("systems", f"this config targets {what}; Grove runs {GROVE_TARGETS_TEXT}, and knows "
                              f"the targets {others}: import it with target 'cpu' or 'cuda' to get a CPU or CUDA "
                              "version of it")], source="Olive config")
        notes.append(f"systems: the config targets {what}: imported as a {imp.target.upper()} version of it")
        dev, eps = None, []
    if imp.target is None:
        other = [p["type"] for p in draft["passes"] if target_specific(p["type"])]
        if other:  # passes for an execution provider of no target Grove knows
            raise SpecError([("passes", f"this config's pass{'es' if len(other) > 1 else ''} {', '.join(other[:4])} "
                              f"build{'' if len(other) > 1 else 's'} for another target (an NPU or another execution "
                              f"provider); Grove runs {GROVE_TARGETS_TEXT}, and knows the targets {others}: import it "
                              "with target 'cpu' or 'cuda' to get a CPU or CUDA version of it")], source="Olive config")
    if imp.target is not None:
        want = ("cpu", "CPUExecutionProvider") if imp.target == "cpu" else ("gpu", "CUDAExecutionProvider")
        if (dev, eps[:1]) != (want[0], [want[1]]) and (dev or eps):
            notes.append(f"target {imp.target}: target.device {want[0]}, execution_provider {want[1]} "
                         f"(the config had {dev or '?'} with {', '.join(eps) or 'no provider'})")
        dev, eps = want[0], [want[1]]
        _drop_foreign_passes(imp, catalog, want[1])
    if dev is not None:
        draft["target"]["device"] = "gpu" if dev == "gpu" else "cpu"
    if eps:
        draft["target"]["execution_provider"] = next((e for e in eps if e in GROVE_PROVIDERS), eps[0])
    if draft["target"]["device"] == "gpu":
        draft["resources"]["gpus"] = 1
    for p in draft["passes"]:
        if p["type"] == "ModelBuilder" and p["params"].get("precision") in ("fp32", "fp16", "int4", "int8"):
            draft["target"]["precision"] = p["params"]["precision"]


# which known target a pass builds for, when a config names no provider (Ryzen AI recipes name none)
PASS_TARGETS = (("OpenVINO", "OpenVINOExecutionProvider"), ("QNN", "QNNExecutionProvider"),
                ("Qairt", "QNNExecutionProvider"), ("Vitis", "VitisAIExecutionProvider"),
                ("Ryzen", "VitisAIExecutionProvider"), ("QuarkQuantizationVitisAI", "VitisAIExecutionProvider"),
                ("EPContextBinaryGenerator", "QNNExecutionProvider"), ("StaticLLM", "QNNExecutionProvider"))


def _target_of_passes(passes: list[dict[str, Any]]) -> str | None:
    """The execution provider of the known target the config's target-specific passes build for, if one."""
    for p in passes:
        for prefix, ep in PASS_TARGETS:
            if p["type"].startswith(prefix):
                return ep
    return None


def _own_target(imp: _Import, ep: str, dev: str | None) -> None:
    """Import for a known target with an environment of its own (engine.targets): its passes kept, its device the
    one Grove runs it on (OpenVINO: this host's CPU; the config's 'gpu'/'npu' is noted, and the OpenVINO passes'
    device follows). Launching says what is missing when the target cannot run here."""
    t = targets.for_provider(ep)
    draft, notes = imp.draft, imp.notes
    draft["target"]["execution_provider"] = ep
    draft["target"]["device"] = t.device
    draft["resources"]["gpus"] = 0
    notes.append(f"systems: {ep} → target {t.name} ({t.title}): its passes run in the {t.name} target environment"
                 + ("" if t.requirements else f"; this machine cannot run it ({t.missing})"))
    if t.name == "openvino" and dev not in (None, "cpu"):
        notes.append(f"systems: OpenVINO device '{dev}' → cpu: Grove runs OpenVINO on this host's CPU")
    for p in draft["passes"] if t.name == "openvino" else []:
        prm = p["params"]
        if isinstance(prm.get("target_device"), str) and prm["target_device"].lower() != "cpu":
            notes.append(f"pass '{p.get('name') or p['type']}': target_device '{prm['target_device']}' → cpu")
            prm["target_device"] = "cpu"
        ea = prm.get("extra_args")
        if isinstance(ea, dict) and isinstance(ea.get("device"), str) and ea["device"].lower() != "cpu":
            notes.append(f"pass '{p.get('name') or p['type']}': extra_args.device '{ea['device']}' → cpu")
            prm["extra_args"] = {**ea, "device": "cpu"}
        q = prm.get("ov_quant_config") if p["type"] == "OpenVINOOptimumConversion" else None
        if isinstance(q, dict) and q.get("weight_format") in ("int4", "int8", "fp16"):
            draft["target"]["precision"] = q["weight_format"]


def _drop_foreign_passes(imp: _Import, catalog: dict[str, Any] | None, ep: str) -> None:
    """For a CPU or CUDA version of a config: drop the passes that exist only for another target."""
    keep = []
    for p in imp.draft["passes"]:
        providers = ((catalog or {}).get(p["type"]) or {}).get("providers") or []
        if target_specific(p["type"]) or (providers and ep not in providers):
            imp.notes.append(f"pass '{p.get('name') or p['type'].lower()}' ({p['type']}) dropped: it exists for "
                             f"another target, not {ep}")
            continue
        keep.append(p)
    if imp.draft["passes"] and not keep:
        imp.notes.append(f"every pass of this config exists for its own target: nothing of it runs on {ep}; what is "
                         "left is the input model (enable evaluation for a baseline run, or add passes)")
    imp.draft["passes"] = keep


# -- evaluators ----------------------------------------------------------------------------------------------------
def _chosen_evaluator(cfg: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    evs = cfg.get("evaluators") if isinstance(cfg.get("evaluators"), dict) else {}
    ref = cfg.get("evaluator")
    if isinstance(ref, dict):
        return "evaluator", ref
    if isinstance(ref, str) and isinstance(evs.get(ref), dict):
        return ref, evs[ref]
    first = next(((k, v) for k, v in evs.items() if isinstance(v, dict)), None)
    return first if first else ("", None)


def _evaluators(cfg: dict[str, Any], imp: _Import) -> str | None:
    """Olive's accuracy, latency and size metrics as Grove's evaluation where they mean the same thing; every
    other metric named as not mapped. Returns the data config the mapped metrics measure on (for a config that
    trains on nothing), or None."""
    name, ev = _chosen_evaluator(cfg)
    if ev is None:
        return None
    notes = imp.notes
    if str(ev.get("type") or "").lower() == "lmevaluator":
        _lm_evaluator(name, ev, imp)
        return None
    mapped: list[tuple[float, dict[str, Any]]] = []
    data_ref: str | None = None
    for mi, m in enumerate(ev.get("metrics") or []):
        if not isinstance(m, dict):
            continue
        mtype, mname = str(m.get("type") or ""), m.get("name") or f"metric{mi}"
        where = f"evaluators.{name}.{mname}"
        for st in m.get("sub_types") or []:
            sub = st.get("name") if isinstance(st, dict) else st
            grove, why = _grove_metric(mtype, str(sub))
            if grove is None:
                notes.append(f"{where}.{sub} ({mtype}) not mapped: {why}")
                continue
            entry: dict[str, Any] = {"name": grove}
            goal = st.get("goal") if isinstance(st, dict) else None
            if isinstance(goal, dict) and goal.get("type") and goal.get("value") is not None:
                entry["goal"] = {"type": goal["type"], "value": float(goal["value"])}
                if mtype == "size_on_disk" and goal["type"] == "threshold":
                    entry["goal"]["value"] = float(goal["value"]) / 1e6  # bytes -> MB
            prio = st.get("priority") if isinstance(st, dict) else None
            mapped.append((prio if isinstance(prio, (int, float)) and prio > 0 else 1e9 + len(mapped), entry))
            notes.append(f"{where}.{sub} ({mtype}) → evaluation metric {grove}")
            if isinstance(m.get("data_config"), str):
                data_ref = data_ref or m["data_config"]
            elif isinstance(m.get("data_config"), dict):
                data_ref = data_ref or m["data_config"].get("name")
        for k in ("user_config", "metric_config", "backend"):
            if m.get(k):
                notes.append(f"{where}.{k} dropped: Grove's evaluator sets its own batch, warm-up and repeats")
    if not mapped:
        notes.append(f"evaluators.{name}: no metric Grove measures the same way: choose metrics in the Evaluation "
                     "section")
        return None
    seen: set[str] = set()
    metrics = []
    for _, e in sorted(mapped, key=lambda x: x[0]):
        if e["name"] in seen:
            continue
        seen.add(e["name"])
        metrics.append({**e, "priority": len(metrics) + 1})
    for e in metrics:
        g = e.get("goal")
        if g and g["type"].startswith("percent"):
            from engine.spec.metrics import METRICS

            lo, hi = PERCENT_RANGES.get((g["type"], METRICS[e["name"]]["higher_is_better"]), (None, None))
            if lo is not None and not lo < g["value"] < hi:
                notes.append(f"evaluation: the goal {g['type']} {g['value']} on {e['name']} is outside Olive's "
                             f"range ({lo}, {hi}): dropped")
                e.pop("goal")
    imp.draft["evaluation"] = {"enabled": True, "metrics": metrics}
    if cfg.get("evaluate_input_model") is False and imp.draft["passes"] != []:
        imp.draft["evaluation"]["evaluate_input_model"] = False
    return data_ref


def _grove_metric(mtype: str, sub: str) -> tuple[str | None, str]:
    """(Grove's metric for Olive's metric type and sub type, or None with the reason)."""
    if mtype == "accuracy":
        if sub == "perplexity":
            return "perplexity", ""
        return None, ("it scores predicted labels against a label column; Grove scores generated answers "
                      "(rouge_l, exact_match) and perplexity")
    if mtype == "latency":
        if sub in LATENCY_TO_GROVE:
            return LATENCY_TO_GROVE[sub], ""
        return None, ("Grove times the first token once per prompt (ttft_ms, Olive's latency avg) and per-token "
                      "decode percentiles (latency_p50_ms, latency_p90_ms), not percentiles of whole forward passes")
    if mtype == "size_on_disk":
        return "size_mb", ""
    if mtype == "throughput":
        return None, "it counts forward passes per second; Grove counts generated tokens per second (decode_tps)"
    if mtype == "custom":
        return None, "a custom metric runs the config's own Python code; Grove measures with its own evaluator"
    return None, f"Olive metric type '{mtype}' has no counterpart in Grove"


# ---- LMEvaluator: lm-eval tasks as Grove's benchmark tasks (engine/olive/import_lmeval.py) ----------------------
def _lm_evaluator(name: str, ev: dict[str, Any], imp: _Import) -> None:
    from engine.olive.import_lmeval import import_lm_evaluators

    notes, _ = import_lm_evaluators({"evaluators": {name: ev}}, imp.draft)
    imp.notes.extend(notes)


def import_text(text: str, catalog: dict[str, Any] | None = None, *, allow_code: bool = False,
                target: str | None = None) -> tuple[dict[str, Any], list[str]]:
    return from_olive_config(parse_text(text), catalog, allow_code=allow_code, target=target)
