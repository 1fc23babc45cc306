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
from pathlib import Path
from typing import Any, Callable

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


# -- P2 ---------------------------------------------------------------------------------------------------------
def _p2_needed() -> bool:
    """onnxruntime-genai >= 0.15 (the CUDA 13 GPU set) wants ``create_model`` options prepared by
    ``check_extra_options`` (``hf_details``...), which Olive 0.13's ModelBuilder pass does not call."""
    import inspect

    try:
        from onnxruntime_genai.models import builder
    except Exception:
        return False
    return "hf_details" in inspect.getsource(builder.create_model) and hasattr(builder, "check_extra_options")


def _p2_apply() -> None:
    """Olive main's fix: normalise Olive's Python values to the builder's string options, then
    ``check_extra_options`` (which also maps the deprecated ``int4_*`` names) before ``create_model``."""
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
            builder.check_extra_options(model_name, input_path, output_dir, precision, execution_provider, cache_dir, opts)
            extra = opts
        return original(model_name, input_path, output_dir, precision, execution_provider, cache_dir, **extra)

    builder.create_model = create_model


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
    "P2 genai>=0.15 create_model options (GPU set only)": (_p2_needed, _p2_apply),
    "P4 custom metric serializers accept None": (_p4_needed, _p4_apply),
    "P6 dump subclass fields (serialize_as_any)": (_p6_needed, _p6_apply),
    "P7 FootprintNode.update(model_config=...)": (_p7_needed, _p7_apply),
    "P8 Engine.resolve_goals honours every goal": (_p8_needed, _p8_apply),
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
