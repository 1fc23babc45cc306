"""A real lab run on the tiny model with evaluation on (issue 20): its progress, ETA and stage count the evaluations,
Olive's and the measurements after the workflow, answer by answer, instead of stopping at 99 % with "ETA 1 s"."""

from __future__ import annotations

import pytest

from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.spec import recipes
from engine.spec.schema import parse_spec
from engine.views import runs as views

from .helpers import make_worker, wait_for

pytestmark = pytest.mark.slow


def test_progress_eta_and_stage_count_the_evaluations(demo):
    d = recipes.lab_recipe(demo["model"], demo["dataset"], name="progress: lab with evaluation", max_steps=4)
    d["evaluation"] = {"enabled": True, "max_eval_samples": 6, "generation_length": 8, "repeats": 1,
                       "metrics": [{"name": "loss", "priority": 1}, {"name": "decode_tps", "priority": 2}]}
    reg = Registry()
    run = service.submit(parse_spec(d), reg=reg)
    w = make_worker()
    w.start()
    seen: list[tuple[str, float, float | None]] = []  # (stage, progress, eta) as the Runs page reads them

    def sample() -> None:
        w.tick()
        r = reg.get_run(run["id"])
        if r["status"] == "running":
            seen.append((r["stage"] or "", float(r["progress"] or 0), views.eta(r)))

    wait_for(lambda: reg.get_run(run["id"])["status"] in ("succeeded", "failed") and not w.active, 900, sample, 0.1)
    done = reg.get_run(run["id"])
    assert done["status"] == "succeeded", done["error_message"]
    measuring = [s for s in seen if s[0].startswith("measuring 3 candidates (")]
    assert measuring, sorted({s[0] for s in seen})
    assert any(" answers" in s[0] for s in measuring), measuring
    first = measuring[0]
    # 3 passes and 2 of Olive's evaluations done, 3 measurements left: about 5/8 of the work, never 99 %
    assert first[1] < 0.8, measuring
    assert first[2] is not None and first[2] > 5, measuring  # not "ETA 1.2 s" with three measurements to go
    progress = [s[1] for s in seen]
    assert progress == sorted(progress)  # it never goes back
    evals = [s for s in views.timeline(reg, done) if s["type"] == views.EVALUATOR]
    assert [s["pass"] for s in evals].count("measure") == 3 and all(s["state"] in ("measured", "reused") for s in evals)
    print(f"stages seen while measuring: {len({s[0] for s in measuring})}, first at {first[1]:.2f} with ETA {first[2]:.1f}s")
