"""Adapters checked against the model before anything loads them, and the names they are listed under.

- ``adapter_name(path)``: an ``.onnx_adapter`` file's name in chat (its stem; ``adapter_weights`` is "adapter").
- ``onnx_graph_inputs`` / ``read_onnx_adapter`` / ``check_onnx_adapter``: an ``.onnx_adapter`` whose tensor names,
  shapes or types are not inputs of the graph (e.g. converted for another graph: NOTES-olive C.9) is refused.
- ``check_peft_adapter``: a PEFT adapter folder whose target modules the model does not have is refused;
  ``peft_problems`` turns peft's own load error into the offending lines.

Refusals raise ``AdapterMismatch`` naming the file and the first offenders. onnx and onnxruntime are imported inside
functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import GroveError, ModelError

NO_ADAPTER = "none"  # the base model, in every list of adapters
DEFAULT_ADAPTER_NAME = "adapter"  # what ``adapter_weights.onnx_adapter`` (and a candidate's PEFT adapter) is called


class AdapterMismatch(GroveError):
    """An adapter does not fit the model it is meant for. ``adapter`` is the file or folder, ``problems`` the offenders."""

    def __init__(self, adapter: Path | str, problems: list[str], *, what: str, hint: str = "") -> None:
        self.adapter = str(adapter)
        self.problems = problems
        shown = problems[:5]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        super().__init__(
            f"Adapter {self.adapter} does not match the model: {what}: " + "; ".join(shown) + more,
            hint=hint
            or "Use an adapter produced for this model (for ONNX: the adapter_weights.onnx_adapter of a run with "
            "the same base and ModelBuilder settings; adapters from `olive convert-adapters` have PEFT names and "
            "do not fit ModelBuilder graphs).",
        )


def adapter_name(path: Path | str) -> str:
    """The name an adapter file is listed under: its stem; ``adapter_weights`` (what ExtractAdapters writes) is "adapter"."""
    p = Path(path)
    stem = p.name[: -len(".onnx_adapter")] if p.name.endswith(".onnx_adapter") else p.name
    return DEFAULT_ADAPTER_NAME if stem == "adapter_weights" else stem


_INPUTS_CACHE: dict[tuple[str, float], dict[str, tuple[str, tuple[Any, ...]]]] = {}


def onnx_graph_inputs(model_file: Path) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """``{input name: (type, shape)}`` of an ONNX graph; type like ``tensor(float)``, a shape dim is an int or a
    symbol. Reads the graph only (no external data)."""
    import onnx

    key = (str(model_file), model_file.stat().st_mtime if model_file.exists() else 0.0)
    if key in _INPUTS_CACHE:
        return _INPUTS_CACHE[key]
    try:
        m = onnx.load(str(model_file), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{model_file}: cannot read the ONNX graph ({e})") from e
    out: dict[str, tuple[str, tuple[Any, ...]]] = {}
    for i in m.graph.input:
        tt = i.type.tensor_type
        elem = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        out.setdefault(i.name, (f"tensor({elem})", dims))
    _INPUTS_CACHE[key] = out
    return out


def read_onnx_adapter(path: Path | str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{parameter name: (type, shape)}`` of an ``.onnx_adapter`` file (onnxruntime's adapter format)."""
    import onnxruntime as ort

    try:
        fmt = ort.AdapterFormat.read_adapter(str(path))
        params = fmt.get_parameters()
    except Exception as e:
        raise AdapterMismatch(
            path,
            [f"not a readable .onnx_adapter file ({first_line(e)})"],
            what="unreadable",
        ) from e
    return {name: (v.data_type(), tuple(v.shape())) for name, v in params.items()}


def check_onnx_adapter(
    adapter: Path | str, inputs: dict[str, tuple[str, tuple[Any, ...]]], model_file: Path | str = ""
) -> list[str]:
    """Refuse (``AdapterMismatch``) an adapter whose parameters are not inputs of the graph with the same type and
    fixed dims; return its parameter names."""
    params = read_onnx_adapter(adapter)
    where = f" of {model_file}" if model_file else ""
    if not params:
        raise AdapterMismatch(adapter, ["it holds no tensors"], what="empty adapter")
    missing = [n for n in params if n not in inputs]
    if missing:
        raise AdapterMismatch(
            adapter, missing, what=f"{len(missing)} of its {len(params)} tensors are not inputs of the graph{where}"
        )
    bad = []
    for name, (typ, shape) in params.items():
        gtyp, gshape = inputs[name]
        fits = len(shape) == len(gshape) and all(
            not isinstance(g, int) or g in (0, s) for g, s in zip(gshape, shape, strict=True)
        )
        if typ != gtyp or not fits:
            bad.append(f"{name}: adapter {typ} {list(shape)}, graph {gtyp} {list(gshape)}")
    if bad:
        raise AdapterMismatch(adapter, bad, what=f"{len(bad)} tensors have another type or shape than the graph{where}")
    for name, (_, shape) in params.items():  # LoRA pairs: A [in, r] then B [r, out] must agree on r
        other = name.replace("lora_A", "lora_B")
        if other != name and other in params and shape and params[other][1] and shape[-1] != params[other][1][0]:
            bad.append(f"{name} {list(shape)} and {other} {list(params[other][1])}")
    if bad:
        raise AdapterMismatch(adapter, bad, what="LoRA A/B pairs of different ranks")
    return list(params)


def check_peft_adapter(adapter: Path | str, module_names: Iterable[str], model_dir: Path | str = "") -> dict[str, Any]:
    """Refuse (``AdapterMismatch``) a PEFT adapter folder whose target modules the model does not have."""
    folder = Path(adapter)
    cfg_path = folder / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise AdapterMismatch(folder, [f"{cfg_path} is missing or unreadable"], what="not a PEFT adapter folder") from e
    names = list(module_names)
    targets = cfg.get("target_modules") or []
    where = f" of {model_dir}" if model_dir else ""
    if isinstance(targets, str):
        if targets != "all-linear" and not any(re.fullmatch(targets, n) for n in names):
            raise AdapterMismatch(folder, [f"pattern {targets!r}"], what=f"no module{where} matches its target_modules")
        return cfg
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise AdapterMismatch(folder, missing, what=f"target modules not found in the model{where}")
    return cfg


def peft_problems(e: BaseException) -> list[str]:
    """The informative lines of peft's/torch's load error (the "size mismatch for ..." lines when there are some)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return [ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))] or [first_line(e)]


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
