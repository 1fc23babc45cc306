"""A model card read from a model folder's files, and a rough memory estimate for each planned pass.

Nothing here imports torch or transformers: the card comes from ``config.json`` (parameters estimated from the
geometry) and from the safetensors headers (exact parameter count and dtypes, read without loading weights).

The memory estimate is deliberately simple and says what it counts: weights x bytes per dtype; for LoRA-style
passes the adapter (upper bound: every linear layer), its gradients and AdamW state, and activations at
``max_seq_len x batch`` (Korthikanti et al.: ~34·s·b·h bytes per layer in 16-bit without checkpointing, ~2·s·b·h
with it) plus fp32 logits; for quantizers, the 16-bit model plus one layer's calibration working set.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from engine import machine
from engine.spec.passes import ADAPTER_PASSES, PT_QUANTIZERS

DTYPE_BYTES = {
    "float64": 8, "fp64": 8, "float32": 4, "fp32": 4, "F32": 4, "float": 4,
    "float16": 2, "fp16": 2, "F16": 2, "half": 2, "bfloat16": 2, "bf16": 2, "BF16": 2,
    "int8": 1, "uint8": 1, "I8": 1, "U8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "fp8": 1,
    "int4": 0.5, "uint4": 0.5, "nf4": 0.5, "fp4": 0.5, "int16": 2, "I16": 2, "int32": 4, "I32": 4, "I64": 8,
}  # fmt: skip
NON_GATED = {"gpt2", "phi", "opt", "gpt_neox", "gptj", "bloom", "falcon", "gpt_bigcode", "bert", "roberta"}
ALIASES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "vocab_size": ("vocab_size",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "max_seq_len"),
}


def _get(cfg: dict[str, Any], key: str) -> Any:
    for k in ALIASES.get(key, (key,)):
        if cfg.get(k) is not None:
            return cfg[k]
    text = cfg.get("text_config") or {}
    for k in ALIASES.get(key, (key,)):
        if text.get(k) is not None:
            return text[k]
    return None


def read_config(model: str | Path) -> dict[str, Any] | None:
    """config.json of a local folder, or of a Hub model already in the local Hugging Face cache (no network)."""
    p = Path(str(model)).expanduser()
    if p.is_dir():
        f = p / "config.json"
        return json.loads(f.read_text()) if f.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(str(model), "config.json")
    except Exception:  # noqa: BLE001 - a malformed id, no cache: no card
        return None
    return json.loads(Path(hit).read_text()) if isinstance(hit, str) else None


def estimate_params(cfg: dict[str, Any]) -> int | None:
    """Parameters of a decoder-only transformer from its geometry (biases ignored)."""
    h, L, v = _get(cfg, "hidden_size"), _get(cfg, "num_hidden_layers"), _get(cfg, "vocab_size")
    if not (h and L and v):
        return None
    heads = _get(cfg, "num_attention_heads") or 1
    kv = cfg.get("num_key_value_heads") or (cfg.get("text_config") or {}).get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or h // heads
    inter = _get(cfg, "intermediate_size") or 4 * h
    mtype = cfg.get("model_type", "")
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    mlp = (2 if mtype in NON_GATED else 3) * h * inter
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 1
    layer = attn + mlp * experts + 2 * h
    emb = v * h * (1 if cfg.get("tie_word_embeddings", mtype in NON_GATED) else 2)
    return int(L * layer + emb + h)


def safetensors_info(folder: Path) -> dict[str, Any] | None:
    """Exact parameter count and bytes per dtype from the safetensors headers (weights are not read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    params, by_dtype = 0, {}
    for f in files:
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > 100_000_000:
                    return None
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for name, t in header.items():
            if name == "__metadata__":
                continue
            numel = 1
            for d in t.get("shape", []):
                numel *= d
            params += numel
            by_dtype[t.get("dtype", "?")] = by_dtype.get(t.get("dtype", "?"), 0) + numel
    return {"params": params, "dtypes": by_dtype}


def model_card(model: str | Path) -> dict[str, Any] | None:
    """What the Model & data page shows about a model; None when no config.json can be read."""
    cfg = read_config(model)
    if cfg is None:
        return None
    p = Path(str(model)).expanduser()
    local = p.is_dir()
    st = safetensors_info(p) if local else None
    qc = cfg.get("quantization_config") or {}
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or (cfg.get("text_config") or {}).get("dtype") or "unknown"
    if st and st["dtypes"]:
        dtype_weights = max(st["dtypes"], key=st["dtypes"].get)
    else:
        dtype_weights = None
    return {
        "architecture": (cfg.get("architectures") or [cfg.get("model_type", "unknown")])[0],
        "model_type": cfg.get("model_type", ""),
        "params_estimated": estimate_params(cfg),
        "params_exact": st["params"] if st else None,
        "dtype": str(dtype),
        "dtype_weights": dtype_weights,
        "quantization": f"{qc.get('quant_method', '?')} {qc.get('bits', '')}-bit".strip() if qc else None,
        "hidden_size": _get(cfg, "hidden_size"),
        "layers": _get(cfg, "num_hidden_layers"),
        "heads": _get(cfg, "num_attention_heads"),
        "kv_heads": cfg.get("num_key_value_heads"),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", cfg.get("model_type", "") in NON_GATED)),
        "intermediate_size": _get(cfg, "intermediate_size"),
        "vocab_size": _get(cfg, "vocab_size"),
        "max_position_embeddings": _get(cfg, "max_position_embeddings"),
        "size_on_disk": machine.dir_size(p) if local else None,
        "local": local,
        "has_tokenizer": local and (p / "tokenizer.json").is_file(),
        "remote_code": bool(cfg.get("auto_map")),
    }


def params_of(card: dict[str, Any]) -> int:
    return int(card.get("params_exact") or card.get("params_estimated") or 0)


def _bytes(dtype: Any, default: float = 4) -> float:
    return DTYPE_BYTES.get(str(dtype).replace("torch.", ""), default)


# Olive's LoRA default targets when a spec names none (Olive's own table first, then peft's)
DEFAULT_LORA_TARGETS = {
    "phi3": ["o_proj", "qkv_proj"], "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"], "phi": ["q_proj", "v_proj", "fc1", "fc2"], "gpt2": ["c_attn"],
}  # fmt: skip


def linear_shapes(card: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each decoder-layer linear, by module name, from the geometry."""
    h = card.get("hidden_size") or 0
    inter = card.get("intermediate_size") or 4 * h
    heads = card.get("heads") or 1
    kv = card.get("kv_heads") or heads
    hd = h // heads if heads else h
    return {
        "qkv_proj": (h, (heads + 2 * kv) * hd), "q_proj": (h, heads * hd), "k_proj": (h, kv * hd),
        "v_proj": (h, kv * hd), "o_proj": (heads * hd, h), "c_attn": (h, 3 * h), "gate_up_proj": (h, 2 * inter),
        "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h), "fc1": (h, inter), "fc2": (inter, h),
    }  # fmt: skip


def lora_params(card: dict[str, Any], r: int, targets: list[str] | None) -> int:
    """Trainable LoRA parameters: r x (in + out) per targeted linear per layer (all linears when unknown)."""
    shapes = linear_shapes(card)
    names = targets or DEFAULT_LORA_TARGETS.get(card.get("model_type", "")) or ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    per_layer = sum(r * sum(shapes[n]) for n in names if n in shapes)
    return int((card.get("layers") or 0) * per_layer)


def pass_memory(
    card: dict[str, Any],
    p: dict[str, Any],
    *,
    seq_len: int = 512,
    stage_bytes: float | None = None,
    device: str = "cpu",
    calib_tokens: int | None = None,
) -> dict[str, Any]:
    """Peak memory estimate of one pass on ``card``'s model. ``stage_bytes``: bytes per weight reaching the pass.
    ``where`` says which memory the peak is in: the GPU's, or host RAM (passes that work on the CPU even in a GPU
    run, such as ModelBuilder, and every pass of a CPU run). ``calib_tokens``: tokens of calibration data, when known
    (quantizers calibrate on at most 128 x 512 tokens)."""
    P = params_of(card)
    h = card.get("hidden_size") or 0
    L = card.get("layers") or 0
    inter = card.get("intermediate_size") or 4 * h
    vocab = card.get("vocab_size") or 0
    t = p.get("type", "")
    params = p.get("params") or {}
    src = stage_bytes or _bytes(card.get("dtype_weights") or card.get("dtype"), 4)
    gpu = device == "gpu"
    where = "host"
    parts: dict[str, float] = {}
    if t in ADAPTER_PASSES:
        dt = params.get("torch_dtype", "bfloat16")
        r = int(params.get("r") or (p.get("search", {}).get("r") or [64])[-1])
        targs = params.get("training_args") or {}
        b = int(targs.get("per_device_train_batch_size") or 8)
        ckpt = bool(targs.get("gradient_checkpointing", True))
        act_b = _bytes(dt, 2)
        emb = vocab * h * (1 if card.get("tie_word_embeddings") else 2)
        if t == "QLoRA":  # nf4 linears (+ fp32 absmax per 64 weights), embeddings and lm_head in 16 bits
            weights = (P - emb) * 0.5 * (1 + 1 / 16) + emb * 2
        else:
            weights = P * _bytes(dt, 2)
        adapter = lora_params(card, r, params.get("target_modules"))
        per_layer = (2 if ckpt else 34) * seq_len * b * h * act_b / 2
        parts = {
            "weights": weights,
            "adapter + grads + AdamW": adapter * 16,
            "activations": per_layer * L + (34 * seq_len * b * h * act_b / 2 if ckpt else 0),
            "logits (fp32)": 2 * b * seq_len * vocab * 4,
        }
        where = "gpu" if gpu else "host"
        basis = (f"{'nf4' if t == 'QLoRA' else dt} weights, r={r} ({adapter / 1e6:.1f} M trainable), "
                 f"batch {b} x {seq_len} tokens, gradient checkpointing {'on' if ckpt else 'off'}")
    elif t in PT_QUANTIZERS:
        layer_w = P / max(L, 1)
        n = max(1, min(128, (calib_tokens or 128 * 512) // 512))
        if gpu:  # layer-wise: the model stays in host RAM, one decoder layer and its calibration inputs on the GPU
            parts = {
                "one layer (16-bit + fp32 working copy)": layer_w * (2 + 4),
                "calibration activations": n * 512 * (4 * h + 2 * inter) * 2,
            }
            if t == "AutoAWQQuantizer":
                # AutoAWQ's scale search allocates tensors of ever-changing sizes; PyTorch's caching allocator then
                # reserved 2.0x the allocated peak (H100, Phi-3-mini geometry: 5.20 GB reserved, 2.60 GB allocated)
                parts["allocator reserve (AutoAWQ scale search)"] = sum(parts.values())
            where = "gpu"
            basis = f"one decoder layer at a time with {n} calibration sequences of 512 tokens (model in host RAM)"
        else:
            parts = {
                "weights (16-bit)": P * 2,
                "one layer in fp32": layer_w * 4 * 2,
                "calibration activations": n * 512 * h * 4,
            }
            basis = "16-bit model with one layer's calibration working set"
    elif t == "ModelBuilder":
        prec = params.get("precision", "fp32")
        parts = {"source weights": P * (src if not gpu else min(src, 2)), "output": P * _bytes(prec, 4)}
        basis = f"source model plus its {prec} ONNX copy (built on the CPU, also in a GPU run)"
    elif t in ("OnnxConversion", "OptimumConversion"):
        parts = {"source weights": P * src, "exported graph": P * 4}
        basis = "PyTorch model plus the exported fp32 graph"
    else:
        parts = {"model": P * src, "working copy": P * src}
        basis = "the model and one working copy"
    total = sum(parts.values()) * 1.1  # allocator and framework overhead
    return {
        "pass": p.get("name") or t.lower(),
        "type": t,
        "bytes": int(total),
        "where": where,
        "parts": {k: int(v) for k, v in parts.items()},
        "basis": basis,
    }


def plan_memory(
    card: dict[str, Any],
    passes: list[dict[str, Any]],
    *,
    seq_len: int = 512,
    device: str = "cpu",
    calib_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Per planned pass, following the weight precision along the chain (a quantizer makes later passes smaller)."""
    out = []
    stage: float | None = None
    for p in passes:
        out.append(pass_memory(card, p, seq_len=seq_len, stage_bytes=stage, device=device, calib_tokens=calib_tokens))
        t, params = p.get("type"), p.get("params") or {}
        if t in ("AutoAWQQuantizer", "GptqQuantizer", "Gptq", "GptqModel", "Rtn"):
            stage = _bytes(f"int{params.get('bits', params.get('w_bit', 4))}", 0.5)
        elif t == "AwqDequantize":
            stage = _bytes(params.get("torch_dtype", "float16"), 2)
        elif t == "ModelBuilder":
            stage = _bytes(params.get("precision", "fp32"), 4)
    return out

