"""The check of a target's environment, run in its interpreter, in two processes:

- ``python -m engine.targets.probe provider PROVIDER``: a small graph (MatMul + Add + Relu) run on ``PROVIDER``
  through onnxruntime with the CPU fallback switched off (a provider that only lists itself but cannot run the graph
  fails), compared with numpy;
- ``python -m engine.targets.probe runtime PROVIDER``: for OpenVINO the same graph compiled and run by the OpenVINO
  runtime, and openvino-genai imported (else onnxruntime-genai); then Grove's runner and evaluator imported, as a run
  there will.

Two processes because on Linux the onnxruntime-openvino wheel carries an OpenVINO build of its own (another C++ ABI,
the same library name): once its provider is loaded, ``import openvino`` fails in that process, and the other way
round. Each prints one JSON line: {"ok", ...} or {"ok": false, "error"}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUN_MODULES = ("engine.runs.runner", "engine.evaluate.evaluator", "engine.evaluate.candidates", "engine.evaluate.speed")


def _graph() -> tuple[Any, Any, Any]:
    """A MatMul + Add + Relu model, an input and the expected output."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["out"])],
        "grove_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    x = rng.standard_normal((4, 16)).astype(np.float32)
    return model, x, np.maximum(x @ w + b, 0)


def probe_provider(provider: str) -> dict[str, Any]:
    """The graph on ``provider`` through onnxruntime, with the CPU fallback off."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    out: dict[str, Any] = {"provider": provider, "onnxruntime": ort.__version__}
    avail = ort.get_available_providers()
    if provider not in avail:
        return {**out, "ok": False, "error": f"onnxruntime {ort.__version__} here lists {avail}, not {provider}"}
    model, x, want = _graph()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "probe.onnx"
        onnx.save(model, str(path))
        so = ort.SessionOptions()
        if provider != "CPUExecutionProvider":
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # every node on the provider, or fail
        opts = [{"device_type": "CPU"}] if provider == "OpenVINOExecutionProvider" else [{}]
        t = time.perf_counter()
        sess = ort.InferenceSession(str(path), so, providers=[provider], provider_options=opts)
        got = sess.run(None, {"x": x})[0]
        out["ms"] = round((time.perf_counter() - t) * 1000, 1)
    if sess.get_providers()[0] != provider:
        return {**out, "ok": False, "error": f"the session ran on {sess.get_providers()}, not {provider}"}
    if not np.allclose(got, want, atol=1e-4):
        return {**out, "ok": False, "error": f"{provider} computed a wrong result (max error {abs(got - want).max():.3g})"}
    if provider == "OpenVINOExecutionProvider":
        try:
            out["devices"] = list(ort.capi._pybind_state.get_available_openvino_device_ids())
        except Exception:  # noqa: BLE001 - only informative
            pass
    return {**out, "ok": True}


def probe_runtime(provider: str) -> dict[str, Any]:
    """What a run there uses besides onnxruntime: for OpenVINO the OpenVINO runtime (the same graph compiled and run
    on its CPU device) and openvino-genai, else onnxruntime-genai; then Grove's runner and evaluator, imported."""
    import importlib

    import numpy as np

    out: dict[str, Any] = {}
    if provider == "OpenVINOExecutionProvider":
        import openvino as ov
        import openvino_genai as ovg

        model, x, want = _graph()
        core = ov.Core()
        # f32: on a CPU with bf16 support OpenVINO computes in bf16 by default (an LLM keeps that default)
        compiled = core.compile_model(core.read_model(model.SerializeToString()), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled({"x": x})[compiled.outputs[0]]
        if not np.allclose(got, want, atol=1e-4):
            return {"ok": False, "error": f"the OpenVINO runtime computed a wrong result (max error {abs(got - want).max():.3g})"}
        out["openvino"] = ov.get_version()
        out["runtime"] = f"the OpenVINO runtime {ov.get_version().split('-')[0]} ran it on {core.available_devices}, openvino-genai {ovg.__version__}"
    else:
        import onnxruntime_genai as og

        out["runtime"] = f"onnxruntime-genai {og.__version__}"
    for mod in RUN_MODULES:  # by name: this check runs in a process of its own; the modules are layers above
        importlib.import_module(mod)
    return {**out, "ok": True}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("provider", "runtime"):
        print("usage: python -m engine.targets.probe provider|runtime EXECUTION_PROVIDER", file=sys.stderr)
        return 2
    try:
        res = (probe_provider if argv[0] == "provider" else probe_runtime)(argv[1])
    except Exception as e:  # noqa: BLE001 - the check reports every failure as its result
        res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(res), flush=True)
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
