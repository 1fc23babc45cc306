"""Text templates Grove's recipes use when a dataset has none: how a prompt/response pair becomes training text."""

from __future__ import annotations

# Phi-3's chat format (the lab's architecture, and the tiny demo model's tokens).
PHI3_TEXT_TEMPLATE = "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}<|end|>"
