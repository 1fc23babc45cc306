"""One evaluator for the input model and every candidate, whatever its form, measured the same way.

Forms: a Hugging Face/PyTorch folder (optionally with a PEFT adapter folder), or an onnxruntime-genai folder (with
any of its ``.onnx_adapter`` files active, or none). Metrics (``METRICS``):

- quality on the held-out split (the prepared ``eval.jsonl``, which training never sees): mean loss and perplexity
  on the response tokens only (teacher-forced), greedy answers compared with the references (ROUGE-L F1, exact
  match), and every evaluated example (at most ``max_samples``) kept with its own scores, for the user to read
  and for the per-example comparison of two candidates;
- generation speed: time to first token, decode tokens/s, per-token decode latency p50/p90, at a stated prompt
  length and generation length, after warm-up, over several repetitions;
- size on disk of everything needed to run the candidate, and peak memory (process RSS on CPU, device memory on
  GPU).

Each result carries a fingerprint (dataset hash, split seed and size, lengths, device and execution provider,
package versions); results are stored in the registry (``evaluations``) and reused for the same model, adapter
and fingerprint. ``evaluate_in_subprocess`` runs one evaluation in a fresh interpreter so peak memory is the
candidate's own and a crash fails that candidate only. Metrics that fail are reported as failed with the reason;
the others are still measured.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine import machine
from engine.evaluate import progress as eval_progress
from engine.evaluate.backends import OPENVINO, Genai, Hf, Ov, form_of
from engine.evaluate.fingerprint import SPEED_PROMPTS, fingerprint, fingerprint_id
from engine.evaluate.scores import normalize, rouge_l
from engine.spec.evaluation import EvalConfig
from engine.spec.metrics import METRICS, QUALITY, SPEED

SENTINEL = "\u0000GROVE_RESPONSE\u0000"


@dataclass
class EvalResult:
    model_path: str
    adapter: str | None
    form: str
    metrics: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    reused: bool = False
    key: str | None = None  # the evaluation's registry key (evaluate_cached)
    conditions: dict[str, Any] = field(default_factory=dict)  # what the speed figures were measured under
    pending: dict[str, Any] = field(default_factory=dict)  # speed deferred: {"device", "reason", "metrics"}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_rows(cfg: EvalConfig) -> list[dict[str, Any]]:
    """The held-out rows the quality metrics are measured on (none for a benchmarks-only evaluation: no dataset)."""
    if not cfg.eval_path:
        return []
    rows = []
    with open(cfg.eval_path, encoding="utf-8") as f:
        for ln in f:
            if ln.strip():
                rows.append(json.loads(ln))
    return rows[: cfg.max_samples]


# A benchmarks-only evaluation (no dataset, engine.spec.schema) still times generation: its prompt is cut from a fixed,
# built-in prompt set (SPEED_PROMPTS: the travel sample's questions and answers as plain text, in file order), so every
# such evaluation times the same tokens; the fingerprint names it (engine.evaluate.fingerprint), so these speed
# figures are never compared with ones timed on a dataset's held-out split.


def speed_texts(cfg: EvalConfig, chat_render: Any = None) -> Iterator[str]:
    """The texts the timed prompt is cut from: the held-out rows as the model reads them, or without a held-out
    split, the built-in prompt set (SPEED_PROMPTS)."""
    if cfg.eval_path:
        for row in load_rows(cfg):
            yield render(cfg, row, chat_render)[1]
        return
    with open(SPEED_PROMPTS, encoding="utf-8") as f:
        for ln in f:
            if ln.strip():
                row = json.loads(ln)
                yield f"{row['prompt']}\n{row['response']}\n"


def render(cfg: EvalConfig, row: dict[str, Any], chat_render: Any = None) -> tuple[str, str, str]:
    """(prompt prefix, full text, reference response) for one row; a conversation (``messages``) is scored on its
    last assistant turn, given the turns before it."""
    if cfg.text_template:
        ref = str(row[cfg.response_column]) if cfg.response_column in row else ""
        full = cfg.text_template.format(**row)
        marked = cfg.text_template.format(**{**row, cfg.response_column: SENTINEL})
        prefix = marked.split(SENTINEL, 1)[0]
        return prefix, full, ref
    if isinstance(row.get("messages"), list):  # a prepared conversation: its last assistant turn, given the turns before
        turns = row["messages"]
        last = max(i for i, m in enumerate(turns) if m["role"] == "assistant")
        msgs, ref = list(turns[:last]), str(turns[last]["content"])
    else:
        msgs = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        msgs.append({"role": "user", "content": str(row[cfg.prompt_column])})
        ref = str(row[cfg.response_column])
    prefix = chat_render(msgs, add_generation_prompt=True)
    full = chat_render([*msgs, {"role": "assistant", "content": ref}], add_generation_prompt=False)
    return prefix, full, ref


# -- backends (loading, EOS ids and generation steps are engine.evaluate.backends', shared with chat) -------------
class GenaiBackend(Genai):
    def __init__(self, folder: Path, adapter: str | None, cfg: EvalConfig, threads: int | None = None) -> None:
        # the CPU keeps the providers of the folder's genai_config.json
        super().__init__(folder, device="cuda" if cfg.execution_provider == "CUDAExecutionProvider" else None,
                         threads=threads)
        self.folder = folder
        self.adapter = adapter
        if adapter:
            files = {p.stem: p for p in folder.glob("*.onnx_adapter")}
            name = adapter if adapter in files else ("adapter_weights" if adapter == "adapter" else adapter)
            if name not in files:
                raise FileNotFoundError(f"no adapter '{adapter}' in {folder} (have: {', '.join(files) or 'none'})")
            self.load_adapter(files[name], name)
            self.adapter = name

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text))

    def decode(self, ids: list[int]) -> str:
        # onnxruntime-genai 0.14 kills the process (SIGFPE) when asked to decode an empty list
        return self.tok.decode(ids) if ids else ""

    def _gen(self, max_length: int, min_length: int = 0) -> Any:
        # an explicit seed: without one each og.Generator seeds from std::random_device (~15 ms here)
        opts = {"max_length": max_length, "do_sample": False, "random_seed": 0}
        if min_length:
            opts["min_length"] = min_length
        return self.generator(self.adapter, **opts)[0]

    def logprobs_of(self, ids: list[int], start: int) -> list[float]:
        import numpy as np

        g = self._gen(len(ids) + 1)
        g.append_tokens(ids)
        logits = np.asarray(g.get_output("logits"), dtype=np.float64)[0]
        out = []
        for t in range(max(start, 1), len(ids)):
            row = logits[t - 1]
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            out.append(row[ids[t]] - lse)
        return out

    def greedy(self, ids: list[int], max_new: int) -> list[int]:
        g = self._gen(min(len(ids) + max_new, self.context))
        g.append_tokens(ids)
        out: list[int] = []
        if max_new <= 0:
            return out
        for t in self.tokens(g):
            if t in self.eos:
                break
            out.append(t)
            if len(out) >= max_new:
                break
        return out

    def timed(self, ids: list[int], n_new: int) -> tuple[float, list[float]]:
        total = len(ids) + n_new
        g = self._gen(total, total)
        t0 = time.perf_counter()
        g.append_tokens(ids)
        g.generate_next_token()
        ttft = time.perf_counter() - t0
        steps = []
        for _ in range(n_new - 1):
            t = time.perf_counter()
            g.generate_next_token()
            steps.append(time.perf_counter() - t)
        return ttft, steps


class OvBackend(Ov):
    """An OpenVINO candidate (engine.evaluate.backends.Ov): the OpenVINO runtime on the CPU, greedy token by token,
    its logits for the held-out loss; tokenized as transformers tokenizes (the folder's tokenizer.json)."""

    def __init__(self, folder: Path, adapter: str | None, cfg: EvalConfig) -> None:
        if adapter:
            raise ValueError(f"{folder}: an OpenVINO candidate carries no separate adapter (merge it before converting)")
        super().__init__(folder)
        self.adapter = None

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def logprobs_of(self, ids: list[int], start: int) -> list[float]:
        np = self.np
        self.reset()
        logits = np.asarray(self.step(ids), dtype=np.float64)
        out = []
        for t in range(max(start, 1), len(ids)):
            row = logits[t - 1]
            m = row.max()
            out.append(row[ids[t]] - (m + math.log(np.exp(row - m).sum())))
        return out

    def greedy(self, ids: list[int], max_new: int) -> list[int]:
        out: list[int] = []
        for t in self.tokens(ids, min(max_new, self.context - len(ids))):
            if t in self.eos:
                break
            out.append(t)
        return out

    def timed(self, ids: list[int], n_new: int) -> tuple[float, list[float]]:
        self.reset()
        t0 = time.perf_counter()
        nxt = int(self.step(ids)[-1].argmax())
        ttft = time.perf_counter() - t0
        steps = []
        for _ in range(n_new - 1):
            t = time.perf_counter()
            nxt = int(self.step([nxt])[-1].argmax())
            steps.append(time.perf_counter() - t)
        return ttft, steps


def register_olive_quantizer(folder: Path) -> bool:
    """Checkpoints from Olive's own quantizers (Rtn, Gptq: ``quant_method: olive``) load in transformers only once
    Olive's quantizer is registered, as Olive's model loader does. True when the folder needed it."""
    cfg = Path(folder) / "config.json"
    try:
        q = (json.loads(cfg.read_text()).get("quantization_config") or {}) if cfg.is_file() else {}
    except ValueError:
        return False
    if q.get("quant_method") != "olive":
        return False
    from olive.common.quant.hf_utils import OliveHfQuantizationConfig, OliveHfQuantizer
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

    AUTO_QUANTIZATION_CONFIG_MAPPING["olive"] = OliveHfQuantizationConfig
    AUTO_QUANTIZER_MAPPING["olive"] = OliveHfQuantizer
    return True


class HfBackend(Hf):
    def __init__(self, folder: Path, adapter_path: str | None, cfg: EvalConfig) -> None:
        import torch

        device = "cuda" if cfg.device == "gpu" and torch.cuda.is_available() else "cpu"
        register_olive_quantizer(folder)
        super().__init__(folder, device=device, dtype=torch.float32 if device == "cpu" else torch.float16)
        if adapter_path:
            self.add_adapter(adapter_path, "default")
        self.model.eval()
        self.context = self.context_length(2048)

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def logprobs_of(self, ids: list[int], start: int) -> list[float]:
        torch = self.torch
        with torch.inference_mode():
            x = torch.tensor([ids], device=self.device)
            logits = self.model(x).logits[0].float()
            lp = torch.log_softmax(logits, dim=-1)
            return [float(lp[t - 1, ids[t]]) for t in range(max(start, 1), len(ids))]

    def _step(self, ids: Any, past: Any) -> tuple[int, Any]:
        out = self.model(input_ids=ids, past_key_values=past, use_cache=True)
        return int(out.logits[0, -1].argmax()), out.past_key_values

    def greedy(self, ids: list[int], max_new: int) -> list[int]:
        torch = self.torch
        out: list[int] = []
        with torch.inference_mode():
            nxt, past = self._step(torch.tensor([ids], device=self.device), None)
            while len(out) < max_new and nxt not in self.eos and len(ids) + len(out) < self.context:
                out.append(nxt)
                nxt, past = self._step(torch.tensor([[nxt]], device=self.device), past)
        return out

    BATCH = 8  # answers generated together: on a CPU a step of 8 costs about what a step of 1 does

    def greedy_many(self, prompts: list[list[int]], max_new: int) -> list[list[int]]:
        """Greedy answers of several prompts, generated in left-padded batches (``generate`` derives the positions
        from the attention mask, so each answer is the one ``greedy`` gives, up to float rounding)."""
        torch = self.torch
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (min(self.eos) if self.eos else 0)
        out: list[list[int]] = []
        for i in range(0, len(prompts), self.BATCH):
            chunk = prompts[i : i + self.BATCH]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=self.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=self.device)
            n = max(1, min(max_new, self.context - width))
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                          eos_token_id=sorted(self.eos) or None, pad_token_id=pad,
                                          temperature=None, top_p=None, top_k=None)
            for row in gen[:, width:].tolist():
                ans = []
                for t in row:
                    if t in self.eos:
                        break
                    ans.append(t)
                out.append(ans[:max_new])
        return out

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def timed(self, ids: list[int], n_new: int) -> tuple[float, list[float]]:
        torch = self.torch
        steps = []
        with torch.inference_mode():
            t0 = time.perf_counter()
            nxt, past = self._step(torch.tensor([ids], device=self.device), None)
            self._sync()
            ttft = time.perf_counter() - t0
            for _ in range(n_new - 1):
                t = time.perf_counter()
                nxt, past = self._step(torch.tensor([[nxt]], device=self.device), past)
                self._sync()
                steps.append(time.perf_counter() - t)
        return ttft, steps


def detect_form(path: Path) -> str:
    form = form_of(path)
    if form is None:
        raise FileNotFoundError(f"{path} is neither an onnxruntime-genai folder (genai_config.json), an OpenVINO folder "
                                "(openvino_model.xml) nor a Hugging Face folder (config.json)")
    return form


def _chat_renderer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)

    def render(msgs: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    return render


def load_backend(folder: Path, form: str, adapter: str | None, cfg: EvalConfig, threads: int | None = None) -> Any:
    """``threads``: CPU threads for the quality part while other Grove work shares the CPU (None: every core, as
    the timed part always runs: PyTorch's intra-op threads, onnxruntime's; OpenVINO keeps its own)."""
    if form == OPENVINO:
        return OvBackend(folder, adapter, cfg)
    if form == "onnxruntime-genai":
        return GenaiBackend(folder, adapter, cfg, threads=threads)
    backend = HfBackend(folder, adapter, cfg)
    if threads:
        backend.torch.set_num_threads(threads)
    return backend


def all_cores_again(backend: Any, folder: Path, form: str, adapter: str | None, cfg: EvalConfig, cores: int) -> Any:
    """The backend with every core for the timed part, after a quality part that ran on a share of the CPU: PyTorch
    changes its thread count in place; onnxruntime fixes it when the session is made, so the model is loaded again."""
    if form == "transformers":
        backend.torch.set_num_threads(cores)
        return backend
    if form == "onnxruntime-genai" and getattr(backend, "threads", None):
        del backend
        return load_backend(folder, form, adapter, cfg)
    return backend


def evaluate(model_path: str, cfg: EvalConfig, *, adapter: str | None = None, reg: Any = None) -> EvalResult:
    """Evaluate one model in this process. ``adapter``: a PEFT folder (HF) or an adapter name/stem (genai).

    Loading and the quality metrics run as an ``eval`` activity on the device, alongside other Grove work; the
    speed metrics (and GPU memory, which other processes' allocations change) only under an exclusive claim of the
    device (engine/runs/devices.py). When the device cannot be had alone (a run's passes use it), the speed
    metrics are left out and ``res.pending`` says why: ``evaluate_cached`` queues them for later."""
    from engine.runs import devices
    from engine.runs.relay import open_registry

    t0 = time.perf_counter()
    folder = Path(model_path)
    form = detect_form(folder)
    res = EvalResult(str(folder), adapter, form, fingerprint=fingerprint(cfg))
    reg = reg or open_registry()
    run_id = os.environ.get("GROVE_RUN_ID") or None
    device = devices.for_eval(cfg.device)
    machine.reset_peak_rss()
    use_gpu = cfg.device == "gpu"
    gpu_before = machine.gpu_used_mb() if use_gpu else None
    if use_gpu:
        try:
            import torch

            torch.cuda.reset_peak_memory_stats()
        except Exception:
            pass
    with devices.using(reg, [device], "eval", run_id=run_id, label=f"quality of {folder.name}"):
        # on the CPU, the quality part takes its share of the cores beside other Grove work (engine.runs.devices)
        share = None if use_gpu else devices.cpu_share(reg)
        threads = share if share and share < devices.cpu_cores() else None
        backend: Any = load_backend(folder, form, adapter, cfg, threads=threads)
        size = machine.dir_size(folder)
        if form == "transformers" and adapter:
            size += machine.dir_size(Path(adapter))
        res.metrics["size_mb"] = size / 1e6
        rows = load_rows(cfg)
        chat_render = _chat_renderer(folder) if cfg.chat_template else None
        if form == "onnxruntime-genai":
            # a candidate whose tokenizer onnxruntime-genai reads differently from transformers scores garbage: say why
            from engine.models.tokens import check_tokens

            tc = check_tokens(folder, og_model=backend.model)
            if not tc.ok and not tc.error:
                res.failed.update({m: tc.message() for m in QUALITY})
                rows = []
        report = eval_progress.Reporter(str(folder), adapter)  # per example and answer, to the run's progress
        if threads and form == "transformers":  # PyTorch follows the share as other work comes and goes
            share_now, progress = devices.CpuShare(reg), report
            share_now.threads, share_now.active = threads, True

            def report(phase: str, done: int, total: int) -> None:
                share_now.adjust()
                progress(phase, done, total)
        if rows:
            _measure(res, "quality", QUALITY, lambda: _quality(backend, cfg, rows, chat_render, res, report))
    report("timing", 0, 1)
    if threads:
        with devices.using(reg, [device], "eval", run_id=run_id, label=f"loading {folder.name} to measure its speed"):
            backend = all_cores_again(backend, folder, form, adapter, cfg, devices.cpu_cores())
    timed_part(res, backend, cfg, chat_render, reg, device, run_id=run_id, gpu_before=gpu_before)
    if not use_gpu:  # the process's own peak RSS: no other process changes it
        _measure(res, "memory", ("peak_memory_mb",), lambda: res.metrics.__setitem__("peak_memory_mb", _peak_memory_mb(False, None)))
    res.seconds = time.perf_counter() - t0
    return res


def timed_metrics(cfg: EvalConfig) -> list[str]:
    """The metrics measured under the device's exclusive claim."""
    return [*SPEED, *(["peak_memory_mb"] if cfg.device == "gpu" else [])]


def timed_part(res: EvalResult, backend: Any, cfg: EvalConfig, chat_render: Any, reg: Any, device: str, *,
               run_id: str | None = None, gpu_before: float | None = None, defer_for_runs: bool = True,
               wait_s: float | None = None) -> bool:
    """The speed metrics (and GPU memory) with ``device`` to itself; the claim is held only for them. Records the
    conditions in ``res.conditions``; False (and ``res.pending``) when the device could not be had alone."""
    from engine.runs import devices

    with devices.exclusive(reg, device, run_id=run_id, label=f"speed of {Path(res.model_path).name}",
                           defer_for_runs=defer_for_runs, wait_s=wait_s) as claim:
        if not claim.granted:
            res.pending = {"device": device, "reason": claim.why, "metrics": timed_metrics(cfg)}
            return False
        _measure(res, "speed", SPEED, lambda: _speed(backend, cfg, chat_render, res))
        if cfg.device == "gpu":
            _measure(res, "memory", ("peak_memory_mb",),
                     lambda: res.metrics.__setitem__("peak_memory_mb", _peak_memory_mb(True, gpu_before)))
        res.conditions = claim.conditions(reg, threads_of(backend))
    res.pending = {}
    return True


def threads_of(backend: Any) -> int | None:
    """Threads the timed generation used: torch's intra-op threads (PyTorch), or onnxruntime's from the folder's
    genai_config.json (its default: one per core)."""
    torch = getattr(backend, "torch", None)
    if torch is not None:
        return int(torch.get_num_threads())
    folder = getattr(backend, "folder", None) or getattr(backend, "path", None)
    try:
        gc = json.loads(Path(folder, "genai_config.json").read_text()) if folder else {}
        n = ((gc.get("model") or {}).get("decoder") or {}).get("session_options", {}).get("intra_op_num_threads")
        return int(n) if n else os.cpu_count()
    except (OSError, ValueError, TypeError):
        return os.cpu_count()


def _measure(res: EvalResult, what: str, names: tuple[str, ...], fn: Any) -> None:
    try:
        fn()
    except Exception as e:  # a metric that fails marks that metric failed, with the reason
        reason = f"{type(e).__name__}: {e}"[:500]
        traceback.print_exc()
        for n in names:
            if n not in res.metrics:
                res.failed[n] = reason


def _quality(backend: Any, cfg: EvalConfig, rows: list[dict[str, Any]], chat_render: Any, res: EvalResult,
             report: Any = None) -> None:
    report = report or (lambda *a: None)
    nll, ntok, rl, em = 0.0, 0, [], []
    scored = []
    for k, row in enumerate(rows):
        report("scoring", k, len(rows))
        prefix, full, ref = render(cfg, row, chat_render)
        p_ids, f_ids = backend.encode(prefix), backend.encode(full)
        f_ids = f_ids[: backend.context]
        lps = backend.logprobs_of(f_ids, len(p_ids))
        nll -= sum(lps)
        ntok += len(lps)
        scored.append((row, prefix, ref, p_ids[: backend.context - 1], lps))
    answers: list[list[int]] = []
    step = getattr(backend, "BATCH", 1) if hasattr(backend, "greedy_many") else 1
    for i in range(0, len(scored), step):  # PyTorch: answers in batches (the per-token overhead is per step)
        report("answers", i, len(scored))
        chunk = [s[3] for s in scored[i : i + step]]
        answers += backend.greedy_many(chunk, cfg.answer_tokens) if step > 1 else [backend.greedy(chunk[0], cfg.answer_tokens)]
    report("answers", len(scored), len(scored))
    for i, ((row, prefix, ref, _p, lps), ids) in enumerate(zip(scored, answers, strict=True)):
        answer = backend.decode(ids).strip()
        rl.append(rouge_l(answer, ref))
        em.append(float(normalize(answer) == normalize(ref)))
        res.samples.append(example(i, str(row.get(cfg.prompt_column, prefix)), ref, answer, lps, rl[-1], em[-1]))
    if ntok == 0:
        raise ValueError("no response tokens to score in the eval split")
    loss = nll / ntok
    res.metrics.update({"loss": loss, "perplexity": math.exp(min(loss, 50)), "rouge_l": statistics.fmean(rl), "exact_match": statistics.fmean(em)})


SAMPLE_CHARS = 1000  # per text field of a kept example; the rows themselves are bounded by max_samples


def example(index: int, prompt: str, reference: str, answer: str, logprobs: list[float], rl: float, em: float) -> dict[str, Any]:
    """One evaluated held-out example as kept with the result: its texts (each cut at SAMPLE_CHARS) and its own
    scores (ROUGE-L, exact match, mean loss on its response tokens; None when it had none), keyed by its row
    index in the eval split so two candidates' examples line up (engine.evaluate.compare.per_example)."""
    return {
        "index": index,
        "prompt": prompt[:SAMPLE_CHARS],
        "reference": reference[:SAMPLE_CHARS],
        "answer": answer[:SAMPLE_CHARS],
        "rouge_l": rl,
        "exact_match": em,
        "loss": -sum(logprobs) / len(logprobs) if logprobs else None,
    }


def _speed(backend: Any, cfg: EvalConfig, chat_render: Any, res: EvalResult) -> None:
    pool: list[int] = []
    for text in speed_texts(cfg, chat_render):
        pool += backend.encode(text)
        if len(pool) >= cfg.prompt_length:
            break
    while len(pool) < cfg.prompt_length:
        pool += pool or [0]
    gen = min(cfg.generation_length, backend.context - cfg.prompt_length)
    if gen < 2:
        raise ValueError(f"context length {backend.context} leaves no room to generate after a {cfg.prompt_length}-token prompt")
    prompt = pool[: cfg.prompt_length]
    for _ in range(cfg.warmup):
        backend.timed(prompt, gen)
    ttfts, steps, rates = [], [], []
    for _ in range(cfg.repeats):
        t, s = backend.timed(prompt, gen)
        ttfts.append(t)
        steps += s
        rates.append(len(s) / sum(s))
    steps.sort()
    # each figure is the median over the repeats (fingerprint.SPEED_ESTIMATOR): one repeat slowed by something outside Grove
    # (another process took a core for a moment) moves neither TTFT nor decode speed
    res.metrics.update({
        "ttft_ms": 1000 * statistics.median(ttfts),
        "decode_tps": statistics.median(rates),
        "latency_p50_ms": 1000 * steps[len(steps) // 2],
        "latency_p90_ms": 1000 * steps[min(len(steps) - 1, int(len(steps) * 0.9))],
    })


def _peak_memory_mb(gpu: bool, gpu_used_before: float | None) -> float:
    if not gpu:
        return machine.peak_rss_mb()
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
            return torch.cuda.max_memory_allocated() / 1e6
    except Exception:
        pass
    # onnxruntime's CUDA arena keeps what it took: device memory in use now, minus before loading
    after = machine.gpu_used_mb()
    if after is None or gpu_used_before is None:
        raise RuntimeError("device memory could not be read (nvidia-smi)")
    return after - gpu_used_before


# -- cache, subprocess ------------------------------------------------------------------------------------------
def model_identity(model_path: str, adapter: str | None) -> str:
    h = hashlib.sha256()
    for p in [Path(model_path)] + ([Path(adapter)] if adapter and Path(adapter).exists() else []):
        files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(str(adapter).encode())
    return h.hexdigest()[:16]


def eval_key(model_path: str, adapter: str | None, cfg: EvalConfig) -> str:
    return f"{model_identity(model_path, adapter)}-{fingerprint_id(fingerprint(cfg))}"


def evaluate_cached(model_path: str, cfg: EvalConfig, *, adapter: str | None = None, reg: Any = None,
                    subprocess_: bool = True, timeout: float = 3600, run_id: str | None = None,
                    label: str | None = None) -> EvalResult:
    """Evaluate once per model + adapter + fingerprint; later calls read the registry. With ``run_id``, the
    evaluation is linked to that run's model folder, which is how the run's candidates find it."""
    from engine.runs.relay import open_registry

    reg = reg or open_registry()  # relayed to the head inside a runner on a Ray node
    key = eval_key(model_path, adapter, cfg)
    hit = reg.get_evaluation(key)
    if run_id:
        reg.link_evaluation(run_id, model_path, key, adapter)
        eval_progress.emit("eval_started", run_id, reg, model=model_path, adapter=adapter, label=label, reused=bool(hit))
    if hit:
        r = EvalResult(**{k: hit[k] for k in ("model_path", "adapter", "form", "metrics", "failed", "samples", "fingerprint", "seconds")})
        r.reused, r.key, r.conditions = True, key, hit.get("speed_conditions") or {}
        if run_id:
            eval_progress.emit("eval_finished", run_id, reg, model=model_path, adapter=adapter, label=label, reused=True,
                               seconds=0.0)
        return r
    r = evaluate_in_subprocess(model_path, cfg, adapter=adapter, timeout=timeout) if subprocess_ else evaluate(model_path, cfg, adapter=adapter, reg=reg)
    if cfg.benchmarks:  # lm-eval tasks, each cached per candidate and task (engine.evaluate.benchmarks)
        from engine.evaluate.benchmarks import add_benchmarks

        add_benchmarks(r, model_path, cfg, adapter=adapter, reg=reg, identity=model_identity(model_path, adapter),
                       timeout=timeout)
    r.key = key
    if r.pending:  # queued before the evaluation is saved: no reader sees it unmeasured and not pending
        from engine.runs.devices import host_of

        reg.queue_speed(key, model_path=str(model_path), adapter=adapter, config=asdict(cfg), device=r.pending["device"],
                        host=host_of(r.pending["device"]), metrics=r.pending["metrics"], reason=r.pending["reason"],
                        run_id=run_id)
    reg.save_evaluation(key, r.to_json(), fingerprint_id(r.fingerprint))
    if run_id:
        reg.link_evaluation(run_id, model_path, key, adapter)
        eval_progress.emit("eval_finished", run_id, reg, model=model_path, adapter=adapter, label=label, reused=False,
                           seconds=round(r.seconds, 3))
    return r


def evaluate_in_subprocess(model_path: str, cfg: EvalConfig, *, adapter: str | None = None, timeout: float = 3600) -> EvalResult:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="grove-eval-") as d:
        out = Path(d) / "result.json"
        args = [sys.executable, "-m", "engine.evaluate.evaluator", "--model", model_path, "--config", json.dumps(asdict(cfg)), "--out", str(out)]
        if adapter:
            args += ["--adapter", adapter]
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return _all_failed(model_path, adapter, cfg, f"evaluation timed out after {timeout:.0f}s")
        if p.returncode != 0 or not out.is_file():
            tail = (p.stderr or p.stdout)[-1500:]
            return _all_failed(model_path, adapter, cfg, f"evaluator exited with code {p.returncode}: {tail}")
        return EvalResult(**json.loads(out.read_text()))


def _all_failed(model_path: str, adapter: str | None, cfg: EvalConfig, reason: str) -> EvalResult:
    return EvalResult(model_path, adapter, "unknown", failed={m: reason for m in METRICS}, fingerprint=fingerprint(cfg))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.evaluate.evaluator")
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--config", required=True, help="EvalConfig as JSON")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    res = evaluate(a.model, EvalConfig(**json.loads(a.config)), adapter=a.adapter)
    text = json.dumps(res.to_json(), indent=2, default=float)
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
