"""Targets: where candidates run, each a named Python environment with its own pinned packages.

The runtimes of different vendors cannot share one environment: ``onnxruntime-openvino``, ``onnxruntime-gpu`` and
``onnxruntime-qnn`` each install the same ``onnxruntime`` module. So a target other than the default one is a
separate virtual environment under ``$GROVE_HOME/targets/<name>/`` (``GROVE_TARGETS_DIR`` moves them), created on request from a pinned requirements
file in this folder (``grove target add openvino``, or the Workflow page), checked by running a real graph on its
execution provider, and listed with what it holds. A run for such a target starts its runner - Olive's passes and
Grove's evaluator - with that environment's interpreter (engine.runs.executors); the default environment (CPU and
CUDA, Grove's own ``.venv``) stays as it is.

A target that cannot run on this machine (QNN: no Snapdragon NPU here; VitisAI and NvTensorRTRTX: no Linux wheels
on PyPI, and hardware this host lacks) is still known: its recipes import, and launching one says what is missing.

Layer: with engine.machine/paths/errors at the bottom of engine/ (imports only those); spec, olive, runs and the
CLI ask it which environment a target is and whether it is ready.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine import paths

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    """A known target. ``requirements``: the pinned file (in engine/targets/) its environment installs; None for the
    default environment and for targets that cannot be installed here (``missing`` says why, ``needs`` what it would
    take)."""

    name: str
    title: str
    providers: tuple[str, ...]
    device: str  # the Olive accelerator device: "cpu", "gpu" or "npu"
    requirements: str | None = None
    missing: str = ""
    needs: str = ""

    @property
    def default(self) -> bool:
        return self.name == DEFAULT

    @property
    def installable(self) -> bool:
        return self.default or self.requirements is not None

    def requirements_path(self) -> Path | None:
        return HERE / self.requirements if self.requirements else None


DEFAULT = "default"
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(DEFAULT, "CPU and NVIDIA CUDA (Grove's own environment)",
               ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"), "cpu"),
        Target("openvino", "Intel OpenVINO (the OpenVINO runtime, on this host's CPU)", ("OpenVINOExecutionProvider",),
               "cpu", requirements="openvino.txt"),
        Target("qnn", "Qualcomm QNN (Snapdragon NPU)", ("QNNExecutionProvider",), "npu",
               missing="Grove has no pinned environment for QNN, and this host has no Snapdragon NPU to measure on "
                       "(onnxruntime-qnn 2.7.0 and qairt-dev 0.9.0 do publish Linux x86-64 wheels, but there the HTP "
                       "backend only simulates the NPU, for compiling context binaries)",
               needs="a Snapdragon device (Windows on ARM64, or Linux with the QNN HTP driver) with onnxruntime-qnn, "
                     "onnxruntime-genai built for QNN and olive-ai[qnn] (qairt-dev) for the QNN passes"),
        Target("vitisai", "AMD Ryzen AI (VitisAI NPU)", ("VitisAIExecutionProvider",), "npu",
               missing="the VitisAI execution provider ships only in AMD's Ryzen AI Software for Windows (not on "
                       "PyPI), and needs a Ryzen AI NPU; this host is Linux x86-64 with no NPU",
               needs="a Ryzen AI PC with AMD's Ryzen AI Software (its onnxruntime-vitisai and onnxruntime-genai), "
                     "amd-quark for QuarkQuantization"),
        Target("nvtensorrtrtx", "NVIDIA TensorRT for RTX", ("NvTensorRTRTXExecutionProvider",), "gpu",
               missing="the NvTensorRTRTX execution provider ships with Windows ML / onnxruntime builds for Windows "
                       "and an RTX GPU; no Linux wheel on PyPI, and this host has no GPU",
               needs="a Windows PC with an RTX GPU and the NvTensorRtRtx build of onnxruntime and onnxruntime-genai"),
    )
}  # fmt: skip
PROVIDERS = {ep: t.name for t in TARGETS.values() for ep in t.providers}
PROVIDERS_TEXT = ", ".join(PROVIDERS)


def get(name: str) -> Target:
    """The target called ``name``; KeyError names the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a target Grove knows: {', '.join(TARGETS)}") from None


def for_provider(ep: str | None) -> Target:
    """The target that runs execution provider ``ep`` (the default target for CPU, CUDA and TensorRT, and for None)."""
    return TARGETS[PROVIDERS.get(ep or "", DEFAULT)]


def root() -> Path:
    """Where target environments live: ``$GROVE_HOME/targets``, or ``GROVE_TARGETS_DIR`` (several Grove homes can
    share one set of environments: each is a couple of GB)."""
    d = os.environ.get("GROVE_TARGETS_DIR")
    return Path(d).expanduser().resolve() if d else paths.home() / "targets"


def env_dir(name: str) -> Path:
    return root() / name
