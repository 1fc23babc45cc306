"""Read an existing Olive workflow config (JSON or YAML) into a dashboard draft.

What maps onto Grove's form is mapped: the input model, the first training data config (local file or Hub
dataset, text template, sequence length), each pass's parameters (Olive ``SearchParameter`` values become
searchable values), the target system and the search strategy. A pass the form cannot show field by field (a type
not in the catalog, a list of alternative configs, parameters the catalog does not list) is kept as a raw pass:
its parameters travel verbatim. Nothing is dropped silently: every part left out is named in the notes.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import yaml

from engine.errors import SpecError
from engine.spec.drafts import DEFAULT_SEARCH, new_draft
from engine.spec.schema import PASS_NAME

GROVE_MANAGED = {"train_data_config", "eval_data_config"}
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
}


def parse_text(text: str) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError([("", f"not valid JSON or YAML: {getattr(e, 'problem', e)}")], source="Olive config") from e
    if not isinstance(cfg, dict) or "passes" not in cfg and "engine" not in cfg:
        raise SpecError([("passes", "an Olive workflow config has 'input_model' and 'passes'")], source="Olive config")
    return cfg


def _model(cfg: dict[str, Any], draft: dict[str, Any], notes: list[str]) -> None:
    m = cfg.get("input_model") or {}
    inner = m.get("config") if isinstance(m.get("config"), dict) else m
    path = inner.get("model_path") or inner.get("model_name")
    if isinstance(path, dict):
        notes.append(f"input_model.model_path is a resource ({path.get('type')}): set the model by hand")
        path = path.get("config", {}).get("path") or path.get("path")
    draft["model"]["name"] = str(path or "")
    lk = inner.get("load_kwargs") or {}
    draft["model"]["trust_remote_code"] = bool(lk.get("trust_remote_code", False))
    if lk.get("revision"):
        draft["model"]["revision"] = lk["revision"]
    if m.get("type") and m["type"].lower() != "hfmodel":
        notes.append(f"input model type {m['type']} is not a Hugging Face model; Grove starts from HfModel")


def _dataset(cfg: dict[str, Any], train_ref: str | None, draft: dict[str, Any], notes: list[str]) -> None:
    dcs = cfg.get("data_configs") or []
    if isinstance(dcs, dict):
        dcs = [{"name": k, **v} for k, v in dcs.items()]
    dc = next((d for d in dcs if d.get("name") == train_ref), None) or (dcs[0] if dcs else None)
    if dc is None:
        return
    ld = dc.get("load_dataset_config") or {}
    pre = dc.get("pre_process_data_config") or {}
    ds: dict[str, Any] = {"eval_split": 0.1, "max_seq_len": int(pre.get("max_seq_len") or 512)}
    files = ld.get("data_files")
    if ld.get("data_name") in ("json", "csv", "parquet") and files:
        ds["path"] = files if isinstance(files, str) else list(files)[0]
    elif ld.get("data_name"):
        ds.update(hf_name=ld["data_name"], hf_split=ld.get("split", "train"))
        if ld.get("subset"):
            ds["hf_subset"] = ld["subset"]
    if pre.get("text_template"):
        ds["text_template"] = pre["text_template"]
    elif pre.get("chat_template"):
        ds["chat_template"] = True
    elif pre.get("text_cols") or pre.get("text_col"):
        col = pre.get("text_col") or pre["text_cols"][0]
        ds["text_template"] = "{" + str(col) + "}"
    draft["dataset"] = ds
    if len(dcs) > 1:
        notes.append(
            f"{len(dcs) - 1} other data config(s) not imported ({', '.join(str(d.get('name')) for d in dcs if d is not dc)})"
        )


def _split_params(
    params: dict[str, Any], known: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, list[Any]], list[str]]:
    fixed: dict[str, Any] = {}
    search: dict[str, list[Any]] = {}
    unknown: list[str] = []
    for k, v in params.items():
        if k in GROVE_MANAGED and isinstance(v, str):
            continue
        if (
            k == "int4_nodes_to_exclude"
            and isinstance(v, list)
            and v
            and all(isinstance(x, str) and LORA_NODE.match(x) for x in v)
        ):
            continue  # Grove adds these itself after an adapter pass
        if v == "DEFAULT_VALUE":
            continue
        if isinstance(v, dict) and v.get("olive_parameter_type") == "SearchParameter":
            search[k] = list(v.get("support") or v.get("values") or [])
            continue
        if v == "SEARCHABLE_VALUES":
            sv = ((known or {}).get(k) or {}).get("search_values")
            if isinstance(sv, list):
                search[k] = sv
                continue
        if known is not None and k not in known:
            unknown.append(k)
        fixed[k] = v
    return fixed, search, unknown


def from_olive_config(cfg: dict[str, Any], catalog: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``(draft, notes)`` for an Olive workflow config dict. ``catalog``: engine.olive.catalog.load()["passes"]."""
    cfg = copy.deepcopy(cfg)
    if isinstance(cfg.get("engine"), dict):  # older configs nest engine settings
        cfg = {**cfg["engine"], **{k: v for k, v in cfg.items() if k != "engine"}}
    draft, notes = new_draft(), []
    _model(cfg, draft, notes)
    train_ref: str | None = None
    for name, pc in (cfg.get("passes") or {}).items():
        if isinstance(pc, list):  # alternatives: the first is used, the others are named in the notes
            notes.append(
                f"pass '{name}' lists {len(pc)} alternative configs; the first is used, the others were: "
                + json.dumps(pc[1:])[:500]
            )
            pc = pc[0] if pc else {"type": "?"}
            forced_raw = True
        else:
            forced_raw = False
        ptype = pc.get("type", "?")
        params = dict(pc.get("config") or {k: v for k, v in pc.items() if k != "type"})
        if isinstance(params.get("train_data_config"), str):
            train_ref = train_ref or params["train_data_config"]
        known = (catalog or {}).get(ptype, {}).get("params") if catalog is not None else None
        fixed, search, unknown = _split_params(params, known)
        raw = forced_raw or (catalog is not None and (ptype not in catalog or bool(unknown)))
        if raw:
            why = (
                "a list of alternatives"
                if forced_raw
                else "not in this Olive's catalog"
                if ptype not in (catalog or {})
                else f"parameters not in the catalog: {', '.join(unknown)}"
            )
            notes.append(f"pass '{name}' ({ptype}) kept as raw JSON: {why}")
        draft["passes"].append(
            {"type": ptype, "name": _name(name, ptype), "params": fixed, "search": search, "raw": raw}
        )
    _dataset(cfg, train_ref, draft, notes)
    _target(cfg, draft)
    ss = cfg.get("search_strategy")
    if isinstance(ss, dict):
        sc = ss.get("sampler_config") or {}
        draft["search"] = {
            **DEFAULT_SEARCH,
            "sampler": ss.get("sampler", "sequential")
            if ss.get("sampler") in ("sequential", "random", "tpe")
            else "sequential",
            "execution_order": ss.get("execution_order", "joint"),
            "max_samples": sc.get("max_samples"),
            "max_time_s": ss.get("max_time"),
            "stop_when_goals_met": bool(ss.get("stop_when_goals_met")),
            "seed": int(sc.get("seed", 0)),
        }
    if cfg.get("evaluators") or cfg.get("evaluator"):
        notes.append("evaluators are not imported: choose metrics and goals in the Evaluation section")
    extra = sorted(set(cfg) - KNOWN_TOP)
    if extra:
        notes.append(f"top-level keys not used by Grove: {', '.join(extra)}")
    return draft, notes


def _name(name: str, ptype: str) -> str | None:
    if name == ptype.lower() or not PASS_NAME.match(name):
        return None
    return name


def _target(cfg: dict[str, Any], draft: dict[str, Any]) -> None:
    systems = cfg.get("systems") or {}
    tname = cfg.get("target")
    sysc = systems.get(tname) if isinstance(tname, str) else (tname if isinstance(tname, dict) else None)
    sysc = sysc or next(iter(systems.values()), None)
    if not isinstance(sysc, dict):
        return
    accs = (sysc.get("config") or sysc).get("accelerators") or []
    if not accs:
        return
    dev = str(accs[0].get("device", "cpu")).lower()
    eps = accs[0].get("execution_providers") or []
    draft["target"]["device"] = "gpu" if dev == "gpu" else "cpu"
    if eps:
        draft["target"]["execution_provider"] = eps[0]
    if dev == "gpu":
        draft["resources"]["gpus"] = 1
    for p in draft["passes"]:
        if p["type"] == "ModelBuilder" and p["params"].get("precision") in ("fp32", "fp16", "int4", "int8"):
            draft["target"]["precision"] = p["params"]["precision"]


def import_text(text: str, catalog: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    return from_olive_config(parse_text(text), catalog)
