"""The embedded default model: a small Phi-3 model and tokenizer, built and trained locally, no downloads.

``build_demo()`` writes, once, into ``runs/demo/``:
- ``model/``: a Hugging Face folder (``Phi3ForCausalLM``, byte-level BPE tokenizer trained on the project's own
  travel sample, Phi-3 chat template) trained briefly on that sample, as chat turns, so that its answers read like
  travel answers. It is trained only on the rows of the demo recipe's default train split (10 % held out, seed 0),
  so the held-out rows stay unseen by the base model and by the recipe's LoRA adapter;
- ``travel_sample.jsonl``: a copy of the sample (the dataset the demo recipe fine-tunes on);
- ``demo.json``: what was built, with the training loss, so a second call returns at once.

Heavy imports (torch, transformers, tokenizers) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

from engine import paths
from engine.models import Progress, no_progress
from engine.spec.templates import PHI3_TEXT_TEMPLATE

log = logging.getLogger(__name__)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>"]
# The lab's Phi-3 text template: the same text the chat template renders for one exchange.

# Geometry of the demo model: Phi-3 architecture, small enough to train in about a minute on 2 cores.
GEOMETRY = {
    "hidden_size": 256,
    "intermediate_size": 640,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    # equal to max_position_embeddings: plain RoPE (ModelBuilder picks the LongRoPE builder otherwise)
    "original_max_position_embeddings": 512,
}
VOCAB_SIZE = 2048
TRAIN_STEPS = 400
BATCH = 16
SEED = 1234


def read_sample(path: Path = paths.DEMO_SAMPLE) -> list[dict[str, str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def is_built(out: Path | None = None) -> bool:
    out = out or paths.demo_dir()
    return (out / "demo.json").is_file() and (out / "model" / "model.safetensors").is_file()


def build_demo(out: Path | None = None, *, steps: int = TRAIN_STEPS, force: bool = False, progress: Progress = no_progress) -> dict:
    """Build the demo model into ``out`` (default ``runs/demo``) unless it is already there."""
    out = out or paths.demo_dir()
    if is_built(out) and not force:
        return json.loads((out / "demo.json").read_text())
    t0 = time.perf_counter()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "model").mkdir(parents=True)
    rows = train_rows(read_sample())
    shutil.copyfile(paths.DEMO_SAMPLE, tmp / "travel_sample.jsonl")
    tok = _train_tokenizer(rows)
    model = _make_model(tok)
    losses = _train(model, tok, rows, steps, progress)
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    _write_generation_config(tmp / "model", tok)
    info = {
        "model": str(out / "model"),
        "dataset": str(out / "travel_sample.jsonl"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_steps": steps,
        "loss_first": losses[0],
        "loss_last": sum(losses[-20:]) / len(losses[-20:]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (tmp / "demo.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # appears whole or not at all
    return info


def train_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows the demo recipe trains on (its default split: 10 % held out, seed 0)."""
    from engine.data.prepare import split_rows

    return split_rows(rows, 0.1, 0)[0]


def _texts(rows: list[dict[str, str]]) -> list[str]:
    return [PHI3_TEXT_TEMPLATE.format(prompt=r["prompt"], response=r["response"]) for r in rows]


def _train_tokenizer(rows: list[dict[str, str]]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [r["prompt"] for r in rows] + [r["response"] for r in rows]
    tk.train_from_iterator(corpus, trainer=trainer)
    bos = tk.token_to_id("<s>")
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"],
        model_max_length=GEOMETRY["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _make_model(tok):
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(SEED)
    cfg = Phi3Config(
        vocab_size=len(tok),
        **GEOMETRY,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=False,
        rope_scaling=None,
    )
    return Phi3ForCausalLM(cfg)


def _train(model, tok, rows: list[dict[str, str]], steps: int, progress: Progress = no_progress) -> list[float]:
    """Plain causal-LM training on the chat-formatted sample: short, seeded, CPU-friendly."""
    import torch

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    enc = [tok(t, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for t in _texts(rows)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    losses: list[float] = []
    batch = BATCH
    for _step in range(steps):
        idx = [rng.randrange(len(enc)) for _ in range(batch)]
        seqs = [enc[i][:128] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((batch, width), tok.pad_token_id)
        labels = torch.full((batch, width), -100)
        attn = torch.zeros((batch, width), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            labels[j, : len(s)] = torch.tensor(s)
            attn[j, : len(s)] = 1
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
        progress("train", (_step + 1) / steps)
    model.eval()
    return losses


def _write_generation_config(model_dir: Path, tok) -> None:
    from transformers import GenerationConfig

    eos = [tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|end|>")]
    GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=tok.pad_token_id, do_sample=False
    ).save_pretrained(model_dir)
