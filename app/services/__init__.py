"""The UI's only door into engine/. Reads are cached with a ttl (keyed by GROVE_HOME, so tests with their own
home never see another's data); writes go through engine.runs.submit and clear the caches.

Nothing here imports Olive, torch, transformers or datasets: the catalog is built in a child process, Hub
previews run in one, and the demo is built by ``python -m engine.cli demo`` in the background (engine.runs.demo).
No algorithms, SQL or processes here either: those live in engine/ (views, registry, evaluate.compare, runs).

One module per job, every public name re-exported here (callers write ``from app import services``,
``services.runs(...)``):
  core      GROVE_HOME, the registry, clearing the caches, the machine and its GPUs, the warm-up, formatting helpers
  tracking  runs: tables, counts, a run's live view and candidates, slots, the Ray cluster; submit/cancel/retry; demo
  sources   models and datasets: pickers, default model, model cards, dataset previews, uploads, rendered texts
  workflow  the draft, recipes, Olive's pass catalog, pre-flight and memory plan, Olive config in and out, metrics,
            the target environments (engine.targets: list them, create one in the background)
  compare   Compare: candidates in columns, Pareto, goals, table, chart, evaluations, lineage, report, leaderboard
  chat      Chat: loadable candidates and labels, the one it opens on, models and adapters, votes and feedback
  access    who uses this session: sign-in state, the person and their role, permission checks, the access log
"""

from app.services.access import (
    PERSON,
    access_log,
    can,
    person,
    sign_in_providers,
    sign_in_state,
    why_not,
)
from app.services.chat import (
    candidate_label,
    chat_adapter,
    chat_adapter_name,
    chat_best,
    chat_candidates,
    chat_device,
    chat_loaded,
    chat_model,
    literal_chunks,
    markdown_literal,
    save_feedback,
    save_vote,
)
from app.services.compare import (
    EXAMPLE_SCORES,
    QUALITY,
    SPEED,
    candidate_evaluations,
    candidate_files,
    candidate_zip,
    comparability,
    compare_candidates,
    compare_figure,
    compare_table,
    compare_unmeasured,
    comparison,
    disagreements,
    goal_context,
    leaderboard,
    lineage,
    measured_runs,
    metric_choices,
    metric_format,
    pareto_front,
    per_example,
    quality_choices,
    report_html,
    side_by_side,
    speed_check,
)
from app.services.core import (
    LIVE_TTL,
    TTL,
    clear,
    estimate_gb,
    fmt_seconds,
    gpus_available,
    home,
    human_size,
    machine,
    registry,
    warm_up,
)
from app.services.sources import (
    CONVERSATION_FORMATS,
    FORMAT_WORDS,
    FREE_PRESET,
    PRESETS,
    TOKENIZER_PRESET,
    UPLOAD_LIMIT_MB,
    allowed_roots,
    chat_template,
    dataset_format,
    dataset_page,
    default_model,
    default_model_label,
    hub_preview,
    inputs,
    is_allowed,
    model_card,
    model_fallback_reason,
    path_bases,
    rendered,
    save_upload,
    split_stats,
)
from app.services.tracking import (
    artifacts_zip,
    cancel,
    candidate_count,
    candidates,
    counts,
    demo_progress,
    demo_state,
    draft_from_run,
    export_config,
    failure_hint,
    launch_demo,
    live,
    output_dir,
    people,
    ray_cluster,
    retry,
    run,
    runs,
    slots,
    submit_draft,
)
from app.services.workflow import (
    DEFAULT_SEARCH,
    RECIPES,
    add_target,
    apply_recipe,
    benchmark_cost,
    catalog,
    catalog_passes,
    draft_olive_config,
    import_olive,
    memory_plan,
    metrics,
    new_draft,
    pass_type,
    preflight_check,
    spec_json,
    targets,
    template_round_trip,
    travel_benchmark,
)
from engine.data.prepare import template_fields
from engine.errors import DataError, GroveError
from engine.runs.registry import ACTIVE, STATUSES
from engine.spec.passes import GPU_ONLY
