"""Every fix Grove needs in Olive 0.13 for its pinned package set, in one place.

With the pinned set (README "Why these versions") Olive's own passes need no patch for the demo recipe. On a CUDA 13
GPU host, where onnxruntime-genai-cuda 0.15.2 replaces 0.14.1 (built for CUDA 12), P2 makes ModelBuilder work. Workflows
with Grove's evaluator (an Olive *custom metric*) hit three Olive bugs that no version pin avoids
(../shared/NOTES-olive.md, "Patches still needed"):

- P4 ``Metric.serialize_backend`` / ``SubMetric.serialize_metric_config`` crash on ``None`` (every custom metric has
  ``backend=None``), so ``RunConfig.to_json()`` raises before the workflow starts. Not fixed on Olive main.
- P6 Olive round-trips configs through ``model_dump()``; pydantic 2 dumps ``Metric.user_config`` (declared as the
  base ``ConfigBase``) as ``{}``, losing ``evaluate_func`` and the search sampler settings. Fixed by dumping with
  ``serialize_as_any=True``.
- P7 ``FootprintNode.update(model_config=...)`` fails for searched/cached steps (the field is ``model_config_data``).
  Fixed on Olive main after 0.13.0.
- P8 ``Engine.resolve_goals`` leaves its loop at the first sub-metric that has no goal and returns no goals at all
  when no baseline was needed, so threshold goals, and goals on any but the first metric, are silently ignored
  (every candidate "meets its goals"). Found here; not in the notes.

G1 is not a fix: it adds Grove's own passes (``engine.olive.passes``: ``AwqDequantize``) to Olive's pass catalog so
workflows, and exported configs run with ``olive run``, can name them.

Each patch checks that it is still needed (``needed()``) and applies only then; ``tests/engine/test_olive_compat.py``
fails as soon as an upstream release no longer needs one, so it can be deleted.

So that an exported config runs unchanged with ``olive run --config`` (not only inside Grove's runner), the patches
are also applied in any Python process of Grove's environment that imports Olive: ``install_hook()`` writes
``grove_olive_compat.pth`` into site-packages (the same mechanism setuptools uses for its distutils shim). The hook
costs one small import at start-up and touches Olive only when Olive itself is imported.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.util
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

_applied: set[str] = set()
PTH_NAME = "grove_olive_compat.pth"
PTH_LINE = (
    "import importlib.util as _u; "
    "_u.find_spec('engine') and _u.find_spec('engine.olive.compat') and "
    "__import__('importlib').import_module('engine.olive.compat').register_hook()\n"
)


def _probe_metric() -> Any:
    from olive.evaluator.metric import Metric

    return Metric(name="m", type="custom", sub_types=[{"name": "x"}],
                  user_config={"user_script": __file__, "evaluate_func": "apply"})


# -- P4 ---------------------------------------------------------------------------------------------------------
def _p4_needed() -> bool:
    from olive.evaluator.olive_evaluator import OliveEvaluatorConfig

    try:
        OliveEvaluatorConfig(metrics=[_probe_metric()]).model_dump()
    except Exception:
        return True
    return False


def _p4_apply() -> None:
    from olive.evaluator.metric import Metric, SubMetric

    def serialize_backend(self: Any, backend: Any) -> Any:
        return backend if backend is None or isinstance(backend, str) else backend.model_dump()

    def serialize_metric_config(self: Any, metric_config: Any) -> Any:
        return None if metric_config is None else metric_config.model_dump()

    _replace_serializer(SubMetric, "serialize_metric_config", serialize_metric_config)
    _replace_serializer(Metric, "serialize_backend", serialize_backend)
    _rebuild_olive_models()


def _rebuild_olive_models() -> None:
    """Models that contain Metric (evaluator configs, RunConfig...) embed its old serializer: rebuild them all."""
    from pydantic import BaseModel

    def subclasses(k: type) -> Any:
        for sub in k.__subclasses__():
            yield sub
            yield from subclasses(sub)

    models = [k for k in set(subclasses(BaseModel)) if k.__module__.startswith("olive.") and k.__dict__.get("__pydantic_complete__")]
    for _ in range(2):  # twice, so containers pick up rebuilt members whatever the order
        for k in models:
            try:
                k.model_rebuild(force=True)
            except Exception:
                pass


def _replace_serializer(cls: Any, name: str, fn: Callable[..., Any]) -> None:
    decs = cls.__pydantic_decorators__.field_serializers
    decs[name] = dataclasses.replace(decs[name], func=fn)
    setattr(cls, name, fn)
    cls.model_rebuild(force=True)


# -- P6 ---------------------------------------------------------------------------------------------------------
def _p6_needed() -> bool:
    from olive.common.config_utils import ConfigBase

    class Inner(ConfigBase):
        x: int = 1

    class Outer(ConfigBase):
        inner: ConfigBase  # declared as the base class, as Metric.user_config is

    return Outer(inner=Inner()).model_dump()["inner"] != {"x": 1}


def _p6_apply() -> None:
    from olive.common.config_utils import ConfigBase

    original = ConfigBase.model_dump

    def model_dump(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("serialize_as_any", True)
        return original(self, *args, **kwargs)

    ConfigBase.model_dump = model_dump  # type: ignore[method-assign]


# -- P7 ---------------------------------------------------------------------------------------------------------
def _p7_needed() -> bool:
    from olive.engine.footprint import FootprintNode

    node = FootprintNode(model_id="a")
    try:
        node.update(model_config={"x": 1})
    except Exception:
        return True
    return node.model_config_data != {"x": 1}


def _p7_apply() -> None:
    from olive.engine.footprint import FootprintNode

    def update(self: Any, **kwargs: Any) -> None:
        if "model_config" in kwargs:
            kwargs["model_config_data"] = kwargs.pop("model_config")
        for k, v in kwargs.items():
            setattr(self, k, v)

    FootprintNode.update = update  # type: ignore[method-assign]


# -- P8 ---------------------------------------------------------------------------------------------------------
def _p8_needed() -> bool:
    """Engine.resolve_goals stops at the first sub-metric without a goal and drops threshold goals when no
    baseline was computed, so goals on any but the first metric are silently ignored (if_goals_met always True)."""
    import inspect

    from olive.engine.engine import Engine

    src = inspect.getsource(Engine.resolve_goals)
    return "if not sub_goal:" in src and "if not baseline:" in src


def _p8_apply() -> None:
    from olive.engine.engine import Engine
    from olive.evaluator.metric_result import joint_metric_key

    def resolve_goals(self: Any, input_model_config: Any, input_model_id: str, metrics: Any, accelerator_spec: Any) -> dict:
        goals, multipliers = {}, {}
        for metric in metrics:
            goals[metric.name] = metric.get_sub_type_info("goal")
            multipliers[metric.name] = metric.get_sub_type_info(info_name="higher_is_better", callback=lambda x: 1 if x else -1)
        relative = any(g is not None and g.type != "threshold" for sub in goals.values() for g in sub.values())
        baseline = self._evaluate_model(input_model_config, input_model_id, self.evaluator_config, accelerator_spec) if relative else None
        resolved = {}
        for metric_name, sub_goals in goals.items():
            for sub_name, goal in sub_goals.items():
                value = None
                if goal is not None:
                    if goal.type == "threshold":
                        value = goal.value
                    else:
                        base = baseline.get_value(metric_name, sub_name)
                        m = multipliers[metric_name][sub_name]
                        value = {
                            "max-degradation": base - m * goal.value,
                            "min-improvement": base + m * goal.value,
                            "percent-max-degradation": base * (1 - m * goal.value / 100),
                            "percent-min-improvement": base * (1 + m * goal.value / 100),
                        }[goal.type]
                resolved[joint_metric_key(metric_name, sub_name)] = value
        return resolved

    Engine.resolve_goals = resolve_goals  # type: ignore[method-assign]


# -- P1 ---------------------------------------------------------------------------------------------------------
def _p1_needed() -> bool:
    """Olive 0.13's ModelBuilder pass imports ``onnxruntime_genai.models.quantized_model`` (to patch it) whenever
    genai >= 0.9; genai 0.16 and later have no such module, so every ModelBuilder run fails there."""
    try:
        import onnxruntime_genai  # noqa: F401
        from olive.passes.onnx.model_builder import ModelBuilder
    except Exception:
        return False
    if getattr(ModelBuilder.maybe_patch_quant, "_grove_p1", False):
        return False
    return importlib.util.find_spec("onnxruntime_genai.models.quantized_model") is None


def _p1_apply() -> None:
    """Patch genai's old quantized-model loader only where genai still has it (what Olive main does)."""
    from olive.passes.onnx.model_builder import ModelBuilder

    original = ModelBuilder.maybe_patch_quant

    def maybe_patch_quant() -> None:
        if importlib.util.find_spec("onnxruntime_genai.models.quantized_model") is not None:
            original()

    maybe_patch_quant._grove_p1 = True  # type: ignore[attr-defined]
    ModelBuilder.maybe_patch_quant = staticmethod(maybe_patch_quant)


# -- P2 ---------------------------------------------------------------------------------------------------------
def _p2_needed() -> bool:
    """onnxruntime-genai >= 0.15 (the CUDA 13 GPU set) wants ``create_model`` options prepared by
    ``check_extra_options`` (``hf_details``...), which Olive 0.13's ModelBuilder pass does not call; genai >= 0.16
    also no longer reads the ``int4_*`` option names Olive sends (``int4_block_size``, ``int4_nodes_to_exclude``...):
    they are silently ignored."""
    import inspect

    try:
        from onnxruntime_genai.models import builder
    except Exception:
        return False
    if getattr(builder.create_model, "_grove_p2", False):
        return False
    return "hf_details" in inspect.getsource(builder.create_model) and hasattr(builder, "check_extra_options")


def _p2_apply() -> None:
    """Olive main's fix: normalise Olive's Python values to the builder's string options, rename the ``int4_*``
    options to the names genai reads (``int4_block_size`` -> ``block_size``...; 0.15 did this itself), then
    ``check_extra_options`` before ``create_model``."""
    from onnxruntime_genai.models import builder

    original = builder.create_model

    def create_model(model_name: Any, input_path: Any, output_dir: Any, precision: Any, execution_provider: Any,
                     cache_dir: Any, **extra: Any) -> Any:
        if "hf_details" not in extra:
            opts = {}
            for k, v in extra.items():
                if isinstance(v, bool):
                    v = "true" if v else "false"
                elif isinstance(v, (list, tuple)):
                    v = ("/" if k.endswith("op_types_to_quantize") else ",").join(str(x) for x in v)
                opts[k] = v
            for k in [k for k in opts if k.startswith("int4_")]:
                opts.setdefault(k[len("int4_"):], opts[k])
                del opts[k]
            builder.check_extra_options(model_name, input_path, output_dir, precision, execution_provider, cache_dir, opts)
            extra = opts
        return original(model_name, input_path, output_dir, precision, execution_provider, cache_dir, **extra)

    create_model._grove_p2 = True  # type: ignore[attr-defined]
    builder.create_model = create_model


# -- P10: Olive's pre-quantized ModelBuilder path calls a builder method genai 0.15 renamed -------------------------
def _p10_needed() -> bool:
    """Olive 0.13's ModelBuilder pass, for a model already quantized by Olive (``Gptq``, ``quant_method: olive``),
    replaces the builder's ``make_packed_matmul_int4`` with one that ends in ``self.make_matmul_int4(...)``; genai
    0.15 renamed that method ``make_matmul_nbits`` (same arguments, same pre-quantized ``qweight``/``scales``/
    ``qzeros``/``g_idx`` handling), so Gptq -> ModelBuilder failed on the GPU set with ``AttributeError: 'LlamaModel'
    object has no attribute 'make_matmul_int4'`` (seen on an H100, 2026-12-07)."""
    try:
        from onnxruntime_genai.models import builder
    except Exception:
        return False
    model = getattr(builder, "Model", None)
    return model is not None and not hasattr(model, "make_matmul_int4") and hasattr(model, "make_matmul_nbits")


def _p10_apply() -> None:
    from onnxruntime_genai.models import builder

    builder.Model.make_matmul_int4 = builder.Model.make_matmul_nbits


# -- P11: ExtractAdapters lists every adapter weight twice among the graph's inputs --------------------------------
def _p11_duplicates() -> list[str]:
    """Runs ExtractAdapters' two input steps on a one-weight model (as its ``make_inputs`` path does, with its
    defaults ``dynamic_lora_r`` and ``optional_inputs``) and returns the input names listed more than once."""
    import types

    import numpy as np
    import onnx_ir as ir
    from olive.passes.onnx.extract_adapters import ExtractAdapters

    name = "probe.lora_A.MatMul.weight"
    w = np.ones((4, 2), np.float32)
    value = ir.Value(name=name, shape=ir.Shape([4, 2]), type=ir.TensorType(ir.DataType.FLOAT), const_value=ir.tensor(w, name=name))
    model = ir.Model(ir.Graph(inputs=[], outputs=[], nodes=[], initializers=[value], opset_imports={"": 17}), ir_version=10)
    step = ExtractAdapters.__new__(ExtractAdapters)
    step._convert_initializer_to_input(model, name)
    step._make_dynamic_optional(model, {name: w}, name, types.SimpleNamespace(dynamic_lora_r=True, optional_inputs=True))
    names = [i.name for i in model.graph.inputs]
    return sorted({n for n in names if names.count(n) > 1})


def _p11_needed() -> bool:
    """Olive 0.13's ExtractAdapters (``make_inputs``, the adapter build's) turns each LoRA weight into a graph input
    in ``_convert_initializer_to_input`` and appends the same value to the inputs again in ``_make_dynamic_optional``:
    every adapter weight is listed twice, a graph that breaks ONNX's single-assignment rule (``onnx.checker``: "Graph
    must be in single static assignment (SSA) form ... used as graph input names multiple times"; seen on the demo's
    adapter build, 2026-12-07). onnxruntime tolerates it (it warns per weight and hides defaulted inputs), so
    Grove's runs never showed it; ONNX tools that walk the graph's inputs see each adapter weight twice. A cache
    entry built before this fix keeps the double listing until it is rebuilt."""
    return bool(_p11_duplicates())


def _p11_apply() -> None:
    from olive.passes.onnx.extract_adapters import ExtractAdapters

    original = ExtractAdapters._make_dynamic_optional

    def _make_dynamic_optional(self: Any, model: Any, weights: Any, name: str, config: Any) -> None:
        original(self, model, weights, name, config)
        inputs, seen, again = model.graph.inputs, set(), []
        for k, v in enumerate(inputs):
            if id(v) in seen:
                again.append(k)  # the second listing of a value already among the inputs
            seen.add(id(v))
        for k in reversed(again):
            inputs.pop(k)

    ExtractAdapters._make_dynamic_optional = _make_dynamic_optional  # type: ignore[method-assign]


# -- G2: the fused qkv projection kept when a LoRA adapter targets it -------------------------------------------
FUSE_LORA_QKV = "grove_fuse_lora_qkv"  # ModelBuilder extra option (Grove's CUDA default for adapter builds)


def g2_layout(model: Any) -> str | None:
    """Which of genai's builder layouts G2 patches, or None: ``"0.16"`` (``is_packed_matmul_supported`` refuses LoRA)
    or ``"0.14"`` (genai 0.14/0.15: ``make_attention_init`` sets ``use_packed_matmul`` off when LoRA is present).
    Both build the attention input projection in ``make_attention_input_proj`` and LoRA in ``make_matmul_lora``."""
    import inspect

    if model is None or not all(hasattr(model, m) for m in ("make_attention_input_proj", "make_matmul_lora")):
        return None
    try:
        if hasattr(model, "is_packed_matmul_supported"):
            return "0.16" if "use_lora" in inspect.getsource(model.is_packed_matmul_supported) else None
        init = getattr(model, "make_attention_init", None)
        if init is not None and 'matmul_attrs["use_lora"]' in inspect.getsource(init):
            return "0.14"
    except (OSError, TypeError):
        return None
    return None


def _g2_needed() -> bool:
    """genai's builder splits a fused ``qkv_proj`` into three projections when a LoRA adapter targets it
    (0.16+: ``is_packed_matmul_supported`` refuses LoRA; 0.14/0.15: ``use_packed_matmul`` is off with LoRA): three
    int4 MatMulNBits and three LoRA A/B pairs per layer instead of one each, which costs decode speed on CUDA. With the
    extra option ``grove_fuse_lora_qkv=true`` the patched builder keeps the fused projection: one int4 MatMulNBits,
    one LoRA A (shared, as PEFT trained it), one LoRA B, one Add, feeding GroupQueryAttention's packed input (also
    when the adapter leaves qkv alone: genai splits it as soon as any LoRA is present). Without the option nothing
    changes. It also lets ``fuse_mlp_gate_up`` build adapted gate/up projections unfused instead of refusing the whole
    model (0.16+; 0.14/0.15 have no such option)."""
    try:
        from onnxruntime_genai.models import builder
    except Exception:
        return False
    model = getattr(builder, "Model", None)
    if model is None or getattr(model, "_grove_g2", False):
        return False
    return g2_layout(model) is not None


def _g2_apply() -> None:
    from onnxruntime_genai.models import builder

    model = builder.Model
    original = model.make_attention_input_proj

    def fused(self: Any, attention: Any) -> bool:
        qkv = getattr(attention, "qkv_proj", None)
        opt = str(self.extra_options.get(FUSE_LORA_QKV, "false")).lower() in ("1", "true")
        base = getattr(qkv, "base_layer", qkv)
        return (
            opt
            and qkv is not None
            and hasattr(base, "weight") and not hasattr(base, "qweight") and getattr(base, "quant_type", "none") == "none"
            and getattr(base, "bias", None) is None
            and self.attention_attrs.get("op_type") == "GroupQueryAttention"
            and self.attention_attrs.get("use_rope_in_attn", False)
            and not self.attention_attrs.get("use_matmul_in_attn", False)
            and not self.attention_attrs.get("q_norm") and not self.attention_attrs.get("k_norm")
            and self.extra_options.get("fuse_qkv", True) not in (False, "false", "0")
        )

    def make_attention_input_proj(self: Any, layer_id: int, attention: Any, root_input: str, **kwargs: Any) -> None:
        if not fused(self, attention):
            return original(self, layer_id, attention, root_input, **kwargs)
        # base int4 MatMul + LoRA A/B + Add on the fused projection (make_matmul_lora); an empty key/value path
        # makes GroupQueryAttention read Q, K and V from the packed query input, as in a build without LoRA
        name = self.make_matmul(attention.qkv_proj, f"/model/layers.{layer_id}/attn/qkv_proj/MatMul", root_input)
        self.attention_attrs["q_path"] = f"{name}/output_0"
        self.attention_attrs["k_path"] = ""
        self.attention_attrs["v_path"] = ""

    original_mlp_fused = getattr(model, "make_mlp_proj_fused", None)

    def make_mlp_proj_fused(self: Any, layer_id: int, mlp: Any, root_input: str) -> None:
        # fuse_mlp_gate_up refuses adapted gate/up projections (ValueError): build those unfused instead
        if hasattr(mlp.gate_proj, "base_layer") or hasattr(mlp.up_proj, "base_layer"):
            return self.make_mlp_proj(layer_id, mlp, root_input)
        return original_mlp_fused(self, layer_id, mlp, root_input)

    model.make_attention_input_proj = make_attention_input_proj
    if original_mlp_fused is not None and hasattr(model, "make_mlp_proj"):
        model.make_mlp_proj_fused = make_mlp_proj_fused
    model._grove_g2 = True


# -- P9: AutoAWQ calibrates on what was asked, and its knobs ---------------------------------------------------
# Olive's AutoAWQQuantizer hands AutoAWQ only a dataset name; AutoAWQ then takes max_calib_samples (128) *texts*,
# concatenates them and cuts 512-token blocks: short texts give far fewer blocks than asked (Grove's travel data:
# 21 blocks of 512 tokens from 128 texts, 10,752 tokens instead of 128 x 512). The knobs that trade time for
# quality are not exposed either.
AWQ_KNOBS: dict[str, tuple[Any, type, str]] = {
    "max_calib_samples": (128, int, "Calibration blocks of max_calib_seq_len tokens to use (packed from the data's "
                          "texts; all the data holds if fewer). Time grows with it."),
    "max_calib_seq_len": (512, int, "Tokens per calibration block."),
    "n_parallel_calib_samples": (None, int, "Blocks run through a layer at once (None: all); lower it to save memory."),
    "apply_clip": (True, bool, "Search clipping ranges after the scales (AWQ's second step; off saves time, costs "
                   "some accuracy)."),
    "n_grid": (20, int, "Grid points of the scale search and of the clip search (AutoAWQ: 20). Time grows with it."),
}
_awq_knobs: Any = None  # contextvars.ContextVar, created on first use


def _awq_var() -> Any:
    global _awq_knobs
    if _awq_knobs is None:
        import contextvars

        _awq_knobs = contextvars.ContextVar("grove_awq_knobs", default=None)
    return _awq_knobs


def awq_calib_blocks(texts: list[str], tokenizer: Any, n: int, seq_len: int, seed: int = 42) -> list[list[int]]:
    """``n`` blocks of ``seq_len`` tokens packed from ``texts`` (shuffled with AutoAWQ's seed), or every full block
    the texts hold when that is fewer: what AutoAWQ's ``max_calib_samples`` / ``max_calib_seq_len`` ask for."""
    import random

    order = random.Random(seed).sample(range(len(texts)), len(texts))
    buf: list[int] = []
    blocks: list[list[int]] = []
    for i in order:
        buf.extend(tokenizer.encode(str(texts[i]).strip()))
        while len(buf) >= seq_len and len(blocks) < n:
            blocks.append(buf[:seq_len])
            buf = buf[seq_len:]
        if len(blocks) >= n:
            break
    return blocks


def _p9_needed() -> bool:
    try:
        from olive.passes.pytorch.autoawq import AutoAWQQuantizer
    except Exception:
        return False
    return "max_calib_samples" not in AutoAWQQuantizer._default_config(None)


def _patch_autoawq() -> None:
    """AutoAWQ side (imported only when an AWQ pass runs): packed calibration blocks and the grid size."""
    import inspect
    import textwrap

    from awq.models.base import BaseAWQForCausalLM
    from awq.quantize import quantizer as q

    if getattr(BaseAWQForCausalLM.quantize, "_grove_p9", False):
        return
    original = BaseAWQForCausalLM.quantize

    def quantize(self: Any, *args: Any, **kw: Any) -> Any:
        knobs = _awq_var().get()
        if knobs:
            n, seq = knobs["max_calib_samples"], knobs["max_calib_seq_len"]
            data = kw.get("calib_data")
            tok = kw.get("tokenizer", args[0] if args else None)
            if isinstance(data, str) and data != "pileval":
                from datasets import load_dataset

                ds = load_dataset(data, split=kw.get("split") or "train")
                blocks = awq_calib_blocks(ds[kw.get("text_column") or "text"], tok, n, seq)
                if not blocks:
                    raise ValueError(f"AWQ calibration data {data} holds no block of {seq} tokens")
                print(f"grove: AutoAWQ calibrates on {len(blocks)} blocks of {seq} tokens (asked {n}; the data holds "
                      f"{len(ds)} texts)", file=sys.stderr, flush=True)
                kw["calib_data"] = blocks
            kw.update(max_calib_samples=n, max_calib_seq_len=seq, apply_clip=knobs["apply_clip"],
                      n_parallel_calib_samples=knobs["n_parallel_calib_samples"])
        return original(self, *args, **kw)

    quantize._grove_p9 = True  # type: ignore[attr-defined]
    BaseAWQForCausalLM.quantize = quantize

    # the scale search's grid is a literal in _compute_best_scale: recompile that method with the knob in its place
    src = textwrap.dedent(inspect.getsource(q.AwqQuantizer._compute_best_scale))
    # P12: the grid's weights restored from a copy kept on the device, not from host memory at every grid point
    src = src.replace("org_sd = {k: v.cpu() for k, v in", "org_sd = {k: v.detach().clone() for k, v in", 1)
    if "n_grid = 20" in src:
        src = src.replace("n_grid = 20", "n_grid = _grove_n_grid()", 1)
        ns = dict(vars(q))
        ns["_grove_n_grid"] = lambda: (_awq_var().get() or {}).get("n_grid") or 20
        exec(compile(src, inspect.getsourcefile(q) or "awq/quantize/quantizer.py", "exec"), ns)  # noqa: S102
        q.AwqQuantizer._compute_best_scale = ns["_compute_best_scale"]
    original_clip = q.AwqQuantizer._compute_best_clip

    def _compute_best_clip(self: Any, w: Any, input_feat: Any, *args: Any, **kw: Any) -> Any:
        grid = (_awq_var().get() or {}).get("n_grid")
        if grid and not args and "n_grid" not in kw:
            kw["n_grid"] = grid
        return original_clip(self, w, input_feat, *args, **kw)

    q.AwqQuantizer._compute_best_clip = _compute_best_clip
    _p12_fast_pack()


# -- P12: AutoAWQ packs its 4-bit weights one column at a time ----------------------------------------------------
# WQLinear_GEMM.from_linear (AutoAWQ 0.2.9) rounds the weights one input column at a time and packs them one output
# column at a time: ~17,000 + ~32,000 tiny tensor operations for one Phi-3-mini layer, each a kernel launch on a GPU.
# P12 does the same arithmetic on whole tensors (bit-identical: the same element-wise fp16 operations, the same int32
# shifts and ors; tests/engine/test_awq_calibration.py compares every packed tensor with AutoAWQ's own). With it, the
# scale search keeps the weights it restores at each grid point on the device (above) instead of in host memory.
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ's GEMM layout: the nibble order inside one int32


def awq_pack_int4(values: Any) -> Any:
    """[rows, cols] int32 of 4-bit values -> [rows, cols / 8] int32 in AutoAWQ's GEMM order."""
    import torch

    v = values.view(values.shape[0], values.shape[1] // 8, 8)
    packed = torch.zeros((values.shape[0], values.shape[1] // 8), dtype=torch.int32, device=values.device)
    for i, j in enumerate(AWQ_PACK_ORDER):
        packed |= v[:, :, j] << (i * 4)
    return packed


def _p12_needed(gemm: Any) -> bool:
    import inspect

    try:
        src = inspect.getsource(gemm.from_linear)
    except (OSError, TypeError):
        return False
    return "for idx in range(awq_linear.in_features)" in src and "order_map = [0, 2, 4, 6, 1, 3, 5, 7]" in src


def _p12_fast_pack() -> None:
    from awq.modules.linear import gemm as g

    cls = g.WQLinear_GEMM
    if getattr(cls.from_linear, "_grove_p12", False) or not _p12_needed(cls):
        return
    original = cls.from_linear.__func__

    def from_linear(klass: Any, linear: Any, w_bit: int, group_size: int, init_only: bool = False,
                    scales: Any = None, zeros: Any = None) -> Any:
        import torch

        if init_only or w_bit != 4 or scales is None or zeros is None:
            return original(klass, linear, w_bit, group_size, init_only, scales, zeros)
        awq_linear = klass(w_bit, group_size, linear.in_features, linear.out_features, linear.bias is not None,
                           linear.weight.device)
        scale_zeros = zeros * scales
        awq_linear.scales = scales.clone().half()
        if linear.bias is not None:
            awq_linear.bias = linear.bias.clone().half()
        # AutoAWQ: round((w[:, i] + scale_zeros[i // g]) / scales[i // g]) for each input column i
        sz = scale_zeros.repeat_interleave(group_size, dim=0)
        sc = awq_linear.scales.repeat_interleave(group_size, dim=0)
        intweight = torch.round((linear.weight.data.t() + sz) / sc).to(torch.int).contiguous().to(torch.int32)
        awq_linear.qweight = awq_pack_int4(intweight)
        awq_linear.qzeros = awq_pack_int4(zeros.to(dtype=torch.int32, device=g.get_best_device()))
        return awq_linear

    from_linear._grove_p12 = True  # type: ignore[attr-defined]
    from_linear._grove_original = original  # type: ignore[attr-defined]
    cls.from_linear = classmethod(from_linear)


def _p9_apply() -> None:
    from olive.passes.olive_pass import PassConfigParam
    from olive.passes.pytorch.autoawq import AutoAWQQuantizer

    original_default = AutoAWQQuantizer._default_config.__func__
    original_run = AutoAWQQuantizer._run_for_config

    def _default_config(cls: Any, accelerator_spec: Any) -> Any:
        cfg = original_default(cls, accelerator_spec)
        for name, (default, typ, what) in AWQ_KNOBS.items():
            cfg[name] = PassConfigParam(type_=typ, default_value=default, description=what)
        return cfg

    def _run_for_config(self: Any, model: Any, config: Any, output_model_path: str) -> Any:
        _patch_autoawq()
        token = _awq_var().set({k: getattr(config, k, d) for k, (d, _, _) in AWQ_KNOBS.items()})
        try:
            return original_run(self, model, config, output_model_path)
        finally:
            _awq_var().reset(token)

    AutoAWQQuantizer._default_config = classmethod(_default_config)
    AutoAWQQuantizer._run_for_config = _run_for_config


# -- G1: Grove's own passes in Olive's catalog ------------------------------------------------------------------
def _g1_needed() -> bool:
    """Olive resolves a pass type through its package config (``olive_config.json``, parsed afresh by
    ``olive.workflows.run`` and cached by ``load_default_config``); Grove's passes (``engine.olive.passes``) are in
    neither."""
    from olive.package_config import OlivePackageConfig

    from engine.olive.passes import GROVE_PASSES

    fresh = OlivePackageConfig.parse_file_or_obj(OlivePackageConfig.get_default_config_path()).passes
    cached = OlivePackageConfig.load_default_config().passes
    return any(name.lower() not in known for name in GROVE_PASSES for known in (fresh, cached))


def _g1_add(cfg: Any) -> Any:
    from olive.passes import PassModuleConfig

    from engine.olive.passes import GROVE_PASSES

    if isinstance(getattr(cfg, "passes", None), dict):
        for name, entry in GROVE_PASSES.items():
            cfg.passes.setdefault(name.lower(), PassModuleConfig(**entry))
    return cfg


def _g1_apply() -> None:
    from olive.package_config import OlivePackageConfig

    original = OlivePackageConfig.parse_file_or_obj.__func__

    def parse_file_or_obj(cls: Any, file_or_obj: Any) -> Any:
        cfg = original(cls, file_or_obj)
        return _g1_add(cfg) if cls is OlivePackageConfig else cfg

    OlivePackageConfig.parse_file_or_obj = classmethod(parse_file_or_obj)
    _g1_add(OlivePackageConfig.load_default_config())  # lru-cached: the instance Olive's engine and CLI reuse


PATCHES: dict[str, tuple[Callable[[], bool], Callable[[], None]]] = {
    "G1 Grove's passes (AwqDequantize) in Olive's catalog": (_g1_needed, _g1_apply),
    "P1 genai>=0.16 has no quantized_model (GPU set only)": (_p1_needed, _p1_apply),
    "P2 genai>=0.15 create_model options (GPU set only)": (_p2_needed, _p2_apply),
    "G2 fused qkv projection with LoRA (with grove_fuse_lora_qkv)": (_g2_needed, _g2_apply),
    "P10 genai>=0.15 renamed make_matmul_int4 (GPU set only)": (_p10_needed, _p10_apply),
    "P11 ExtractAdapters lists each adapter weight once among the inputs": (_p11_needed, _p11_apply),
    "P4 custom metric serializers accept None": (_p4_needed, _p4_apply),
    "P6 dump subclass fields (serialize_as_any)": (_p6_needed, _p6_apply),
    "P7 FootprintNode.update(model_config=...)": (_p7_needed, _p7_apply),
    "P8 Engine.resolve_goals honours every goal": (_p8_needed, _p8_apply),
    "P9 AutoAWQ calibrates on the blocks asked; its knobs": (_p9_needed, _p9_apply),
}


def apply() -> list[str]:
    """Apply every patch that is still needed (idempotent). Returns the names applied by this call."""
    done = []
    for name, (needed, fix) in PATCHES.items():
        if name in _applied:
            continue
        if needed():
            fix()
            done.append(name)
        _applied.add(name)
    return done


# -- the import hook --------------------------------------------------------------------------------------------
class _Hook(importlib.abc.MetaPathFinder):
    """Applies the patches right after ``olive.workflows.run.run`` (what ``olive run`` and Grove's runner call) is
    first imported, in any process; by then every module the patches touch can be imported safely."""

    target = "olive.workflows.run.run"

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            try:
                apply()
            except Exception as e:  # never break an import of Olive
                print(f"grove: Olive compatibility patches not applied: {e}", file=sys.stderr)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def register_hook() -> None:
    if _Hook.target in sys.modules:
        apply()
    elif not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


def hook_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / PTH_NAME


def install_hook() -> Path:
    p = hook_path()
    if not p.is_file() or p.read_text() != PTH_LINE:
        p.write_text(PTH_LINE)
    return p


if __name__ == "__main__":
    if sys.argv[1:] == ["--install"]:
        print(f"installed {install_hook()}")
    else:
        print("\n".join(apply()) or "no patch needed")
