"""Chat with an OpenVINO candidate. Its runtime lives in the OpenVINO target's environment (engine.targets), never in
the process that chats, so ``OvChatModel`` starts a small server there - ``python -m engine.chat.ov_model FOLDER`` in
the target's interpreter - and talks to it in JSON lines over its stdin/stdout: one request (the conversation and the
sampling settings), then one line per generated piece of text, then the answer's stats. The server loads the model
with engine.evaluate.backends.Ov (the evaluator's code: the OpenVINO runtime, the folder's tokenizer) and answers one
message at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.chat.base import ChatModel, ChatStats, Sampling, fit_context, set_timings, weights_bytes
from engine.chat.text import ChatError, Message
from engine.evaluate.backends import OPENVINO


class OvChatModel(ChatModel):
    """An OpenVINO folder, answered by a server in the OpenVINO environment (no adapters: the recipe merges them)."""

    backend = OPENVINO

    def __init__(self, folder: Path, *, device: str = "cpu") -> None:
        from engine.targets import env as target_env

        t0 = time.perf_counter()
        folder = Path(folder)
        python = target_env.python_for("openvino")  # TargetError (a GroveError) when the environment is not ready
        super().__init__(folder, "cpu", {}, weights_bytes(folder))
        self._lock = threading.Lock()
        self._proc = subprocess.Popen([python, "-m", "engine.chat.ov_model", str(folder)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                      env=target_env.run_env())
        ready = self._read()
        if "error" in ready:
            self.close()
            raise ChatError(f"{folder}: the OpenVINO runtime could not load it ({ready['error']})")
        self.context_length = int(ready["context"])
        self.load_s = time.perf_counter() - t0

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise ChatError(f"the OpenVINO chat server for {self.path} stopped (exit {self._proc.poll()})")
        return json.loads(line)

    def _run(
        self, stats: ChatStats, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
    ) -> Iterator[str]:
        t0 = time.perf_counter()
        t_first = t_last = None
        n = 0
        with self._lock:  # one answer at a time per server
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"messages": msgs, "sampling": sampling.__dict__, "prefill": prefill}) + "\n")
            self._proc.stdin.flush()
            done: dict[str, Any] = {}
            try:
                while True:
                    msg = self._read()
                    if "text" in msg:
                        t_last = time.perf_counter()
                        if msg.get("token"):
                            n += 1
                            t_first = t_first or t_last
                        if msg["text"]:
                            yield msg["text"]
                    else:
                        done = msg
                        break
            except GeneratorExit:
                stats.stop_reason = "cancelled"
                while "done" not in self._read():  # let the server finish this answer: the next one is clean
                    pass
                raise
            finally:
                set_timings(stats, t0, t_first, t_last, n)
            if "error" in done:
                stats.stop_reason = "error"
                raise ChatError(done["error"])
            stats.prompt_tokens = done.get("prompt_tokens", 0)
            stats.trimmed_messages = done.get("trimmed", 0)
            stats.prefill_s = done.get("prefill_s")
            stats.stop_reason = done.get("stop", "length")

    def close(self) -> None:
        self.closed = True
        p = getattr(self, "_proc", None)
        if p is not None and p.poll() is None:
            try:
                p.stdin.close()  # type: ignore[union-attr]
                p.wait(timeout=10)
            except Exception:  # noqa: BLE001
                p.kill()


# -- the server, in the OpenVINO environment -------------------------------------------------------------------
def _pick(logits: Any, s: dict[str, Any], rng: Any) -> int:
    import numpy as np

    if not s.get("do_sample"):
        return int(logits.argmax())
    x = np.asarray(logits, dtype=np.float64) / max(float(s.get("temperature") or 1.0), 1e-5)
    k = int(s.get("top_k") or 0)
    if 0 < k < x.size:
        x[x < np.partition(x, -k)[-k]] = -np.inf
    p = np.exp(x - x.max())
    p /= p.sum()
    top_p = float(s.get("top_p") or 1.0)
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(p.size, p=p))


def serve(folder: str) -> int:
    import numpy as np

    from engine.evaluate.backends import Ov

    out = sys.stdout

    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        m = Ov(Path(folder))
    except Exception as e:  # noqa: BLE001 - the reason goes to the chat page
        send({"error": f"{type(e).__name__}: {e}"})
        return 1
    send({"context": m.context})
    for line in sys.stdin:
        req = json.loads(line)
        s = req["sampling"]
        try:
            msgs, trimmed, ids = fit_context(req["messages"], m.chat_ids, m.context)
            pre = m.tok(req["prefill"], add_special_tokens=False)["input_ids"] if req.get("prefill") else []
            ids = list(ids) + list(pre)
            if req.get("prefill"):
                send({"text": req["prefill"]})
            rng = np.random.default_rng(s.get("seed"))
            m.reset()
            t = time.perf_counter()
            logits = m.step(ids)
            prefill_s = time.perf_counter() - t
            new: list[int] = []
            shown = ""
            stop = "length"
            budget = min(int(s.get("max_new_tokens") or 128), m.context - len(ids))
            while len(new) < budget:
                tok = _pick(logits[-1], s, rng)
                if tok in m.eos:
                    stop = "eos"
                    break
                new.append(tok)
                text = m.tok.decode(new, skip_special_tokens=True)
                piece = text[len(shown):] if text.startswith(shown) and not text.endswith("\ufffd") else ""
                shown += piece
                send({"text": piece, "token": True})
                logits = m.step([tok])
            send({"done": True, "prompt_tokens": len(ids) - len(pre), "trimmed": trimmed, "prefill_s": prefill_s,
                  "stop": stop})
        except Exception as e:  # noqa: BLE001 - the reason goes to the chat page; the server keeps serving
            send({"done": True, "error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
