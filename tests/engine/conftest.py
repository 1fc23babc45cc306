"""Engine fixtures: one real run of the demo recipe per test session, shared by every test that needs one."""

from __future__ import annotations

import time

import pytest

from engine.runs import submit as service
from engine.spec import recipes

from .helpers import run_to_end

ENGINE_DEMO_STEPS = 61  # not the UI's 60: this run must really run, not reuse another test's identical run


@pytest.fixture(scope="session")
def demo_spec(demo):
    return recipes.demo_spec(max_steps=ENGINE_DEMO_STEPS)


@pytest.fixture(scope="session")
def demo_run(demo_spec) -> dict:
    spec = demo_spec
    run = service.submit(spec)
    t0 = time.perf_counter()
    done = run_to_end(run["id"])
    done["_wall"] = time.perf_counter() - t0
    return done


