"""Olive's pre-processing for a conversation dataset: tokens of the model's chat template, labels only on the
assistant turns.

Olive 0.13's own text-generation pre-processing (``chat_template: true``) labels every token, so the loss would
teach the model to write the user's questions too. This module registers ``grove_chat_pre_process`` in Olive's
data registry; Grove's workflow config names it in the training data config together with this file as the data
config's ``user_script`` (Olive imports it when it reads the config, also under a plain ``olive run --config``).
Each row's ``messages`` (prepared by ``engine.data.prepare``) becomes ``input_ids``, ``attention_mask`` and
``labels`` (-100 outside assistant turns, ``engine.data.chat``); Olive's LoRA-style passes pad a batch with
-100 labels too (``LoRA.collate_batch``), so padding is never trained either.
"""

from __future__ import annotations

from typing import Any

from olive.common.hf.utils import get_tokenizer
from olive.data.component.dataset import ClassificationDataset
from olive.data.registry import Registry

from engine.data.chat import IGNORE, tokenize

NAME = "grove_chat_pre_process"


@Registry.register_pre_process(NAME)
def grove_chat_pre_process(dataset: Any, model_name: str, max_seq_len: int = 1024, message_col: str = "messages",
                           trust_remote_code: bool | None = None, max_samples: int | None = None,
                           **kwargs: Any) -> ClassificationDataset:
    """Tokenize each conversation with the chat template; keep only rows with a trained token after the cut."""
    from datasets import Dataset as HFDataset

    tokenizer = get_tokenizer(model_name, trust_remote_code=trust_remote_code)
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    dropped = 0
    for row in dataset:
        t = tokenize(tokenizer, row[message_col], max_seq_len)
        if all(x == IGNORE for x in t["labels"]):
            dropped += 1  # its assistant turns all lie beyond max_seq_len: nothing to learn from it
            continue
        out["input_ids"].append(t["input_ids"])
        out["attention_mask"].append([1] * len(t["input_ids"]))
        out["labels"].append(t["labels"])
    if not out["input_ids"]:
        raise ValueError(f"every conversation's assistant turns lie beyond max_seq_len ({max_seq_len} tokens): "
                         "raise dataset.max_seq_len")
    if dropped:
        import logging

        logging.getLogger("olive").warning("%d conversation(s) dropped: their assistant turns lie beyond "
                                           "max_seq_len (%d tokens)", dropped, max_seq_len)
    hf = HFDataset.from_dict(out)
    hf.set_format("torch", output_all_columns=True)
    return ClassificationDataset(hf, "labels", max_samples=max_samples)
