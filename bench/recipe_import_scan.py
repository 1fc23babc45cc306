"""How many of Olive's own text-LLM recipes (microsoft/olive-recipes) import into a launchable Grove spec.

    python bench/recipe_import_scan.py RECIPES_DIR [--model DIR] [--json OUT]

RECIPES_DIR is a checkout of github.com/microsoft/olive-recipes, or a bare clone / git directory of it (read with
``git ls-tree`` / ``git show``: no work tree needed). Every JSON/YAML file that is an Olive workflow config
(``input_model`` with a Hugging Face model) of a text LLM is imported with ``engine.olive.importer`` and the draft is
checked as a submit checks it (``engine.spec.schema.parse_spec`` + ``engine.olive.validate.problems``).

"Launchable" is judged with the recipe's model replaced by a local model (``--model``; by default the tiny demo model,
built once under GROVE_HOME): the recipes' Hub models (Qwen3, Llama-3.2, Phi-3.5...) are not on this machine and
nothing here downloads them. A local dataset file a recipe names that is not here is replaced by the tiny model's
sample the same way; Hub datasets are kept (the check does not read them).

Each recipe is filed under the causes it carries (a recipe may carry several), read from the config itself, not from
the importer: pass types Olive reads without regard to case, an accelerator with providers and no device, a Hugging
Face data config relying on Olive's pre-processing defaults, no passes (baseline / lm-eval), evaluators, and a target
Grove does not run (by its execution provider, or by the folder the repository files it under: QNN/, OpenVINO/,
RyzenAI/, VitisAI/, NvTensorRtRtx/, QAIRT/, webgpu/, and aitk/ files named for those targets). Run it on the code before and after a change (PYTHONPATH picks the code) and compare the tables.
Prints a table, writes JSON (bench/results/recipe_import_scan.json unless --json).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

NOT_TEXT = re.compile(
    r"VL|Embedding|VideoChat|Fara|whisper|clip|bert|vit-|resnet|diffusion|sam-|sam2|nemotron|parakeet|ast-|table-|"
    r"Flux|adetailer|gte-|MiniLM|timm|OFA|deberta|mobilenet|audio|vision|embedding|speech|ai2d|fleurs|translategemma",
    re.IGNORECASE,
)
TEXT_LLM = re.compile(r"qwen|smollm|llama|phi-|gemma|mistral|ministral|deepseek|olmo|opt-|gpt|nemo|hy-mt", re.I)
GROVE_EPS = {"CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"}
CAUSES = ("pass type spelling", "device from provider", "Olive data defaults", "no passes", "evaluators",
          "foreign target")


# -- reading the repository (a work tree, or a bare git directory) ---------------------------------------------------
def _files(root: Path) -> dict[str, str]:
    """{path: text} of every .json/.yaml/.yml file."""
    if (root / "HEAD").is_file() and (root / "objects").is_dir():  # a bare clone: read it with git
        git = ["git", "--git-dir", str(root)]
        names = subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD"], capture_output=True, text=True,
                               check=True).stdout.split("\n")
        out = {}
        for n in names:
            if n.endswith((".json", ".yaml", ".yml")) and not n.startswith("."):
                out[n] = subprocess.run([*git, "show", f"HEAD:{n}"], capture_output=True, text=True).stdout
        return out
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(root.rglob("*")) if p.suffix in (".json", ".yaml", ".yml") and ".git" not in p.parts
            and not p.relative_to(root).parts[0].startswith(".")}


def _config(text: str) -> dict[str, Any] | None:
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("input_model"), dict):
        return None
    return cfg


def is_text_llm(path: str, cfg: dict[str, Any]) -> bool:
    m = cfg["input_model"]
    task = str(m.get("task") or (m.get("config") or {}).get("task") or "text-generation")
    return (str(m.get("type", "")).lower() in ("hfmodel", "pytorchmodel") and task.startswith("text-generation")
            and bool(TEXT_LLM.search(path.split("/")[0])) and not NOT_TEXT.search(path))


# the repository files each recipe under its target: these folders and file names are for other targets
OTHER_TARGET_PATH = re.compile(r"(^|/)(QNN|OpenVINO|RyzenAI|VitisAI|NvTensorRtRtx|QAIRT|webgpu|DML)(/|$)|"
                               r"qnn|_ov_|_ov\.|ov_config|openvino|vitis|trtrtx|dml|npu|webgpu", re.IGNORECASE)


def _accelerator(cfg: dict[str, Any]) -> tuple[str | None, list[str]]:
    cfg = {**(cfg.get("engine") or {}), **cfg} if isinstance(cfg.get("engine"), dict) else cfg
    systems = cfg.get("systems") if isinstance(cfg.get("systems"), dict) else {}
    t = cfg.get("target")
    sysc = systems.get(t) if isinstance(t, str) else next(iter(systems.values()), None)
    if not isinstance(sysc, dict):
        return None, []
    accs = (sysc.get("config") if isinstance(sysc.get("config"), dict) else sysc).get("accelerators") or []
    acc = accs[0] if accs else None
    if isinstance(acc, str):
        return acc.lower(), []
    if not isinstance(acc, dict):
        return None, []
    eps = [e[0] if isinstance(e, list) else e for e in acc.get("execution_providers") or []]
    return (str(acc["device"]).lower() if acc.get("device") else None), [str(e) for e in eps]


def causes(cfg: dict[str, Any], pass_names: set[str]) -> list[str]:
    out = []
    passes = cfg.get("passes") if isinstance(cfg.get("passes"), dict) else {}
    types = [str(p.get("type", "")) for p in passes.values() if isinstance(p, dict)]
    lower = {n.lower() for n in pass_names}
    if any(t not in pass_names and t.lower() in lower for t in types):
        out.append("pass type spelling")
    dev, eps = _accelerator(cfg)
    if dev is None and eps:
        out.append("device from provider")
    for dc in cfg.get("data_configs") or []:
        if not isinstance(dc, dict) or str(dc.get("type", "HuggingfaceContainer")) != "HuggingfaceContainer":
            continue
        pre = dc.get("pre_process_data_config") or {}
        pre = {**pre, **(pre.get("params") or {})}
        if not any(pre.get(k) for k in ("text_template", "text_cols", "text_col", "chat_template",
                                        "text_formatting_func")):
            out.append("Olive data defaults")
            break
    if not passes:
        out.append("no passes")
    if cfg.get("evaluators") or isinstance(cfg.get("evaluator"), dict):
        out.append("evaluators")
    if any(e not in GROVE_EPS for e in eps) or dev not in (None, "cpu", "gpu"):
        out.append("foreign target")
    return out


# -- importing -------------------------------------------------------------------------------------------------------
def import_one(text: str, passes: dict[str, Any], model: str, dataset: str, target: str | None = None
               ) -> tuple[str, str]:
    """(outcome, detail): launchable | to fix (first problem) | refused (the message) | crashed."""
    from engine.errors import SpecError
    from engine.olive import importer, validate
    from engine.spec.drafts import to_spec_dict
    from engine.spec.schema import parse_spec

    kw = {"target": target} if target and "target" in inspect.signature(importer.import_text).parameters else {}
    if target and not kw:
        return "no such option", "this code has no import target option"
    try:
        draft, _ = importer.import_text(text, passes, **kw)
    except SpecError as e:
        return "refused", " | ".join(f"{w}: {m}" for w, m in e.problems)[:300]
    except Exception as e:  # noqa: BLE001 - counted, with its type
        return "crashed", f"{type(e).__name__}: {e}"[:300]
    draft["model"]["name"] = model
    ds = draft.get("dataset") or {}
    if ds.get("path") and not Path(ds["path"]).is_file():
        ds["path"] = dataset
    try:
        spec = parse_spec(to_spec_dict(draft))
    except SpecError as e:
        return "to fix", " | ".join(f"{w}: {m}" for w, m in e.problems)[:300]
    errs = [f"{f['where']}: {f['message']}" for f in validate.problems(spec, catalog=passes) if f["level"] == "error"]
    return ("to fix", " | ".join(errs)[:300]) if errs else ("launchable", "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", type=Path, help="olive-recipes checkout or bare git directory")
    ap.add_argument("--model", help="local model folder standing in for the recipes' Hub models (default: the tiny "
                    "demo model, built once under GROVE_HOME)")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "recipe_import_scan.json")
    ap.add_argument("--label", default="", help="a name for this code (e.g. before/after) in the JSON")
    args = ap.parse_args(argv)

    from engine.olive import catalog

    if args.model:
        model, dataset = args.model, str(Path(args.model).parent / "travel_sample.jsonl")
    else:
        from engine.models import tiny

        info = tiny.build_demo()
        model, dataset = info["model"], info["dataset"]
    passes = catalog.load()["passes"]
    rows = []
    for path, text in sorted(_files(args.recipes).items()):
        cfg = _config(text)
        if cfg is None or not is_text_llm(path, cfg):
            continue
        cs = causes(cfg, set(passes))
        if OTHER_TARGET_PATH.search(path) and "foreign target" not in cs:
            cs.append("foreign target")
        outcome, detail = import_one(text, passes, model, dataset)
        row = {"recipe": path, "causes": cs, "outcome": outcome, "detail": detail,
               "cpu_cuda": "foreign target" not in cs}
        if "foreign target" in cs:
            row["as_cpu"], row["as_cpu_detail"] = import_one(text, passes, model, dataset, target="cpu")
        rows.append(row)

    main_rows = [r for r in rows if r["cpu_cuda"]]
    foreign = [r for r in rows if not r["cpu_cuda"]]
    print(f"text-LLM Olive configs read: {len(rows)} ({len(main_rows)} for a CPU or CUDA target, {len(foreign)} for "
          "another target)")
    print(f"\nCPU/CUDA recipes: {sum(r['outcome'] == 'launchable' for r in main_rows)} of {len(main_rows)} import to a "
          "launchable spec\n")
    print(f"{'cause':24} {'recipes':>8} {'launchable':>11}  other outcomes")
    table = {}
    for c in [*CAUSES[:-1], "(none of these)"]:
        sel = [r for r in main_rows if (c in r["causes"]) or (c == "(none of these)" and not r["causes"])]
        n_ok = sum(r["outcome"] == "launchable" for r in sel)
        other = Counter(r["outcome"] for r in sel if r["outcome"] != "launchable")
        table[c] = {"recipes": len(sel), "launchable": n_ok, "other": dict(other)}
        print(f"{c:24} {len(sel):>8} {n_ok:>11}  {', '.join(f'{k} {v}' for k, v in other.items())}")
    refused_one = sum(r["outcome"] == "refused" and " | " not in r["detail"] and "Value error" not in r["detail"]
                      and "Input should be" not in r["detail"] for r in foreign)
    as_cpu = sum(r.get("as_cpu") == "launchable" for r in foreign)
    print(f"\nother targets (QNN, OpenVINO, DirectML, WebGPU, VitisAI, NvTensorRTRTX...): {len(foreign)}; refused in one "
          f"sentence: {refused_one}; launchable when imported as a CPU version: {as_cpu}")
    for k, v in Counter(r["outcome"] for r in foreign).most_common():
        print(f"  {k:12} {v}")
    blockers = Counter(r["detail"].split(" | ")[0][:110] for r in main_rows if r["outcome"] != "launchable")
    if blockers:
        print("\nwhat stops the CPU/CUDA recipes that do not launch (first problem, count):")
        for k, v in blockers.most_common(12):
            print(f"  {v:3}  {k}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"label": args.label, "model_stand_in": model, "rows": rows, "table": table,
                                     "cpu_cuda": len(main_rows), "launchable": sum(r["outcome"] == "launchable"
                                                                                   for r in main_rows),
                                     "foreign": len(foreign), "foreign_refused_one_sentence": refused_one,
                                     "foreign_launchable_as_cpu": as_cpu}, indent=1))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
