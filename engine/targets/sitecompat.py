"""Installed into a target environment's site-packages as ``grove_target_compat.py`` (with a ``.pth`` line that
imports it at start-up, as engine/olive/compat.py does for Olive in Grove's own environment), so it applies in every
process there: the runner, Olive's passes, the evaluator's subprocesses, ``olive run`` by hand.

Models that Grove's own environment saved (transformers 5) are read by transformers 4 in the OpenVINO environment
(optimum-intel 1.27 needs it). Three things transformers 5 writes differently, each fixed when the transformers
module that reads it is first imported, and only under transformers < 5: T1 ``tokenizer_class: TokenizersBackend``
(read as ``PreTrainedTokenizerFast``, the same tokenizer.json), T2 ``extra_special_tokens`` as a list, T3
``rope_parameters`` instead of ``rope_theta`` (unread, a model silently gets the default theta).

Standard library only: this file is copied, not imported from the repository.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any


def _t1_class(mod: Any) -> None:
    """T1: ``tokenizer_class: TokenizersBackend`` read as ``PreTrainedTokenizerFast``."""
    original = mod.tokenizer_class_from_name

    def tokenizer_class_from_name(class_name: str) -> Any:
        return original("PreTrainedTokenizerFast" if class_name == "TokenizersBackend" else class_name)

    mod.tokenizer_class_from_name = tokenizer_class_from_name


def _t2_special(mod: Any) -> None:
    """T2: ``extra_special_tokens`` as transformers 5 writes it (a list of tokens, already in tokenizer.json's added
    tokens) is not transformers 4's mapping of named special tokens: read as none."""
    cls = mod.PreTrainedTokenizerBase
    original = cls._set_model_specific_special_tokens

    def _set_model_specific_special_tokens(self: Any, special_tokens: Any) -> Any:
        if isinstance(special_tokens, (list, tuple)):
            self.extra_special_tokens = {}
            special_tokens = {}
        return original(self, special_tokens)

    cls._set_model_specific_special_tokens = _set_model_specific_special_tokens


def _t3_rope(mod: Any) -> None:
    """T3: transformers 5 writes ``rope_parameters`` ({rope_theta, rope_type, ...}) where transformers 4 reads
    ``rope_theta``, ``rope_scaling`` and ``partial_rotary_factor``; unread, a model silently gets transformers 4's
    default theta (SmolLM2: 10000 instead of 100000). Copied over before the config is built."""
    cls = mod.PretrainedConfig
    original = cls.from_dict.__func__

    def from_dict(klass: Any, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        rp = config_dict.get("rope_parameters")
        if isinstance(rp, dict):
            config_dict = dict(config_dict)
            if "rope_theta" in rp and "rope_theta" not in config_dict:
                config_dict["rope_theta"] = rp["rope_theta"]
            if "partial_rotary_factor" in rp and "partial_rotary_factor" not in config_dict:
                config_dict["partial_rotary_factor"] = rp["partial_rotary_factor"]
            if rp.get("rope_type", "default") != "default" and not config_dict.get("rope_scaling"):
                config_dict["rope_scaling"] = {k: v for k, v in rp.items() if k not in ("rope_theta", "partial_rotary_factor")}
        return original(klass, config_dict, **kwargs)

    cls.from_dict = classmethod(from_dict)


PATCHES = {
    "transformers.models.auto.tokenization_auto": _t1_class,
    "transformers.tokenization_utils_base": _t2_special,
    "transformers.configuration_utils": _t3_rope,
}


def _transformers_4() -> bool:
    from importlib.metadata import version

    return int(version("transformers").split(".")[0]) < 5


class _Hook(importlib.abc.MetaPathFinder):
    """Applies a patch right after its module is first imported (never importing transformers itself)."""

    def __init__(self) -> None:
        self.todo = dict(PATCHES)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        fix = self.todo.pop(fullname, None)
        if fix is None:
            return None
        if not self.todo:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            try:
                if _transformers_4():
                    fix(module)
            except Exception as e:  # never break an import of transformers
                print(f"grove: target compatibility patch for {fullname} not applied: {e}", file=sys.stderr)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    if any(m in sys.modules for m in PATCHES):
        return
    if not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


install()
