"""Olive's pass catalog as plain JSON: every pass, its metadata and its parameters, read from Olive itself.

Olive is imported only in a child process (``python -m engine.olive.catalog OUT.json``), so the UI process and the
worker never import it. The result is cached per Olive version in ``runs/catalog/olive-<version>.json``.

Per pass: module path, supported accelerators / execution providers / precisions / algorithms, whether it needs
a dataset, extra packages and whether they are installed, and per parameter: type, default, description,
required, category and Olive's default search values; for a parameter that takes a pydantic config (a LoRA pass's
``training_args``) its ``fields`` too, with transformers.TrainingArguments' fields where Olive passes extra ones on.
"""

from __future__ import annotations

import enum
import json
import subprocess
import sys
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from engine import paths

CPU_EP = "CPUExecutionProvider"
CATALOG_REV = 4  # bump when the dump changes (2: Grove's own passes are listed; 3: nested fields of training_args;
#                  4: passes whose defaults read accelerator_type.CPU, the OpenVINO ones, list their parameters)


def olive_version() -> str:
    try:
        return metadata.version("olive-ai")
    except metadata.PackageNotFoundError:
        return "missing"


def catalog_path() -> Path:
    return paths.home() / "catalog" / f"olive-{olive_version()}-r{CATALOG_REV}.json"


def load(*, rebuild: bool = False, timeout: float = 300) -> dict[str, Any]:
    """The catalog, built in a subprocess the first time for this Olive version."""
    p = catalog_path()
    if p.is_file() and not rebuild:
        return json.loads(p.read_text())
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    res = subprocess.run([sys.executable, "-m", "engine.olive.catalog", str(tmp)], capture_output=True, text=True,
                         timeout=timeout, env=paths.olive_env())
    if res.returncode != 0 or not tmp.is_file():
        raise RuntimeError(f"building Olive's pass catalog failed:\n{res.stderr[-3000:]}")
    tmp.replace(p)
    return json.loads(p.read_text())


def searchable_params(pass_types: list[str]) -> dict[str, list[str]]:
    """Per pass type: the parameters Olive searches by itself when a search strategy is set."""
    cat = load()["passes"]
    return {
        t: sorted(k for k, p in cat.get(t, {}).get("params", {}).items() if p.get("search_values") is not None)
        for t in pass_types
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return _jsonable(v.value)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return repr(v)


def _type_name(t: Any) -> str:
    if isinstance(t, type):
        if issubclass(t, enum.Enum):
            return "enum"
        return t.__name__
    return str(t).replace("typing.", "")


def _param(p: Any) -> dict[str, Any]:
    t = p.type_
    choices = None
    if isinstance(t, type) and issubclass(t, enum.Enum):
        choices = [_jsonable(m.value) for m in t]
    sd = p.search_defaults
    search_values = None
    if sd is not None:
        support = getattr(sd, "support", None)
        if support is None and hasattr(sd, "get_support"):
            try:
                support = sd.get_support()
            except Exception:
                support = None
        search_values = _jsonable(list(support)) if support is not None else repr(sd)
    default = p.default_value
    dflt = _jsonable(default) if not type(default).__name__.endswith(("Default", "ParamDefault")) else None
    out = {
        "type": _type_name(t),
        "choices": choices,
        "default": dflt,
        "required": bool(p.required),
        "description": (p.description or "").strip(),
        "category": _jsonable(getattr(p, "category", None)),
        "search_values": search_values,
    }
    fields = _nested_fields(t)
    if fields:
        out["fields"] = fields
    return out


def _field(annotation: Any, default: Any) -> dict[str, Any]:
    choices = None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        choices = [_jsonable(m.value) for m in annotation]
    simple = isinstance(default, (str, int, float, bool, type(None), enum.Enum))
    return {"type": _type_name(annotation), "choices": choices, "default": _jsonable(default) if simple else None}


def _nested_fields(t: Any) -> dict[str, Any] | None:
    """The fields of a pydantic config a parameter accepts (``Union[HFTrainingArguments, dict]``), or None."""
    import dataclasses
    import typing

    from pydantic import BaseModel

    model = next((a for a in (typing.get_args(t) or (t,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if model is None:
        return None
    fields: dict[str, Any] = {}
    if getattr(model, "_nested_field_name", None) == "extra_args":  # Olive hands these on to TrainingArguments
        try:
            import transformers

            for f in dataclasses.fields(transformers.TrainingArguments):
                if f.init:
                    d = f.default if f.default is not dataclasses.MISSING else None
                    fields[f.name] = _field(f.type, d)
        except Exception:  # noqa: BLE001 - without transformers only Olive's own fields are listed
            pass
    for name, f in model.model_fields.items():
        fields[name] = _field(f.annotation, f.default)
    return fields


def _installed(req: str) -> bool:
    name = req.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return find_spec(name.replace("-", "_")) is not None


def dump(out: Path) -> None:
    from olive.hardware.accelerator import AcceleratorSpec, Device
    from olive.hardware.constants import ExecutionProvider
    from olive.package_config import OlivePackageConfig

    from engine.olive import compat as olive_compat

    olive_compat.apply()  # adds Grove's passes to Olive's catalog, as in the runner
    pc = OlivePackageConfig.load_default_config()
    # the Device enum, as Olive passes it (OpenVINO passes default to accelerator_type.CPU)
    acc = AcceleratorSpec(accelerator_type=Device.CPU, execution_provider=ExecutionProvider.CPUExecutionProvider)
    extra = pc.extra_dependencies if hasattr(pc, "extra_dependencies") else {}
    passes: dict[str, Any] = {}
    for key_lower, mc in sorted(pc.passes.items()):
        name = mc.module_path.rsplit(".", 1)[-1]  # Olive keys passes in lower case; show the class name
        deps = []
        for key in mc.extra_dependencies or []:
            deps += list(extra.get(key, [key]))
        entry: dict[str, Any] = {
            "module_path": mc.module_path,
            "accelerators": sorted(_jsonable(mc.supported_accelerators)),
            "providers": sorted(_jsonable(mc.supported_providers)),
            "precisions": sorted(_jsonable(mc.supported_precisions)),
            "algorithms": sorted(_jsonable(getattr(mc, "supported_algorithms", []))),
            "dataset": _jsonable(getattr(mc, "dataset", None)),
            "extra_packages": deps,
            "missing_packages": [d for d in deps if not _installed(d)],
            "params": {},
            "import_error": None,
            "grove": mc.module_path.startswith("engine."),
        }
        try:
            cls = pc.import_pass_module(key_lower)
            entry["params"] = {k: _param(p) for k, p in cls.default_config(acc).items()}
        except Exception as e:  # some passes need packages that are not installed
            entry["import_error"] = f"{type(e).__name__}: {e}"[:500]
        passes[name] = entry
    out.write_text(json.dumps({"olive_version": olive_version(), "passes": passes}, indent=1))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dump(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
