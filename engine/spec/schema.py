"""RunSpec: what a user asked for, typed, versioned and frozen.

A spec names an input model, a dataset, an ordered list of Olive passes (any parameter may be searchable with
candidate values), a target, evaluation and search settings, and the resources the run needs. It says nothing
about Olive's JSON shape: ``engine.olive.config`` turns it into a workflow config.

``load_spec`` / ``parse_spec`` turn YAML/JSON/dicts into a RunSpec or raise ``SpecError`` naming each bad field
by its path (``passes.1.type``, ``dataset.eval_split``...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import SpecError

SPEC_VERSION = 1
# Dataset formats (engine.data.formats): conversations rendered with the model's chat template, trained on the
# assistant turns only; prompt/response pairs (a text template or the chat template); pre-rendered text.
CONVERSATION_FORMATS = ("messages", "sharegpt", "alpaca")
DATASET_FORMATS = (*CONVERSATION_FORMATS, "prompt_response", "text")
NO_PASSES = "passes: "  # a model-level error that belongs to the 'passes' field (see _problems)


def _at(field: str, message: str) -> str:
    """A model-level error that belongs to ``field`` (grove_words reports it there)."""
    return f"\u0000{field}\u0000{message}"
PASS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def plain_fields(template: str) -> list[str]:
    """The column names a text template uses; raise ValueError unless every field is a plain ``{column}``.

    Format specs (``{prompt:>999999999}`` allocates a gigabyte per row), conversions (``{x!r}``), attribute and
    index access (``{x.y}``, ``{x[0]}``) and positional fields (``{}``, ``{0}``) are refused."""
    import string

    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"not a valid template: {e} (write a literal brace as '{{{{' or '}}}}')") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        if spec or conv or not name.strip() or name.isdigit() or any(c in name for c in ".[]"):
            raise ValueError(f"only plain {{column}} fields are allowed, not {shown}")
        fields.append(name)
    return fields


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Frozen):
    """The input model: a Hugging Face id (``microsoft/Phi-3.5-mini-instruct``) or a local folder."""

    name: str = Field(description="Hugging Face model id, or path to a local model folder.", min_length=1)
    trust_remote_code: bool = Field(False, description="Run the model repository's own Python code. Off unless asked.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit); ignored for folders.")

    @property
    def is_local(self) -> bool:
        n = self.name
        return n.startswith(("/", "./", "../", "~")) or Path(n).expanduser().exists()

    @property
    def path(self) -> Path:
        return Path(self.name).expanduser().resolve()


class DatasetSpec(_Frozen):
    """Training data: a local JSONL/CSV/Parquet file, or a Hugging Face dataset name + split."""

    path: str | None = Field(
        None, description="Local .jsonl, .json, .csv or .parquet file. A relative path is resolved once, at submit "
        "(against the spec file's folder for `grove submit`, the repository or GROVE_HOME in the UI), and stored absolute.")
    format: Literal["messages", "sharegpt", "alpaca", "prompt_response", "text"] | None = Field(
        None, description="How rows hold the conversation: messages (OpenAI/TRL role/content turns), sharegpt "
        "(conversations of from/value turns), alpaca (instruction/input/output), prompt_response, text (already "
        "rendered). Detected from the file when absent. messages, sharegpt and alpaca imply chat_template: true.")
    hf_name: str | None = Field(None, description="Hugging Face dataset name (instead of path).")
    hf_subset: str | None = Field(None, description="Hugging Face dataset configuration name.")
    hf_split: str = Field("train", description="Hugging Face split to read.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Rename dataset columns before templating: {dataset column: name used in the template}.",
    )
    text_template: str | None = Field(
        None, description="Python format string over columns, e.g. '<|user|>\\n{prompt}<|end|>\\n...'."
    )
    chat_template: bool = Field(
        False, description="Render rows with the tokenizer's own chat template (prompt/response columns)."
    )
    prompt_column: str = Field("prompt", description="Column holding the user turn (chat template).")
    response_column: str = Field("response", description="Column holding the assistant turn (chat template).")
    system_prompt: str | None = Field(None, description="System message for the chat template.")
    eval_split: float | None = Field(
        0.1, gt=0, lt=0.9, description="Fraction of rows held out for evaluation (ignored when eval_path is set)."
    )
    eval_path: str | None = Field(None, description="A separate evaluation file, same format as path.")
    split_seed: int = Field(0, description="Seed of the deterministic train/eval split.")
    max_samples: int | None = Field(None, gt=0, description="Use at most this many training rows.")
    max_seq_len: int = Field(512, ge=8, le=131072, description="Training sequence length in tokens.")

    @model_validator(mode="before")
    @classmethod
    def _format_implies(cls, data: Any) -> Any:
        """A conversation format is rendered with the chat template; ``format: text`` trains on '{text}'."""
        if isinstance(data, dict):
            fmt = data.get("format")
            if fmt in CONVERSATION_FORMATS and data.get("chat_template") is None and not data.get("text_template"):
                data = {**data, "chat_template": True}
            if fmt == "text" and not data.get("text_template") and not data.get("chat_template"):
                data = {**data, "text_template": "{text}"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if bool(self.path) == bool(self.hf_name):
            raise ValueError("give exactly one of 'path' (a local file) or 'hf_name' (a Hugging Face dataset)")
        if self.text_template and self.chat_template:
            raise ValueError("give either 'text_template' or 'chat_template: true', not both")
        if not self.text_template and not self.chat_template:
            raise ValueError("give a 'text_template' or set 'chat_template: true'")
        if self.format in CONVERSATION_FORMATS and not self.chat_template:
            raise ValueError(f"format '{self.format}' holds conversations, rendered with the model's chat template: "
                             "remove text_template (chat_template: true is implied)")
        if self.format == "text" and self.chat_template:
            raise ValueError("format 'text' is already rendered: give text_template: '{text}', not chat_template")
        return self

    @field_validator("text_template")
    @classmethod
    def _plain_template(cls, v: str | None) -> str | None:
        if v:
            plain_fields(v)
        return v

    @property
    def template_fields(self) -> list[str]:
        if self.format in CONVERSATION_FORMATS:
            return {"messages": ["messages"], "sharegpt": ["conversations"], "alpaca": ["instruction", "output"]}[
                self.format]
        if self.chat_template:
            return [self.prompt_column, self.response_column]
        return plain_fields(self.text_template or "")


class PassSpec(_Frozen):
    """One Olive pass: its type from Olive's catalog, fixed parameters, and searchable ones."""

    type: str = Field(description="Olive pass type, e.g. LoRA, ModelBuilder, ExtractAdapters.", min_length=1)
    name: str | None = Field(None, description="Unique name in this workflow; defaults to the type in lower case.")
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed parameter values.")
    search: dict[str, list[Any]] = Field(
        default_factory=dict, description="Searchable parameters: {parameter: [candidate values]}."
    )

    @field_validator("type")
    @classmethod
    def _olive_spelling(cls, v: str) -> str:
        """Olive reads pass types without regard to case (``gptq`` is Gptq): stored as the catalog spells them."""
        from engine.spec.passes import canonical_pass_type

        return canonical_pass_type(v)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str | None) -> str | None:
        if v is not None and not PASS_NAME.match(v):
            raise ValueError("letters, digits, '_' and '-' only, starting with a letter")
        return v

    @field_validator("search")
    @classmethod
    def _search_ok(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, vals in v.items():
            if len(vals) < 1:
                raise ValueError(f"'{k}' needs at least one candidate value")
            if len({json.dumps(x, sort_keys=True, default=str) for x in vals}) != len(vals):
                raise ValueError(f"'{k}' lists the same candidate value twice")
        return v

    @model_validator(mode="after")
    def _no_overlap(self) -> PassSpec:
        both = sorted(set(self.params) & set(self.search))
        if both:
            raise ValueError(f"parameter(s) {both} are both fixed and searchable: keep one")
        return self

    @property
    def key(self) -> str:
        return self.name or self.type.lower()


class TargetSpec(_Frozen):
    """Where the candidates run: this Grove runs onnxruntime(-genai) on the CPU and on NVIDIA GPUs (CUDA, TensorRT);
    other execution providers (QNN, OpenVINO, DirectML, VitisAI, NvTensorRTRTX...) are refused in those words."""

    device: Literal["cpu", "gpu"] = "cpu"
    execution_provider: Literal["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"] = (
        "CPUExecutionProvider"
    )
    precision: Literal["fp32", "fp16", "bf16", "int8", "int4"] = "int4"

    @model_validator(mode="after")
    def _ep_fits(self) -> TargetSpec:
        if self.device == "cpu" and self.execution_provider != "CPUExecutionProvider":
            raise ValueError(f"execution_provider {self.execution_provider} needs device 'gpu'")
        return self


class GoalSpec(_Frozen):
    type: Literal[
        "threshold", "min-improvement", "percent-min-improvement", "max-degradation", "percent-max-degradation"
    ]
    value: float


class MetricSpec(_Frozen):
    name: str = Field(description="Metric name as the evaluator reports it, e.g. rouge_l, perplexity, decode_tps.")
    priority: int = Field(1, ge=1, description="1 ranks first; metrics with equal priority are not allowed.")
    goal: GoalSpec | None = None


# Olive's valid ranges for percent goals, by (goal type, higher_is_better) (olive/evaluator/metric.py)
PERCENT_RANGES = {
    ("percent-min-improvement", True): (0, float("inf")),
    ("percent-min-improvement", False): (0, 100),
    ("percent-max-degradation", True): (0, 100),
    ("percent-max-degradation", False): (0, float("inf")),
}


TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_BENCHMARK_LIMIT = 100_000


class BenchmarkSpec(_Frozen):
    """One lm-evaluation-harness task measured on every candidate (engine.evaluate.benchmarks)."""

    task: str = Field(description="lm-eval task name: a hub task (hellaswag, arc_easy, mmlu...) or one defined in "
                      "include_path.")
    limit: int = Field(description="Examples of the task to evaluate (lm-eval's --limit): the cost is limit x candidates.")
    num_fewshot: int = Field(0, description="Few-shot examples put before each question (lm-eval's --num_fewshot).")
    include_path: str | None = Field(None, description="A folder (or one YAML file) of lm-eval task definitions over "
                                        "local files, as lm-eval's --include_path; empty for the tasks lm-eval ships.")


def _grove_error(message: str) -> Exception:
    """A validation error whose message pydantic shows as is (no "Value error, " before it)."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError("grove", message)


def _benchmark_problems(v: Any) -> list[str]:
    """What is wrong with ``evaluation.benchmarks`` as given (a list of {task, limit, num_fewshot, include_path}),
    in Grove's words, each naming the entry and its field."""
    if v is None:
        return []
    if not isinstance(v, list):
        return ["benchmarks: must be a list of tasks, e.g. [{task: hellaswag, limit: 100}]"]
    out, seen = [], set()
    for i, b in enumerate(v):
        at = f"benchmarks.{i}"
        if isinstance(b, str):
            out.append(f"{at}: give the task with a limit, e.g. {{task: {b}, limit: 100}}")
            continue
        if not isinstance(b, dict):
            out.append(f"{at}: must be a mapping like {{task: hellaswag, limit: 100}}")
            continue
        extra = sorted(set(b) - set(BenchmarkSpec.model_fields))
        if extra:
            out.append(f"{at}: unknown field(s) {', '.join(extra)}; known: {', '.join(BenchmarkSpec.model_fields)}")
        task = b.get("task")
        if not isinstance(task, str) or not TASK_NAME.match(task):
            out.append(f"{at}.task: needs an lm-eval task name (letters, digits, '_', '.', '-'), got {task!r}")
        elif task in seen:
            out.append(f"{at}.task: '{task}' is listed twice")
        else:
            seen.add(task)
        limit = b.get("limit")
        if "limit" not in b:
            out.append(f"{at}.limit: missing; say how many examples of the task to evaluate (e.g. 100): the cost is "
                       "examples x candidates")
        elif isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_BENCHMARK_LIMIT:
            out.append(f"{at}.limit: must be a whole number of examples from 1 to {MAX_BENCHMARK_LIMIT}, got {limit!r}")
        shots = b.get("num_fewshot", 0)
        if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= 25:
            out.append(f"{at}.num_fewshot: must be a whole number from 0 to 25, got {shots!r}")
        inc = b.get("include_path")
        if inc is not None and (not isinstance(inc, str) or not inc.strip()):
            out.append(f"{at}.include_path: must be a folder or YAML file path, got {inc!r}")
    return out


class EvaluationSpec(_Frozen):
    """How candidates are measured (engine.evaluate.evaluator); off unless enabled."""

    enabled: bool = False
    metrics: list[MetricSpec] = Field(default_factory=list)
    max_eval_samples: int = Field(50, gt=0)
    prompt_length: int = Field(128, gt=0)
    generation_length: int = Field(64, gt=0)
    repeats: int = Field(3, gt=0)
    evaluate_input_model: bool = True
    # the models between input and output (a PyTorch fine-tune, a merged model): measured after the workflow
    evaluate_intermediate_models: bool = True
    benchmarks: list[BenchmarkSpec] = Field(
        default_factory=list, description="lm-eval tasks measured on every candidate, each with a limit: "
        "[{task: hellaswag, limit: 200}, {task: travel_mc, limit: 100, include_path: runs/benchmarks}]")

    @model_validator(mode="before")
    @classmethod
    def _benchmarks_ok(cls, data: Any) -> Any:
        # checked before pydantic sees the entries, so each problem is said in Grove's words with its entry and field
        if isinstance(data, dict) and "benchmarks" in data:
            problems = _benchmark_problems(data["benchmarks"])
            if problems:
                raise _grove_error("; ".join(problems))
            if data["benchmarks"] is None:
                data = {**data, "benchmarks": []}
        return data

    @model_validator(mode="after")
    def _benchmark_metrics_ok(self) -> EvaluationSpec:
        from engine.spec.metrics import benchmark_task

        tasks = [b.task for b in self.benchmarks]
        for i, m in enumerate(self.metrics):
            t = benchmark_task(m.name)
            if t is not None and t not in tasks:
                raise _grove_error(f"metrics.{i}.name: '{m.name}' measures the task '{t}', which is not in "
                                 f"evaluation.benchmarks ({', '.join(tasks) or 'none'})")
        return self

    @field_validator("metrics")
    @classmethod
    def _metrics_ok(cls, v: list[MetricSpec]) -> list[MetricSpec]:
        from engine.spec.metrics import METRICS

        errors = []
        for i, m in enumerate(v):
            if m.name not in METRICS:
                errors.append(f"metrics.{i}.name: unknown metric '{m.name}'; known: {', '.join(METRICS)}, or "
                              "acc:<task> for a task of evaluation.benchmarks")
                continue
            if m.goal is not None and m.goal.type.startswith("percent"):
                lo, hi = PERCENT_RANGES[(m.goal.type, METRICS[m.name]["higher_is_better"])]
                if not lo < m.goal.value < hi:
                    errors.append(f"metrics.{i}.goal.value: {m.goal.value} is out of range for {m.goal.type} on "
                                  f"{m.name} (must be between {lo} and {hi}, exclusive)")
        prios = [m.priority for m in v]
        if len(set(prios)) != len(prios):
            errors.append("metrics: each metric needs its own priority (1 ranks first)")
        if errors:
            raise ValueError("; ".join(errors))
        return v


class SearchSpec(_Frozen):
    sampler: Literal["sequential", "random", "tpe"] = "sequential"
    execution_order: Literal["joint", "pass-by-pass"] = "joint"
    max_samples: int | None = Field(None, gt=0)
    max_time_s: int | None = Field(None, gt=0)
    stop_when_goals_met: bool = False
    seed: int = 0


class ResourcesSpec(_Frozen):
    gpus: int = Field(0, ge=0, le=64, description="GPUs the run needs; 0 runs on the CPU.")
    checkpoint_steps: int | None = Field(
        None, gt=0, description="Save a training checkpoint every N steps, so a run whose runner died resumes from it; "
        "empty: every fifth of max_steps, at most 200 (a 100-step run loses at most 20 % of its steps).")


class RunSpec(_Frozen):
    version: Literal[1] = SPEC_VERSION
    name: str = Field("run", min_length=1, max_length=120)
    model: ModelSpec
    dataset: DatasetSpec | None = None
    passes: list[PassSpec] = Field(
        default_factory=list,
        description="Olive passes in order; none: a baseline run that measures the input model as it is "
        "(evaluation must be enabled).",
    )
    target: TargetSpec = Field(default_factory=TargetSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    search: SearchSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    allow_user_code: bool = Field(
        False,
        description="Let pass parameters name Python code Olive runs (user_script, script_dir, functions by name). "
        "Off unless asked; like model.trust_remote_code, only for code you trust.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        if not self.passes and not self.evaluation.enabled:
            raise ValueError(f"{NO_PASSES}the workflow has no passes: add passes, or enable evaluation to measure the "
                             "input model as it is (a baseline run)")
        if not self.passes and not self.evaluation.evaluate_input_model:
            raise ValueError(f"{NO_PASSES}a run with no passes measures the input model: keep "
                             "evaluation.evaluate_input_model on")
        keys = [p.key for p in self.passes]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"pass names must be unique; repeated: {dup} (set 'name' on each)")
        if self.target.device == "gpu" and self.resources.gpus == 0:
            raise ValueError("target.device is 'gpu' but resources.gpus is 0")
        if self.target.device == "cpu" and self.resources.gpus > 0:
            raise ValueError("resources.gpus > 0 but target.device is 'cpu'")
        if any(p.search for p in self.passes) and self.search is None:
            raise ValueError("a pass has searchable parameters: add a 'search' section")
        if self.search is not None and not self.evaluation.enabled:
            raise ValueError(
                "a search compares candidates, so it needs an evaluator: add 'evaluation: {enabled: true, metrics: "
                "[{name: perplexity}]}' (and a dataset), or remove the 'search' section and searchable values"
            )
        if self.evaluation.enabled and self.dataset is None:
            if not self.evaluation.benchmarks:
                raise ValueError(_at("dataset", "evaluation needs a dataset (its held-out split is what candidates are "
                                     "measured on) or benchmark tasks (evaluation.benchmarks, which bring their own data)"))
            # benchmarks only: the held-out metrics are skipped, so none of them can rank or be a goal
            from engine.spec.metrics import QUALITY

            for i, m in enumerate(self.evaluation.metrics):
                if m.name in QUALITY:
                    raise ValueError(_at(f"evaluation.metrics.{i}.name", f"'{m.name}' is measured on a dataset's "
                                         "held-out split and this run has no dataset (it measures benchmark tasks "
                                         "only): rank by acc:<task>, speed or size, or add a dataset"))
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(x) for x in err.get("loc", ()))


_PREFIXES = (("Value error, ", ""), ("Assertion failed, ", ""), ("Input should be ", "must be "),
             ("List should have ", "needs "), ("String should have ", "needs "), ("Dictionary should have ", "needs "))


_TYPE_WORDS = {
    "bool_parsing": "true or false", "bool_type": "true or false", "int_parsing": "a whole number",
    "int_type": "a whole number", "int_from_float": "a whole number", "float_parsing": "a number",
    "float_type": "a number", "string_type": "text", "dict_type": "a mapping", "list_type": "a list",
    "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def grove_words(err: dict[str, Any]) -> tuple[str, str]:
    """``(field path, message)`` for one pydantic error, in Grove's words: never "Input should be ...",
    "Value error, ..." or "List should have at least 1 item after validation"."""
    where, kind, ctx = _loc(err), err.get("type", ""), err.get("ctx") or {}
    given = err.get("input")
    if kind == "missing":
        return where, "is required"
    if kind == "extra_forbidden":
        return where, f"'{where.rsplit('.', 1)[-1]}' is not a setting here (check its spelling)"
    if kind == "literal_error":
        if where.endswith("execution_provider"):
            from engine.spec.passes import GROVE_TARGETS_TEXT

            return where, f"{given!r} is not a target this Grove runs; it runs {GROVE_TARGETS_TEXT}"
        return where, f"{given!r} is not one of {ctx.get('expected', '')}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return where, "needs at least one entry"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return where, "must not be empty"
    if kind in _TYPE_WORDS:
        return where, f"must be {_TYPE_WORDS[kind]}, not {given!r}"
    msg = str(err.get("msg", ""))
    for old, new in _PREFIXES:
        if msg.startswith(old):
            msg = new + msg[len(old):]
    msg = re.sub(r" after validation, not \d+$", "", msg)
    if not where and msg.startswith(NO_PASSES):
        return "passes", msg[len(NO_PASSES):]
    if not where and msg.startswith("\u0000"):  # _at(field, message)
        field, _, msg = msg[1:].partition("\u0000")
        return field, msg
    return where, msg


def yaml_error_location(e: yaml.YAMLError) -> tuple[str, str]:
    """``("line L, column C", problem)`` for a YAML error. An unclosed quote is reported where the quote opens
    (YAML's context mark), not at the end of the file where the scanner gave up."""
    problem, context = getattr(e, "problem", None), getattr(e, "context", None) or ""
    mark = getattr(e, "problem_mark", None)
    ctx = getattr(e, "context_mark", None)
    if ctx is not None and "quoted scalar" in context:
        mark = ctx
        problem = f"a quoted string opened here is never closed ({problem})"
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return where, str(problem or e)


def parse_spec(data: dict[str, Any] | str, *, source: str = "") -> RunSpec:
    """Validate a dict (or JSON/YAML text) into a RunSpec; raise SpecError naming each bad field."""
    if isinstance(data, str):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as e:
            where, what = yaml_error_location(e)
            raise SpecError([(where, f"not valid YAML/JSON: {what}")], source=source) from None
    if not isinstance(data, dict):
        raise SpecError([("", "a spec is a mapping with model, dataset, passes, ...")], source=source)
    if data.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise SpecError([("version", f"unsupported spec version {data.get('version')!r}; this Grove reads {SPEC_VERSION}")], source=source)
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError([grove_words(err) for err in e.errors()], source=source) from None


def load_spec(path: str | Path) -> RunSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError([("", f"cannot read spec file: {e.strerror}")], source=str(p)) from e
    return parse_spec(text, source=str(p))
