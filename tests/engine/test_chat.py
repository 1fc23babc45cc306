"""Chat backends on the demo recipe's real candidates: the int4 onnxruntime-genai folder with its extracted travel
adapter, and the LoRA candidate (Hugging Face folder + PEFT adapter). No mocked generation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.chat.adapters import AdapterMismatch
from engine.chat.base import ChatModel, ChatStats
from engine.chat.cache import ModelCache, can_use_gpu, choose_device, estimate_bytes
from engine.chat.feedback import list_feedback, save_feedback
from engine.chat.genai_model import GenaiChatModel
from engine.chat.hf_model import HfChatModel
from engine.chat.models import load
from engine.chat.text import ChatError, literal_chunks, markdown_literal
from engine.errors import GroveError
from engine.runs.registry import Registry

pytestmark = pytest.mark.slow

TRAVEL = [{"role": "user", "content": "What should I see in Lisbon?"}]
N = 32  # new tokens per answer: enough to tell answers apart, little time


@pytest.fixture(scope="module")
def cands(demo_run) -> dict:
    """The session's one real run of the demo recipe (tests/engine/conftest.py)."""
    reg = Registry()
    run = demo_run
    assert run["status"] == "succeeded", run["error_message"]
    by_chain = {" > ".join(c["pass_chain"]): c for c in reg.candidates(run["id"])}
    return {
        "onnx": by_chain["lora > modelbuilder > extractadapters"],
        "merged": by_chain["lora > modelbuilder"],
        "lora": by_chain["lora"],
    }


@pytest.fixture(scope="module")
def onnx(cands) -> GenaiChatModel:
    m = load(cands["onnx"])
    assert isinstance(m, GenaiChatModel)
    return m


@pytest.fixture(scope="module")
def hf(cands) -> HfChatModel:
    m = load(cands["lora"])
    assert isinstance(m, HfChatModel)
    return m


def assert_timed(stats: ChatStats | None, backend: str, adapter: str) -> None:
    assert stats is not None and stats.backend == backend and stats.adapter == adapter
    assert stats.prompt_tokens > 5 and stats.new_tokens > 0
    assert stats.ttft_s is not None and 0 < stats.ttft_s < stats.total_s + 1e-9
    assert stats.new_tokens == 1 or (stats.decode_tokens_per_s or 0) > 0
    assert stats.stop_reason in ("eos", "length")


def test_importing_chat_is_cheap():
    code = (
        "import sys, engine.chat.adapters, engine.chat.base, engine.chat.cache, engine.chat.feedback, engine.chat.genai_model, "
        "engine.chat.hf_model, engine.chat.models, engine.chat.text, "
        "engine.evaluate.backends; heavy = {'torch', 'transformers', 'onnxruntime_genai', 'onnx', 'onnxruntime', 'peft'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2], check=True
    )
    assert out.stdout.strip() == "[]"


def test_onnx_candidate_lists_its_adapter_and_size(onnx, cands):
    assert onnx.adapters == ["none", "adapter"]
    assert onnx.adapter_files["adapter"].name == "adapter_weights.onnx_adapter"
    assert onnx.size_bytes == estimate_bytes(cands["onnx"]) and onnx.size_bytes > 1_000_000
    assert onnx.info()["backend"] == "onnxruntime-genai" and onnx.device == "cpu"


def test_travel_answer_with_adapter_on_and_off(onnx):
    on = onnx.stream(TRAVEL, adapter="adapter", max_new_tokens=N)
    chunks = list(on)
    assert len(chunks) > 3 and "".join(chunks) == on.text  # streamed in pieces, nothing lost
    off_text, off = onnx.answer(TRAVEL, adapter=None, max_new_tokens=N)
    assert on.text.strip() and off_text.strip()
    assert on.text != off_text
    assert_timed(on.stats, "onnxruntime-genai", "adapter")
    assert_timed(off, "onnxruntime-genai", "none")
    assert on.stats.adapter_switch_s > 0 and off.adapter_switch_s == 0


def test_switching_adapters_repeatedly_is_stable(onnx):
    first = {a: onnx.answer(TRAVEL, adapter=a, max_new_tokens=16)[0] for a in ("adapter", "none")}
    for _ in range(5):
        for a in ("adapter", "none", "adapter"):
            text, stats = onnx.answer(TRAVEL, adapter=a, max_new_tokens=16)
            assert text == first[a], a  # greedy: same answer every time, no state left from the other adapter
            assert stats.adapter == a


def test_system_prompt_and_history_use_the_template(onnx):
    _, plain = onnx.answer(TRAVEL, max_new_tokens=4)
    _, sys_ = onnx.answer(TRAVEL, system_prompt="You are a travel guide.", max_new_tokens=4)
    assert sys_.prompt_tokens > plain.prompt_tokens
    long_history = [
        {"role": r, "content": "Tell me about the museums and the old town. " * 12}
        for _ in range(6)
        for r in ("user", "assistant")
    ]
    text, st = onnx.answer(long_history + TRAVEL, max_new_tokens=8)
    assert text.strip() and st.trimmed_messages > 0 and st.prompt_tokens < onnx.context_length
    with pytest.raises(ChatError, match="not loaded"):
        onnx.stream(TRAVEL, adapter="pirate")


def test_ab_two_adapters_and_two_backends_have_independent_timings(onnx, hf):
    expected = {
        ("onnx", "adapter"): onnx.answer(TRAVEL, adapter="adapter", max_new_tokens=N)[0],
        ("onnx", "none"): onnx.answer(TRAVEL, max_new_tokens=N)[0],
        ("hf", "adapter"): hf.answer(TRAVEL, adapter="adapter", max_new_tokens=N)[0],
    }
    streams = {
        ("onnx", "adapter"): onnx.stream(TRAVEL, adapter="adapter", max_new_tokens=N),
        ("onnx", "none"): onnx.stream(TRAVEL, adapter="none", max_new_tokens=N),
        ("hf", "adapter"): hf.stream(TRAVEL, adapter="adapter", max_new_tokens=N),
    }
    live = dict(streams)
    while live:  # side by side: one chunk from each in turn
        for k, s in list(live.items()):
            if next(s, None) is None:
                del live[k]
    for k, s in streams.items():
        assert s.text == expected[k], k
        assert_timed(s.stats, "transformers" if k[0] == "hf" else "onnxruntime-genai", k[1])
    stats = [s.stats for s in streams.values()]
    assert len({id(x) for x in stats}) == 3 and len({x.ttft_s for x in stats}) == 3


def test_hf_lora_candidate_streams_with_and_without_the_adapter(hf):
    assert hf.adapters == ["none", "adapter"]
    on = hf.stream(TRAVEL, adapter="adapter", max_new_tokens=N)
    chunks = list(on)
    off_text, off = hf.answer(TRAVEL, max_new_tokens=N)
    assert chunks and on.text.strip() and off_text.strip() and on.text != off_text
    assert_timed(on.stats, "transformers", "adapter")
    assert_timed(off, "transformers", "none")
    assert hf.answer(TRAVEL, adapter="adapter", max_new_tokens=N)[0] == on.text  # the adapter is back on


def test_stopping_a_stream_early_stops_generation(onnx, hf):
    for m in (onnx, hf):
        s = m.stream(TRAVEL, adapter="adapter", max_new_tokens=200)
        next(s)
        s.close()
        assert s.stats is not None and s.stats.stop_reason == "cancelled" and s.stats.new_tokens < 200
    assert hf.answer(TRAVEL, max_new_tokens=4)[0]  # the model is free again


def make_adapter(src: Path, dest: Path, rename=None, reshape=None) -> Path:
    """A copy of a real .onnx_adapter with tensors renamed or replaced (onnxruntime's adapter format API)."""
    import numpy as np
    import onnxruntime as ort

    src_fmt = ort.AdapterFormat.read_adapter(str(src))  # owns the tensors' memory: keep it alive until exported
    arrays = []  # likewise for the replacement tensors (an OrtValue from numpy does not own its buffer)
    out = {}
    for name, v in src_fmt.get_parameters().items():
        shape = reshape(name, v.shape()) if reshape else None
        if shape:
            arrays.append(np.zeros(shape, np.float32))
            v = ort.OrtValue.ortvalue_from_numpy(arrays[-1])
        out[rename(name) if rename else name] = v
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters(out)
    fmt.export_adapter(str(dest))
    del src_fmt, arrays
    return dest


def test_mismatched_onnx_adapters_are_refused_naming_the_file(cands, onnx, tmp_path):
    src = onnx.adapter_files["adapter"]
    # converted for another graph (NOTES-olive C.9): PEFT names instead of ModelBuilder input names
    peft_names = make_adapter(
        src,
        tmp_path / "converted.onnx_adapter",
        rename=lambda n: n.replace("attn.q_proj.lora_A.MatMul.weight", "self_attn.qkv_proj.lora_A.weight"),
    )
    with pytest.raises(AdapterMismatch) as e:
        load(cands["onnx"], extra_adapters=[peft_names])
    msg = str(e.value)
    assert str(peft_names) in msg and "model.layers.0.self_attn.qkv_proj.lora_A.weight" in msg and "not inputs" in msg
    assert isinstance(e.value, GroveError) and e.value.hint
    # another geometry: hidden size 128 instead of 256
    other = make_adapter(
        src,
        tmp_path / "other_geometry.onnx_adapter",
        reshape=lambda n, s: (128, s[1]) if "lora_A" in n else (s[0], 128),
    )
    with pytest.raises(
        AdapterMismatch,
        match=r"other_geometry\.onnx_adapter.*\[128, 16\], graph tensor\(float\) \[256, 'lora_r'\]",
    ):
        onnx.add_adapter(other)
    # LoRA ranks that disagree within a pair
    ranks = make_adapter(
        src, tmp_path / "ranks.onnx_adapter", reshape=lambda n, s: (8, s[1]) if "lora_B" in n else None
    )
    with pytest.raises(AdapterMismatch, match="ranks"):
        onnx.add_adapter(ranks)
    # a model (the merged candidate) whose graph has no adapter inputs at all
    with pytest.raises(AdapterMismatch, match="32 of its 32 tensors are not inputs"):
        load(cands["merged"], extra_adapters=[src])
    assert onnx.adapters == ["none", "adapter"]  # nothing half-loaded
    assert onnx.answer(TRAVEL, adapter="adapter", max_new_tokens=4)[0]


def test_lenient_load_keeps_the_model_and_lists_what_was_refused(cands, tmp_path):
    folder = tmp_path / "onnx"
    shutil.copytree(cands["onnx"]["path"], folder)
    make_adapter(folder / "adapter_weights.onnx_adapter", folder / "broken.onnx_adapter", rename=lambda n: "x." + n)
    with pytest.raises(AdapterMismatch, match="broken.onnx_adapter"):
        load(folder)
    m = load(folder, strict=False)
    assert m.adapters == ["none", "adapter"] and list(m.refused) == ["broken"]
    assert "broken.onnx_adapter" in m.info()["refused"]["broken"]
    extra = make_adapter(folder / "adapter_weights.onnx_adapter", tmp_path / "travel2.onnx_adapter")
    assert m.add_adapter(extra) == "travel2" and m.adapters == ["none", "adapter", "travel2"]
    assert (
        m.answer(TRAVEL, adapter="travel2", max_new_tokens=8)[0]
        == m.answer(TRAVEL, adapter="adapter", max_new_tokens=8)[0]
    )


def test_peft_adapter_for_other_modules_is_refused(cands, tmp_path):
    bad = tmp_path / "llama_style"
    shutil.copytree(cands["lora"]["adapter_path"], bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["target_modules"] = ["q_proj", "v_proj"]  # Llama names; the Phi-3 model has qkv_proj
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterMismatch, match=r"llama_style.*target modules not found.*q_proj; v_proj"):
        load(dict(cands["lora"], adapter_path=str(bad)))
    with pytest.raises(AdapterMismatch, match="adapter_config.json is missing"):
        load(dict(cands["lora"], adapter_path=str(tmp_path)))
    # right module names, another geometry (hidden size 128): peft's load error, named and summarised
    import torch
    from safetensors.torch import load_file, save_file

    geom = tmp_path / "other_geometry"
    shutil.copytree(cands["lora"]["adapter_path"], geom)
    sd = load_file(geom / "adapter_model.safetensors")
    save_file(
        {k: torch.zeros(v.shape[0], 128) if "lora_A" in k else v for k, v in sd.items()},
        geom / "adapter_model.safetensors",
    )
    with pytest.raises(AdapterMismatch, match=r"other_geometry.*size mismatch for .*lora_A"):
        load(dict(cands["lora"], adapter_path=str(geom)))


def test_html_in_the_answer_is_kept_verbatim(onnx, hf):
    html = '<script>alert("x")</script> <b>Lisbon</b> &amp; <img src=x onerror=alert(1)>'
    for m in (onnx, hf):
        s = m.stream(TRAVEL, adapter="adapter", max_new_tokens=8, prefill=html)
        chunks = list(s)
        assert s.text.startswith(html), m.backend  # decoded from the model's tokens, not escaped, not stripped
        assert "".join(chunks) == s.text and "&lt;" not in s.text
        # for Streamlit's Markdown renderers (st.write_stream): escaped chunk by chunk, the same as escaping the whole
        shown = "".join(literal_chunks(chunks))
        assert shown == markdown_literal(s.text) and shown.startswith(r"\<script\>alert\(\"x\"\)\</script\>")
    assert markdown_literal("**a**\n:red[b] $c$") == "\\*\\*a\\*\\*  \n\\:red\\[b\\] \\$c\\$"


def test_cache_evicts_the_least_recently_used_model(cands, monkeypatch):
    monkeypatch.setenv("GROVE_CHAT_MAX_MODELS", "2")
    loads: list[str] = []

    def counting_load(ref, **kw):
        loads.append(str(ref.path))
        return load(ref, **kw)

    cache = ModelCache(loader=counting_load)
    assert cache.max_models == 2
    a, b = cands["onnx"], cands["merged"]
    ma = cache.get(a)
    mb = cache.get(b)
    assert cache.get(a) is ma and len(loads) == 2  # a hit, and a is now the most recent
    assert cache.held_bytes() == ma.size_bytes + mb.size_bytes
    c = cache.get(cands["lora"])  # a third model: b (least recently used) goes
    assert cache.contains(a) and cache.contains(cands["lora"]) and not cache.contains(b)
    assert cache.evicted == [str(Path(b["path"]).resolve())] and len(cache) == 2
    assert [e["path"] for e in cache.entries()] == [str(ma.path), str(c.path)]
    assert ma.answer(TRAVEL, max_new_tokens=4)[0]
    with pytest.raises(ChatError, match="unloaded"):
        mb.stream(TRAVEL)  # whoever still holds an evicted model gets a clear message


def test_eviction_by_another_session_never_cuts_an_answer(cands):
    """Two browser sessions share the cache: B's load evicts the model A is answering with; A's answer completes,
    and the model is closed only then."""
    cache = ModelCache(max_models=1)
    ma = cache.get(cands["onnx"])
    stream = ma.stream(TRAVEL, max_new_tokens=24)
    first = next(stream)  # session A is mid-answer
    cache.get(cands["merged"])  # session B loads another model: A's is evicted
    assert not cache.contains(cands["onnx"]) and not ma.closed
    rest = stream.read()
    assert first and stream.stats is not None and rest.startswith(first)
    assert ma.closed  # closed once its last answer ended
    assert cache.get(cands["onnx"]) is not ma  # A's next message loads it again


def test_cache_loads_a_model_once_for_concurrent_requests(cands):
    loads: list[str] = []

    def slow_load(ref, **kw):
        loads.append(str(ref.path))
        time.sleep(0.2)
        return load(ref, **kw)

    cache = ModelCache(max_models=2, loader=slow_load)
    got: list[ChatModel] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(cands["onnx"]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(got) == 4 and all(m is got[0] for m in got)


def test_gpu_policy_on_a_machine_without_one(monkeypatch):
    monkeypatch.setenv("GROVE_GPUS", "")
    ok, reason = can_use_gpu(10**8)
    assert not ok and "no GPU" in reason and "GROVE_GPUS" in reason
    assert choose_device(10**8) == ("cpu", "CPU (the default)")
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    monkeypatch.delenv("GROVE_GPUS")
    ok, reason = can_use_gpu(10**8)
    assert not ok and reason.startswith("no GPU") and "CPU" in reason
    assert choose_device(10**8, prefer="gpu")[0] == "cpu"


def test_feedback_is_saved_with_prompt_answer_and_candidate(onnx, cands):
    text, stats = onnx.answer(TRAVEL, adapter="adapter", max_new_tokens=8)
    up = save_feedback(
        "up",
        prompt=TRAVEL[0]["content"],
        answer=text,
        candidate=cands["onnx"],
        adapter="adapter",
        stats=stats,
        settings={"max_new_tokens": 8},
    )
    down = save_feedback(-1, prompt="Hi", answer="<b>x</b>", candidate=cands["lora"], adapter=None)
    rows = list_feedback()
    assert [r["id"] for r in rows[:2]] == [down, up]
    r = next(r for r in rows if r["id"] == up)
    assert r["rating"] == 1 and r["answer"] == text and r["candidate_id"] == cands["onnx"]["id"]
    assert (
        r["run_id"] == cands["onnx"]["run_id"]
        and r["model_path"] == cands["onnx"]["path"]
        and r["adapter"] == "adapter"
    )
    assert r["stats"]["backend"] == "onnxruntime-genai" and r["settings"] == {"max_new_tokens": 8}
    assert [x["id"] for x in list_feedback(candidate_id=cands["lora"]["id"])][:1] == [down]
    r = next(r for r in rows if r["id"] == down)
    assert r["answer"] == "<b>x</b>" and r["rating"] == -1 and r["adapter"] is None  # NULL: the base model
    assert any(
        f["id"] == up for f in Registry().feedback(model_path=cands["onnx"]["path"])
    )  # the registry's own reader
    with pytest.raises(ChatError):
        save_feedback("meh", prompt="", answer="")
