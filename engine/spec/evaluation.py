"""How candidates are evaluated: the evaluator's settings, built from a run spec (engine.olive.config) and handed
to the evaluator through Olive's metric plug-in as plain keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EvalConfig:
    eval_path: str | None  # the held-out rows; None without a dataset (benchmark tasks only: nothing held out)
    text_template: str | None = None
    chat_template: bool = False
    prompt_column: str = "prompt"
    response_column: str = "response"
    system_prompt: str | None = None
    data_key: str = ""
    split_seed: int = 0
    max_samples: int = 50
    answer_tokens: int = 48
    prompt_length: int = 128
    generation_length: int = 64
    repeats: int = 3
    warmup: int = 1
    keep_samples: int = 5  # unused since every evaluated example is kept (at most max_samples); stays so stored configs load
    device: str = "cpu"
    execution_provider: str = "CPUExecutionProvider"
    # lm-eval tasks measured beside the metrics above (engine.evaluate.benchmarks): one dict per task with ``task``,
    # ``limit``, ``num_fewshot`` and ``include_path`` (a folder or YAML file of local task definitions, or None)
    benchmarks: Any = ()
