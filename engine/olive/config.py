"""RunSpec -> Olive workflow config (JSON). The only module that knows Olive's config shape.

The config it writes runs unchanged with ``olive run --config <file>`` on a machine with the same packages:
every path in it is absolute, the data it names is the prepared, content-addressed copy under ``runs/data``,
and every Grove-specific choice is spelled out as an ordinary Olive option.

A spec with no passes (a baseline run) becomes a workflow of the input model and Grove's evaluator: Olive measures
the input model as it is (``evaluate_input_model``), as ``olive run`` does for the baseline recipes.

Choices made here on the user's behalf, each for a reason recorded in ../shared/NOTES-olive.md:
- one fixed ``workflow_id`` and one ``cache_dir`` for all runs, so identical passes are reused across runs;
- an int4 ModelBuilder that follows a LoRA-style pass keeps the LoRA A/B MatMuls out of int4
  (``int4_nodes_to_exclude``): an int4 model whose adapter weights are quantized crashes in onnxruntime-genai
  when no adapter is active (NOTES C.5);
- when searching, every parameter the user did not mark searchable is fixed to its value or default, because
  Olive otherwise searches every parameter that has default search values (NOTES F);
- an int4 ModelBuilder for the CUDA provider gets ``cuda_int4_builder_options()`` (CUDA graphs; int4 blocks of
  64; with an adapter, the fused qkv projection kept): what measured faster or smaller on H100/H200s for a
  measured quality cost (docs/benchmarks.md, "GPU decode"). Anything the user sets wins;
- an int4 ModelBuilder whose input holds AwqDequantize's weights re-quantizes on AWQ's own grid (asymmetric blocks
  of AWQ's group size, ``awq_int4_grid``) instead of rounding them a second time onto its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine import paths
from engine.spec.passes import ADAPTER_PASSES, CALIBRATED_PASSES
from engine.spec.schema import PassSpec, RunSpec

# Modules whose LoRA MatMuls ModelBuilder may emit, over all supported architectures.
LORA_MODULES = (
    "attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/qkv_proj", "attn/o_proj",
    "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj", "mlp/gate_up_proj",
)  # fmt: skip
DEFAULT_LAYERS = 64
TRAIN_DATA = "train_data"
CALIB_DATA = "calib_data"
SYSTEM = "local_system"
CHAT_PRE_PROCESS = "grove_chat_pre_process"  # registered by engine/data/olive_chat.py
EVALUATOR = "grove"  # the name of Grove's evaluator (and its one metric) in a workflow


# ModelBuilder extra option read by engine.olive.compat's G2 patch (kept here so this module needs no Olive import)
FUSE_LORA_QKV = "grove_fuse_lora_qkv"


CUDA_INT4_BLOCK = 64


def cuda_int4_builder_options(has_adapter: bool) -> dict[str, Any]:
    """ModelBuilder options Grove sets for int4 builds for CUDAExecutionProvider (measured: bench/gpu_decode.py and
    bench/gpu_adapters.py, docs/benchmarks.md "GPU decode"):

    - ``enable_cuda_graph``: genai captures the decode step once and replays it (H200, genai 0.18.0: stock build
      362 -> 455 tok/s, merged build 276 -> 444, adapter build without adapter 216 -> 411);
    - with an adapter, ``grove_fuse_lora_qkv`` (engine.olive.compat G2, which patches both builder layouts, genai
      0.14/0.15's and 0.16+'s): the fused qkv projection is kept, with one LoRA A/B pair, instead of three
      projections and three pairs (H100, genai 0.15.2: adapter on 0.59x -> 0.74x of stock, off 0.81x -> 0.95x);
    - ``int4_block_size`` 64 (genai's own default is 32): half the int4 scales, so a Phi-3-mini-size build with its
      adapter fits 2.3 GB (H100, genai 0.15.2: 2.26 GB, from 2.37 GB at 32); on real weights (SmolLM2-135M-Instruct,
      RTN, the demo's held-out split) held-out loss 4.465 against 4.438 at 32 and 4.665 at 128 (fp32: 4.016). 128 decodes faster still (H200:
      497 tok/s against 455 at 32) but adds eight times the loss 64 adds (+0.227 against +0.027).
    Not set, measured no better: ``fuse_mlp_gate_up`` (the merged build with it, 444 tok/s, against the stock build
    without it, 455), the fpA_intB kernel (``ep.cuda.fpa_intb_gemm``: 346 against 455).
    """
    extra: dict[str, Any] = {}
    if has_adapter:
        extra[FUSE_LORA_QKV] = True
    out: dict[str, Any] = {"enable_cuda_graph": True, "int4_block_size": CUDA_INT4_BLOCK}
    if extra:
        out["extra_options"] = extra
    return out


def search_parameter(values: list[Any]) -> dict[str, Any]:
    return {"olive_parameter_type": "SearchParameter", "type": "Categorical", "support": list(values)}


def model_config(spec: RunSpec) -> dict[str, Any]:
    """The input model's config.json (a local folder, or the hub cache; never a download), or {} when not found."""
    cfg: Path | None = None
    if spec.model.is_local:
        cfg = spec.model.path / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(spec.model.name, "config.json", revision=spec.model.revision)
            cfg = Path(hit) if isinstance(hit, str) else None
        except Exception:
            cfg = None
    if cfg and cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def model_layers(spec: RunSpec) -> int:
    """Number of decoder layers, read from the model's config.json without importing transformers."""
    data = model_config(spec)
    n = data.get("num_hidden_layers") or (data.get("text_config") or {}).get("num_hidden_layers")
    return n if isinstance(n, int) and n > 0 else DEFAULT_LAYERS


# Passes that train an adapter and leave the base model's weights as they are (LoftQ rewrites them).
BASE_KEEPING = frozenset(ADAPTER_PASSES - {"LoftQ"})
INT4_BLOCKS = (16, 32, 64, 128, 256)  # the block sizes ModelBuilder accepts


def awq_int4_grid(before: list[PassSpec], spec: RunSpec) -> dict[str, Any] | None:
    """ModelBuilder options that re-quantize AWQ's grid exactly, when its input holds AwqDequantize's weights.

    AwqDequantize writes fp16 weights that lie on AWQ's int4 grid: ``(q - zero) * scale`` per group of
    ``q_group_size`` input channels, asymmetric (AutoAWQ's default ``zero_point``). ModelBuilder's own int4 (RTN,
    symmetric, blocks of 32, or Grove's 64 on CUDA) puts a second, different grid over them and adds a second
    rounding error as large as AWQ's own (relative weight error 0.06 on top of AWQ's 0.09). Asymmetric blocks of the
    group size find each group's scale and zero point again, so the int4 ONNX model holds AWQ's weights (to fp16
    rounding). The grid comes from the AutoAWQQuantizer pass of the workflow, or from the input model's
    ``quantization_config`` when the workflow starts from an AWQ checkpoint. None when there is no such grid to keep:
    no AwqDequantize; a pass between it and ModelBuilder that changes the base weights (a merge, another
    quantizer); a symmetric AWQ (AutoAWQ's ``max / 7`` grid and onnxruntime's ``max / -8`` one never coincide); a
    group size ModelBuilder cannot take; or a group size the workflow searches."""
    idx = max((i for i, b in enumerate(before) if b.type == "AwqDequantize"), default=None)
    if idx is None or any(b.type not in BASE_KEEPING for b in before[idx + 1:]):
        return None
    awq = next((b for b in reversed(before[:idx]) if b.type == "AutoAWQQuantizer"), None)
    if awq is not None:
        if {"q_group_size", "zero_point", "bits"} & set(awq.search):
            return None
        group, zero_point, bits = awq.params.get("q_group_size", 128), awq.params.get("zero_point", True), awq.params.get("bits", 4)
    else:
        q = model_config(spec).get("quantization_config") or {}
        if str(q.get("quant_method", "")).lower() != "awq":
            return None
        group, zero_point, bits = q.get("group_size", 128), q.get("zero_point", True), q.get("bits", 4)
    if str(bits) not in ("4", "int4") or zero_point is not True or group not in INT4_BLOCKS:
        return None
    return {"int4_block_size": group, "int4_is_symmetric": False}


def lora_nodes_to_exclude(layers: int) -> list[str]:
    return [f"/model/layers.{i}/{m}/lora_{ab}/MatMul" for i in range(layers) for m in LORA_MODULES for ab in "AB"]


def _input_model(spec: RunSpec) -> dict[str, Any]:
    m = spec.model
    cfg: dict[str, Any] = {"type": "HfModel", "model_path": str(m.path) if m.is_local else m.name}
    load_kwargs: dict[str, Any] = {"trust_remote_code": m.trust_remote_code}
    if m.revision and not m.is_local:
        load_kwargs["revision"] = m.revision
    cfg["load_kwargs"] = load_kwargs
    return cfg


def _data_configs(spec: RunSpec, train_path: Path | None) -> list[dict[str, Any]]:
    ds = spec.dataset
    if ds is None or train_path is None:
        return []
    pre: dict[str, Any] = {"max_seq_len": ds.max_seq_len}
    chat: dict[str, Any] = {}
    if ds.chat_template:
        # Grove's pre-processing (engine/data/olive_chat.py): the chat template's tokens, labels on the assistant
        # turns only (Olive's own chat_template pre-processing trains on every token)
        pre = {"type": CHAT_PRE_PROCESS, "params": {"max_seq_len": ds.max_seq_len, "message_col": "messages"}}
        chat = {"user_script": str(Path(__file__).parent.parent / "data" / "olive_chat.py")}
    else:
        pre["text_template"] = ds.text_template
    configs = []
    if any(p.type == "AutoAWQQuantizer" for p in spec.passes):
        # Olive's AWQ pass hands AutoAWQ only a dataset *name*, split and text column (no data_files): name the
        # prepared calib/ folder, whose train.jsonl holds the rendered texts (a conversation's turns, for chat
        # datasets: engine.data.prepare.calib_text) in a 'text' column
        configs.append({
            "name": CALIB_DATA,
            "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": str(train_path.parent / "calib"), "split": "train"},
            "pre_process_data_config": {"input_cols": "text"},
        })
    return configs + [
        {
            "name": TRAIN_DATA,
            "type": "HuggingfaceContainer",
            **chat,
            "load_dataset_config": {"data_name": "json", "data_files": str(train_path), "split": "train"},
            "pre_process_data_config": pre,
        }
    ]


def _pass_config(p: PassSpec, before: list[PassSpec], spec: RunSpec, layers: int, fixed_defaults: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"type": p.type}
    cfg.update(fixed_defaults)
    cfg.update(p.params)
    for k, vals in p.search.items():
        cfg[k] = search_parameter(vals)
    if p.type in ADAPTER_PASSES and spec.dataset is not None:
        cfg.setdefault("train_data_config", TRAIN_DATA)
    if p.type in CALIBRATED_PASSES and spec.dataset is not None:
        cfg.setdefault("data_config", CALIB_DATA if p.type == "AutoAWQQuantizer" else TRAIN_DATA)
    if p.type == "ModelBuilder":
        cfg.setdefault("precision", spec.target.precision if spec.target.precision in ("fp32", "fp16", "int4", "int8") else "fp32")
        has_adapter = any(b.type in ADAPTER_PASSES for b in before)
        quantizes = cfg["precision"] == "int4" or "int4" in json.dumps(p.search.get("precision", []))
        if has_adapter and quantizes:
            user_nodes = cfg.get("int4_nodes_to_exclude")
            if user_nodes in (None, "DEFAULT_VALUE") or isinstance(user_nodes, list):
                # the user's own exclusions (e.g. the lm_head) join the LoRA MatMuls, which must stay out of int4
                own = user_nodes if isinstance(user_nodes, list) else []
                cfg["int4_nodes_to_exclude"] = [*own, *(n for n in lora_nodes_to_exclude(layers) if n not in own)]
        user_extra = cfg.get("extra_options") or {}
        user_block = bool({"block_size", "int4_block_size"} & set(user_extra))
        user_set = set(p.params) | set(p.search)
        grid_keys = {"int4_block_size", "int4_is_symmetric", "int4_algo_config"}
        grid = awq_int4_grid(before, spec) if quantizes else None
        if grid and not ((grid_keys | {"block_size"}) & set(user_extra)) and not (grid_keys & user_set):
            cfg.update(grid)  # AWQ's grid kept (above); anything the user set about the int4 grid leaves it alone
        if quantizes and spec.target.execution_provider == "CUDAExecutionProvider":
            for k, v in cuda_int4_builder_options(has_adapter).items():
                if k == "extra_options":
                    cfg["extra_options"] = {**v, **user_extra}
                elif k == "int4_block_size" and user_block:
                    continue  # the user's block size, given as a builder extra option, wins
                elif cfg.get(k, "DEFAULT_VALUE") == "DEFAULT_VALUE":  # unset, or fixed to Olive's default by a search
                    cfg[k] = v
    return cfg


def build(
    spec: RunSpec,
    *,
    output_dir: Path,
    train_path: Path | None = None,
    eval_path: Path | None = None,
    data_key: str = "",
    searchable: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The Olive workflow config for ``spec``.

    ``train_path``: the prepared training file (engine.data.prepare.prepare). ``searchable``: for each pass type, the
    parameters Olive would search on its own (from engine.olive.catalog); when the spec searches, each one the user did
    not mark searchable nor set is fixed with Olive's own ``"DEFAULT_VALUE"``.
    """
    layers = model_layers(spec)
    passes: dict[str, Any] = {}
    for i, p in enumerate(spec.passes):
        fixed: dict[str, Any] = {}
        if spec.search is not None and searchable:
            fixed = {k: "DEFAULT_VALUE" for k in searchable.get(p.type, []) if k not in p.search and k not in p.params}
        passes[p.key] = _pass_config(p, spec.passes[:i], spec, layers, fixed)
    device = spec.target.device
    config: dict[str, Any] = {
        "workflow_id": paths.OLIVE_WORKFLOW_ID,
        "input_model": _input_model(spec),
        "systems": {
            SYSTEM: {
                "type": "LocalSystem",
                "accelerators": [{"device": device, "execution_providers": [spec.target.execution_provider]}],
            }
        },
        "data_configs": _data_configs(spec, train_path),
        "passes": passes,
        "host": SYSTEM,
        "target": SYSTEM,
        "cache_dir": str(paths.cache_dir()),
        "output_dir": str(output_dir),
        "evaluate_input_model": False,
        "log_severity_level": 1,
    }
    # no dataset: an evaluation of benchmark tasks only (the spec allows it only with tasks), nothing held out
    if spec.evaluation.enabled and (eval_path is not None or spec.dataset is None):
        config["evaluators"] = {EVALUATOR: evaluator(spec, eval_path, data_key)}
        config["evaluator"] = EVALUATOR
        # no passes (a baseline run): Olive evaluates the input model and stops; the spec keeps this on
        config["evaluate_input_model"] = spec.evaluation.evaluate_input_model or not spec.passes
    if spec.search is not None:
        s = spec.search
        sampler_config: dict[str, Any] = {"seed": s.seed}
        if s.max_samples:
            sampler_config["max_samples"] = s.max_samples
        strategy: dict[str, Any] = {
            "execution_order": s.execution_order,
            "sampler": s.sampler,
            "sampler_config": sampler_config,
            "stop_when_goals_met": s.stop_when_goals_met,
        }
        if s.max_time_s:
            strategy["max_time"] = s.max_time_s
        config["search_strategy"] = strategy
    return config


def evaluator(spec: RunSpec, eval_path: Path | None, data_key: str) -> dict[str, Any]:
    """Grove's evaluator as an Olive custom metric (engine/evaluate/olive_metric.py) with the user's priorities and
    goals. Without a dataset (``eval_path`` None: benchmark tasks only) the held-out metrics are skipped and speed is
    timed on the built-in prompt set (engine.evaluate.evaluator.speed_texts)."""
    from engine.spec.evaluation import EvalConfig
    from engine.spec.metrics import METRICS, benchmark_metric, stderr_metric

    ev, ds = spec.evaluation, spec.dataset
    data = {} if ds is None else {
        "eval_path": str(eval_path), "text_template": ds.text_template, "chat_template": ds.chat_template,
        "prompt_column": ds.prompt_column, "response_column": ds.response_column, "system_prompt": ds.system_prompt,
        "data_key": data_key, "split_seed": ds.split_seed}
    cfg = EvalConfig(
        **{"eval_path": None, **data}, max_samples=ev.max_eval_samples,
        prompt_length=ev.prompt_length, generation_length=ev.generation_length, repeats=ev.repeats,
        device=spec.target.device, execution_provider=spec.target.execution_provider,
        benchmarks=[{**b.model_dump(), "include_path": str(Path(b.include_path).expanduser().resolve()) if b.include_path
                     else None} for b in ev.benchmarks],
    )
    chosen = {m.name: m for m in ev.metrics}
    sub_types = []
    names = {**{n: METRICS[n] for n in METRICS}, **{benchmark_metric(b.task): METRICS[benchmark_metric(b.task)] for b in ev.benchmarks}}
    for name, info in names.items():
        st: dict[str, Any] = {"name": name, "higher_is_better": info["higher_is_better"], "priority": -1}
        if name in chosen:
            st["priority"] = chosen[name].priority
            if chosen[name].goal is not None:
                st["goal"] = {"type": chosen[name].goal.type, "value": chosen[name].goal.value}
        sub_types.append(st)
    # each benchmark accuracy's standard error rides along (never ranked), so Compare can draw the error bar
    sub_types += [{"name": stderr_metric(b.task), "higher_is_better": False, "priority": -1} for b in ev.benchmarks]
    import dataclasses

    return {
        "metrics": [
            {
                "name": "grove",
                "type": "custom",
                "sub_types": sub_types,
                "user_config": {
                    "user_script": str(Path(__file__).parent.parent / "evaluate" / "olive_metric.py"),
                    "evaluate_func": "evaluate",
                    "evaluate_func_kwargs": {"config": dataclasses.asdict(cfg)},
                },
            }
        ]
    }


def dumps(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, default=str)


# -- reading a stored config back (runs keep the exported JSON text) ---------------------------------------------
def parse(config: str | dict[str, Any] | None) -> dict[str, Any]:
    """A run's stored Olive config as a dict ({} for none or unreadable text)."""
    if isinstance(config, dict):
        return config
    try:
        out = json.loads(config or "{}")
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def output_dir(config: str | dict[str, Any] | None) -> Path | None:
    """Where the workflow writes its output (None when the config names none)."""
    p = parse(config).get("output_dir")
    return Path(p) if p else None


def input_model(config: str | dict[str, Any] | None) -> dict[str, Any]:
    """The workflow's input model as a footprint node describes a model: {"type": ..., "config": {"model_path": ...}}
    (Olive's footprint leaves the input model's own description out)."""
    m = parse(config).get("input_model") or {}
    return {"type": m.get("type"), "config": {"model_path": m.get("model_path")}} if m else {}


def evaluation_cache_key(config: str | dict[str, Any] | None) -> str | None:
    """A short hash of the workflow's evaluators (None when it evaluates nothing). Olive caches a model's
    evaluation by model id alone, so in Grove's shared cache a run measuring a model with other settings (more
    examples, other metrics or goals) would get the numbers of the run before; the runner files Olive's evaluations
    under this key too (engine/runs/olive_cache.py)."""
    import hashlib

    ev = parse(config).get("evaluators")
    return hashlib.sha256(json.dumps(ev, sort_keys=True, default=str).encode()).hexdigest()[:12] if ev else None


def planned_passes(config: str | dict[str, Any] | None) -> list[str]:
    """The workflow's pass names, in order."""
    return list(parse(config).get("passes") or {})


def grove_eval_config(config: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The keyword arguments of Grove's evaluator in the workflow (None when it does not evaluate)."""
    ev = (parse(config).get("evaluators") or {}).get(EVALUATOR)
    if not ev:
        return None
    return ev["metrics"][0]["user_config"]["evaluate_func_kwargs"]["config"]
