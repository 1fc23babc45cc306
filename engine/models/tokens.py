"""Do transformers and onnxruntime-genai turn the same text into the same token ids?

A model is trained and scored with transformers' tokenizer and chatted with (and evaluated as ONNX) through
onnxruntime-genai's. When the two disagree, an ONNX candidate sees different ids than training produced and its
answers fall apart while every pass "succeeded" (seen with SmolLM2 converted from GGUF: genai gave -1 for every
space and newline). ``check_tokens`` tokenizes several prompts (ASCII, runs of spaces and newlines, tabs, digits and
punctuation, accented, CJK and emoji text, and the model's own chat template rendering of a conversation) with
both and reports the first difference.

onnxruntime-genai builds a tokenizer only from a model (``og.Tokenizer(og.Model)``), and a model needs a
``genai_config.json`` and an ONNX file. Its tokenizer reads nothing from either but the folder's tokenizer files,
so the check copies those files next to a stub: a one-node-deep ONNX decoder with the right vocabulary size and a
minimal ``genai_config.json`` (a few kB, loads in milliseconds). The same stub serves a Hugging Face folder and an
onnxruntime-genai candidate folder (whose own tokenizer files are the ones copied), so a candidate is checked
without loading its weights; an already loaded ``og.Model`` can be passed instead.

Heavy imports happen inside the functions.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelError

PROMPTS: tuple[str, ...] = (
    "What should I see in Lisbon?",
    "Plan a 3-day trip: Porto, Coimbra & Sintra (budget ~€450).",
    "  two  spaces,\n\nblank lines,\ttabs and trailing space \n",
    "Café São Bento, Zürich, Kraków — 東京タワー, 서울, Ελλάδα 🙂🚆",
    "def f(x):\n    return x**2  # indented code\n",
)
CONVERSATION = (
    {"role": "user", "content": "What should I see in Lisbon?"},
    {"role": "assistant", "content": "Start in Alfama, then take tram 28 up to the castle."},
    {"role": "user", "content": "And on a rainy day?"},
)
# what onnxruntime-genai reads from a model folder to build its tokenizer
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model",
)  # fmt: skip
WINDOW = 6


@dataclass
class Mismatch:
    prompt_index: int
    prompt: str
    position: int  # first index where the id lists differ
    transformers_ids: list[int]  # a window of ids around the position
    genai_ids: list[int]
    transformers_len: int
    genai_len: int

    def describe(self) -> str:
        return (
            f"prompt {self.prompt_index} ({self.prompt[:60]!r}) differs at token {self.position}: "
            f"transformers {self.transformers_ids} vs onnxruntime-genai {self.genai_ids} "
            f"({self.transformers_len} vs {self.genai_len} tokens)"
        )


@dataclass
class TokenCheck:
    folder: str
    reference: str  # the folder whose transformers tokenizer is the reference
    ok: bool = False
    prompts_checked: int = 0
    mismatch: Mismatch | None = None
    negative_ids: int = 0  # ids < 0 from genai: symbols its tokenizer does not know
    chat_template: dict[str, Any] = field(default_factory=dict)  # {"same": bool, "transformers": str, "genai": str}
    error: str = ""
    bos_only_in_transformers: bool = False  # transformers' tokenizer adds a BOS token that genai's does not

    def message(self) -> str:
        if self.error:
            return f"token check could not run on {self.folder}: {self.error}"
        if self.ok:
            return f"transformers and onnxruntime-genai give the same token ids for {self.prompts_checked} prompts"
        assert self.mismatch is not None
        extra = f"; genai returned {self.negative_ids} unknown (-1) ids" if self.negative_ids else ""
        return f"transformers and onnxruntime-genai tokenize differently: {self.mismatch.describe()}{extra}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first position where ``a`` and ``b`` differ (the shorter length when one is a prefix)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _vocab_size(folder: Path) -> int:
    for name, key in (("genai_config.json", None), ("config.json", "vocab_size")):
        p = folder / name
        if p.is_file():
            cfg = json.loads(p.read_text())
            v = (
                cfg.get("model", {}).get("vocab_size")
                if key is None
                else cfg.get(key) or cfg.get("text_config", {}).get(key)
            )
            if isinstance(v, int) and v > 0:
                return v
    tj = folder / "tokenizer.json"
    if tj.is_file():
        data = json.loads(tj.read_text(encoding="utf-8"))
        ids = list((data.get("model") or {}).get("vocab", {}).values()) + [
            t["id"] for t in data.get("added_tokens", [])
        ]
        if ids and all(isinstance(i, int) for i in ids):
            return max(ids) + 1
    raise ModelError(f"cannot tell the vocabulary size of {folder}")


def write_stub(folder: Path, dest: Path) -> Path:
    """A tokenizer-only onnxruntime-genai model in ``dest``: ``folder``'s tokenizer files, a stub ONNX decoder."""
    import onnx
    from onnx import TensorProto, helper

    files = [folder / f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if not any(f.name in ("tokenizer.json", "tokenizer.model", "vocab.json") for f in files):
        raise ModelError(f"{folder} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f.name)
    vocab = _vocab_size(folder)
    # logits[b, s, v] = input_ids[b, s] * 0: the right names and shapes, no weights
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["ids_f", "last_axis"], ["ids_u"]),
            helper.make_node("Mul", ["ids_u", "zeros"], ["logits"]),
        ],
        "grove_tokenizer_stub",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])],
        [helper.make_tensor("last_axis", TensorProto.INT64, [1], [-1]),
         helper.make_tensor("zeros", TensorProto.FLOAT, [vocab], [0.0] * vocab)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, dest / "model.onnx")
    genai = {
        "model": {
            "type": "llama", "vocab_size": vocab, "context_length": 4096, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
            "decoder": {
                "filename": "model.onnx", "session_options": {"log_id": "grove-token-check", "provider_options": []},
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask"}, "outputs": {"logits": "logits"},
                "head_size": 1, "hidden_size": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "num_hidden_layers": 0,
            },
        },
        "search": {"max_length": 4096, "do_sample": False},
    }  # fmt: skip
    (dest / "genai_config.json").write_text(json.dumps(genai, indent=2))
    return dest


def genai_tokenizer(folder: Path, stub_dir: Path) -> Any:
    import onnxruntime_genai as og

    model = og.Model(str(write_stub(folder, stub_dir)))
    return og.Tokenizer(model), model


def check_tokens(
    folder: str | Path,
    *,
    reference: str | Path | None = None,
    prompts: tuple[str, ...] | list[str] = PROMPTS,
    og_model: Any = None,
) -> TokenCheck:
    """Tokenize ``prompts`` (and the chat template's rendering of a short conversation) with transformers'
    tokenizer from ``reference`` (default: ``folder``) and with onnxruntime-genai's from ``folder``.

    ``folder``: a Hugging Face folder or an onnxruntime-genai folder. ``og_model``: an already loaded
    ``og.Model`` of ``folder`` to use instead of the stub. Never raises for a mismatch: read ``ok``/``mismatch``;
    ``error`` says why the check could not run."""
    folder = Path(folder)
    ref = Path(reference) if reference else folder
    res = TokenCheck(folder=str(folder), reference=str(ref))
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(ref, local_files_only=True)
        with tempfile.TemporaryDirectory(prefix="grove-tokens-") as d:
            if og_model is not None:
                import onnxruntime_genai as og

                og_tok = og.Tokenizer(og_model)
            else:
                og_tok, _model = genai_tokenizer(folder, Path(d))
            texts = list(prompts)
            res.chat_template = _chat_templates(hf, og_tok)
            if res.chat_template.get("transformers"):
                texts.append(res.chat_template["transformers"])
            _compare(res, hf, og_tok, texts)
    except Exception as e:  # the check itself failed (missing files, a tokenizer genai cannot load, ...)
        res.error = f"{type(e).__name__}: {e}"[:800]
        res.ok = False
    return res


_CACHE: dict[tuple[Any, ...], TokenCheck] = {}


def check_tokens_cached(folder: str | Path, *, reference: str | Path | None = None) -> TokenCheck:
    """``check_tokens`` once per folder state: reused while the tokenizer files (names, sizes, mtimes) are unchanged,
    so a page that re-runs pre-flight on every interaction pays for it once."""
    key = (_signature(Path(folder)), _signature(Path(reference)) if reference else None)
    if key not in _CACHE:
        _CACHE[key] = check_tokens(folder, reference=reference)
    return _CACHE[key]


def _signature(folder: Path) -> tuple[Any, ...]:
    out: list[Any] = [str(folder.resolve())]
    for name in TOKENIZER_FILES:
        p = folder / name
        if p.is_file():
            st = p.stat()
            out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _compare(res: TokenCheck, hf: Any, og_tok: Any, texts: list[str]) -> None:
    for i, text in enumerate(texts):
        a = [int(x) for x in hf(text)["input_ids"]]
        b = [int(x) for x in og_tok.encode(text)]
        bos = getattr(hf, "bos_token_id", None)
        if bos is not None and a[:1] == [bos] and b[:1] != [bos]:
            # transformers adds the BOS token and genai does not: a template matter (recorded), not the text's ids
            res.bos_only_in_transformers = True
            a = a[1:]
        res.negative_ids += sum(1 for x in b if x < 0)
        res.prompts_checked = i + 1
        pos = first_difference(a, b)
        if pos is not None:
            lo = max(0, pos - 2)
            res.mismatch = Mismatch(i, text, pos, a[lo : pos + WINDOW], b[lo : pos + WINDOW], len(a), len(b))
            res.ok = False
            return
    res.ok = True


def _chat_templates(hf: Any, og_tok: Any) -> dict[str, Any]:
    """The conversation rendered by transformers' chat template and by onnxruntime-genai's ('' when none)."""
    out: dict[str, Any] = {"transformers": "", "genai": "", "same": None}
    msgs = [dict(m) for m in CONVERSATION]
    if not getattr(hf, "chat_template", None):
        return out
    out["transformers"] = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    try:
        out["genai"] = og_tok.apply_chat_template(json.dumps(msgs), add_generation_prompt=True)
    except Exception as e:  # genai has no template for this model: recorded, the ids are still compared
        out["genai_error"] = f"{type(e).__name__}: {e}"[:300]
        return out
    out["same"] = out["genai"] == out["transformers"]
    return out


def _strip_bos(text: str, bos: str | None) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text


def round_trip(folder: str | Path, train_text: str, messages: list[dict[str, str]], *, chat: bool = False,
               max_len: int | None = None) -> dict[str, Any]:
    """The chat-template round trip for one training example, as three renderings of the same conversation:

    - ``training``: the text the run trains on (its text template, or the tokenizer's chat template);
    - ``tokenizer``: the tokenizer's chat template (transformers) of the whole conversation;
    - ``chat_prompt``: the prompt onnxruntime-genai builds for chat from the turns before the answer (what a user's
      question becomes in Chat and in the evaluator's genai backend).

    ``ok`` is True when the training text begins with the chat prompt (the BOS text aside): chat then asks in the
    format the model was trained on. False names the first differing character in ``problem``; None when the model
    has no chat template (nothing to compare).

    ``trained``: the training text's tokens in runs, ``[{"text", "trained", "tokens"}]``: with the chat template
    (``chat``) only the assistant turns are trained (engine.data.chat, what Olive's pre-processing labels); with a
    text template every token is."""
    folder = Path(folder)
    out: dict[str, Any] = {"training": train_text, "tokenizer": "", "chat_prompt": "", "ok": None, "problem": "",
                           "position": None}  # fmt: skip
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        prompt_msgs = messages[: max(i for i, m in enumerate(messages) if m["role"] != "assistant") + 1]
        if not getattr(hf, "chat_template", None):
            out["problem"] = "the model has no chat template: chat sends the raw question"
            return out
        out["tokenizer"] = hf.apply_chat_template(messages, tokenize=False)
        if chat:
            from engine.data.chat import pieces

            out["trained"] = pieces(hf, messages, max_len)
        with tempfile.TemporaryDirectory(prefix="grove-roundtrip-") as d:
            try:
                og_tok, _model = genai_tokenizer(folder, Path(d))
                out["chat_prompt"] = og_tok.apply_chat_template(json.dumps(prompt_msgs), add_generation_prompt=True)
            except Exception as e:  # genai cannot read or render it: chat falls back to transformers' rendering
                out["chat_error"] = f"{type(e).__name__}: {e}"[:300]
                out["chat_prompt"] = hf.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # noqa: BLE001 - the check could not run: said, never raised
        out["error"] = f"{type(e).__name__}: {e}"[:800]
        return out
    bos = getattr(hf, "bos_token", None)
    a, b = train_text, out["chat_prompt"]
    # a BOS text on one side only is a template detail (tokenizers add the BOS token themselves), not another format
    if any(x.startswith(y) for x in (a, _strip_bos(a, bos)) for y in (b, _strip_bos(b, bos))):
        out["ok"] = True
        return out
    pos = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    out["ok"], out["position"] = False, pos
    out["problem"] = (f"they differ at character {pos}: training "
                      f"{a[max(0, pos - 20):pos + 30]!r} vs chat {b[max(0, pos - 20):pos + 30]!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.models.tokens FOLDER [--reference HF_FOLDER]``: exit 1 when the ids differ."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m engine.models.tokens")
    ap.add_argument("folder")
    ap.add_argument("--reference")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--round-trip", action="store_true",
                    help="read {train_text, messages} as JSON on stdin; print the three renderings as JSON")
    a = ap.parse_args(argv)
    if a.round_trip:
        req = json.loads(sys.stdin.read())
        print(json.dumps(round_trip(a.folder, req["train_text"], req["messages"], chat=bool(req.get("chat")),
                                    max_len=req.get("max_len")), ensure_ascii=False))
        return 0
    r = check_tokens(a.folder, reference=a.reference)
    print(json.dumps(r.to_json(), indent=2, ensure_ascii=False) if a.json else r.message())
    if r.chat_template.get("same") is False:
        print("note: the chat template renders differently in transformers and onnxruntime-genai", file=sys.stderr)
    return 0 if r.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
