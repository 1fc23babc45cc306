"""A benchmark task over local files, in lm-evaluation-harness's own task format: the travel multiple choice.

lm-eval runs hub tasks (``hellaswag``, ``arc_easy``, ``mmlu``) by name; a machine without the hub needs a task whose
data is on disk. ``build_travel_mc`` writes one from a prompt/response JSONL file (by default the project's
``engine/assets/travel_sample.jsonl``, 400 travel questions with answers):

- for each question, the choices are its own answer and ``distractors`` answers to *other* questions, drawn with
  ``random.Random(seed)`` (seed 0: the same task on every machine), the right answer put at a seeded position;
- the task YAML is lm-eval's own (``output_type: multiple_choice``, ``dataset_path: json`` with the local
  ``data_files``), so ``lm_eval --include_path DIR --tasks travel_mc`` runs it unchanged, and Grove runs it the same way;
- lm-eval scores each choice by the log-likelihood of the answer text after ``Question: ...\\nAnswer:``; ``acc`` is
  the share of questions where the right answer scores highest (chance: 1 / (distractors + 1)).

A model that does not know which answer belongs to which question fails it; a fine-tune on the same travel data
changes it (the demo trains on 90 % of these questions, so the task also shows how much of what the fine-tune
learned survives quantization). The task file's hash and the data file's hash are part of every benchmark result's
fingerprint (engine.evaluate.benchmarks).
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import DataError

TRAVEL_TASK = "travel_mc"

_YAML = """\
# Written by Grove (engine/data/benchmark_task.py): multiple choice over the travel Q&A sample; for each question,
# its own answer among {distractors} answers to other questions (seed {seed}). Runs unchanged with
#   lm_eval --include_path {folder} --tasks {task} ...
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  source_sha256: "{source_hash}"
"""


def _rows(source: Path) -> list[dict[str, str]]:
    rows = []
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"benchmark source {source}: cannot read it ({e.strerror})") from None
    for n, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            r = json.loads(ln)
        except ValueError:
            raise DataError(f"{source}, line {n}: not valid JSON") from None
        if not isinstance(r, dict) or not str(r.get("prompt") or "").strip() or not str(r.get("response") or "").strip():
            raise DataError(f"{source}, line {n}: needs non-empty 'prompt' and 'response'")
        rows.append({"prompt": str(r["prompt"]), "response": str(r["response"])})
    return rows


def travel_mc_docs(rows: list[dict[str, str]], *, distractors: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """The task's documents: ``{"question", "choices", "label"}`` per row (``label``: the right answer's index)."""
    answers = list(dict.fromkeys(r["response"] for r in rows))
    if len(answers) <= distractors:
        raise DataError(f"a multiple-choice task with {distractors} distractors needs more than {distractors} "
                        f"different answers; the source has {len(answers)}")
    rng = random.Random(seed)
    docs = []
    for r in rows:
        others = [a for a in answers if a != r["response"]]
        choices = rng.sample(others, distractors)
        label = rng.randrange(distractors + 1)
        choices.insert(label, r["response"])
        docs.append({"question": r["prompt"], "choices": choices, "label": label})
    return docs


def build_travel_mc(out_dir: Path | None = None, *, source: Path = paths.DEMO_SAMPLE, distractors: int = 3,
                    seed: int = 0, task: str = TRAVEL_TASK) -> Path:
    """Write ``<out_dir>/<task>.jsonl`` and ``<out_dir>/<task>.yaml`` (lm-eval's task format); return the YAML's
    path. ``out_dir`` defaults to ``GROVE_HOME/benchmarks``. Writing the same task again leaves the files as they are
    (their hash is part of the results' fingerprint)."""
    import hashlib

    out = Path(out_dir or paths.home() / "benchmarks").resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = Path(source)
    docs = travel_mc_docs(_rows(source), distractors=distractors, seed=seed)
    data = out / f"{task}.jsonl"
    text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    if not data.is_file() or data.read_text(encoding="utf-8") != text:
        data.write_text(text, encoding="utf-8")
    yaml_text = _YAML.format(task=task, data=json.dumps(str(data)), folder=out, distractors=distractors, seed=seed,
                             source_hash=hashlib.sha256(source.read_bytes()).hexdigest()[:16])
    spec = out / f"{task}.yaml"
    if not spec.is_file() or spec.read_text(encoding="utf-8") != yaml_text:
        spec.write_text(yaml_text, encoding="utf-8")
    return spec


# -- finding a task's file (the fingerprint hashes it; the spec check names a task that is nowhere) -------------------
def load_task_yaml(text: str) -> Any:
    """An lm-eval task file read as data (its ``!function`` tags kept as text, nothing run); None when not YAML."""
    import yaml

    class L(yaml.SafeLoader):
        pass

    L.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")
    try:
        return yaml.load(text, Loader=L)
    except yaml.YAMLError:
        return None


def _yaml_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.y*ml") if p.is_file())


@functools.lru_cache(maxsize=64)
def _find_task_file(task: str, root: str, _stamp: float) -> str | None:
    """The YAML file under ``root`` that defines ``task`` (``task: <name>`` or a group of that name)."""
    needle = (f"task: {task}", f"group: {task}", f"task: \"{task}\"", f"task: '{task}'")
    for p in _yaml_files(Path(root)):
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if not any(n in text for n in needle):
            continue
        doc = load_task_yaml(text)
        if isinstance(doc, dict) and task in (doc.get("task"), doc.get("group")):
            return str(p)
    return None


def _lm_eval_tasks_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "tasks"


def task_file(task: str, include_path: str | None) -> Path | None:
    """The YAML file defining ``task``: in ``include_path`` when given, else among the tasks lm-eval ships."""
    root = Path(include_path) if include_path else _lm_eval_tasks_dir()
    if root is None or not root.exists():
        return None
    stamp = max((p.stat().st_mtime for p in _yaml_files(root)), default=0.0) if include_path else 0.0
    found = _find_task_file(task, str(root.resolve()), stamp)
    return Path(found) if found else None


