"""A new user's first session, in a real browser: Debian's chromium driven by Playwright against Grove started
exactly as the README says (``./grove up --port N``), with a GROVE_HOME that already has the demo built.

Open every page, pick the demo model and the travel sample, preview the template, build the lab recipe with
evaluation on (a few held-out examples), launch, watch the run finish, open its candidates. Then, on that run's
measured candidates: Compare (click a chart point, the candidate opens), Chat (streamed answers with the adapter on
and off), and the HTML report written by ``grove report`` opened from disk with the network blocked. No page may show
an exception. A screenshot of each page is saved to tests/e2e/screenshots/ on every run (git-ignored).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_S = 420  # the demo recipe takes ~25 s alone on 2 cores; allow for a busy machine

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # includes building the demo when no earlier test did


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"./grove up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Grove did not answer {url} within {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def grove(demo: dict, grove_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``./grove up`` on a free port, GROVE_HOME = the session home where the demo is built."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    port = _free_port()
    log = tmp_path_factory.mktemp("grove-up") / "grove-up.log"
    env = dict(os.environ, GROVE_HOME=str(grove_home), GROVE_PORT=str(port))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["./grove", "up", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_health(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a `grove up` started in its own session: the group (grove up, its worker and streamlit), SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def page(grove: str):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 2200})
        pg.set_default_timeout(60_000)
        pg.goto(grove + "/")
        pg.get_by_role("button", name=re.compile("Launch the demo workflow")).wait_for()
        idle(pg)
        yield pg
        browser.close()


# -- helpers ----------------------------------------------------------------------------------------------------
def idle(pg, timeout: float = 90_000) -> None:
    """Wait until the script run the last action started has finished, and no rerun follows it: between a run that
    ends in ``st.rerun()`` and the next, the app reads "notRunning" for a moment while the page still shows the old
    run's elements below the new run's first ones. Idle means "notRunning" seen twice, 0.5 s apart."""
    time.sleep(0.3)
    done = '[data-testid="stApp"][data-test-script-state="notRunning"]'
    deadline = time.monotonic() + timeout / 1000
    while True:
        pg.wait_for_selector(done, timeout=max(1.0, deadline - time.monotonic()) * 1000)
        time.sleep(0.5)
        if pg.locator(done).count() or time.monotonic() > deadline:
            break
    time.sleep(0.2)


def settle(pg) -> None:
    """Idle, and charts drawn (for screenshots)."""
    idle(pg)
    pg.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                             .every(e => e.querySelector('.main-svg'))""",
        timeout=30_000,
    )
    time.sleep(1.0)


def no_exception(pg, where: str) -> None:
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, f"{where} shows an exception:\n" + "\n\n".join(e.inner_text()[:2000] for e in exc.all())


def shot(pg, name: str) -> None:
    no_exception(pg, name)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# The page's own heading where it differs from its name in the navigation (the first Compare attempt waited 60 s for
# a heading ending in "Compare": the page is titled "Compare candidates").
HEADINGS = {"Home": "Grove", "Compare": "Compare candidates"}


def goto(pg, title: str) -> None:
    pg.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    idle(pg)
    heading = HEADINGS.get(title, title)
    pg.get_by_role("heading", name=re.compile(rf"{re.escape(heading)}$")).first.wait_for()
    no_exception(pg, title)


def number(pg, label: str, value: int) -> None:
    box = pg.locator('[data-testid="stNumberInput"]', has_text=label).first.locator("input")
    box.fill(str(value))
    box.press("Enter")
    idle(pg)


def choose(pg, label: str, option: str) -> None:
    pg.locator('[data-testid="stSelectbox"]', has_text=label).first.click()
    pg.get_by_role("option").filter(has_text=option).first.click()
    idle(pg)


def main_text(pg) -> str:
    return pg.locator('[data-testid="stMain"]').inner_text()


def grids(pg) -> str:
    """Text of the data grids (drawn on a canvas; their accessible table carries the cells)."""
    return "\n".join(d.text_content() or "" for d in pg.locator('[data-testid="stDataFrame"]').all())


# -- the session ------------------------------------------------------------------------------------------------
def test_a_new_user_runs_the_lab_recipe_on_the_demo(page, grove_home: Path):
    pg = page
    # Home
    assert "Grove" in main_text(pg) and "Launch the demo workflow" in main_text(pg)
    shot(pg, "1-home")

    # Model & data: the demo model, the travel sample, the Phi-3 template preview
    goto(pg, "Model & data")
    choose(pg, "Model folder", "demo model")
    assert "Phi3ForCausalLM" in main_text(pg)
    choose(pg, "Dataset file", str(grove_home / "demo" / "travel_sample.jsonl"))
    preview = pg.locator('[data-testid="stCode"]').first
    preview.wait_for()
    text = preview.inner_text()
    assert text.startswith("<|user|>") and "<|assistant|>" in text, text
    assert "Train rows" in main_text(pg)
    settle(pg)
    shot(pg, "2-model_data")

    # Workflow: the lab recipe, a clean pre-flight check, launch
    goto(pg, "Workflow")
    assert "travel_sample.jsonl" in main_text(pg)
    pg.get_by_role("button", name="Apply recipe").click()
    idle(pg)
    pg.get_by_text("3. ExtractAdapters").first.wait_for()
    body = main_text(pg)
    assert "1. LoRA" in body and "2. ModelBuilder" in body and "3. ExtractAdapters" in body
    # evaluation on, small: Compare and Chat below use this run's measured candidates
    pg.get_by_text("Evaluate candidates", exact=True).first.click()
    idle(pg)
    for label, value in (("Eval samples", 6), ("Prompt length", 48), ("Generation length", 12), ("Repeats", 1)):
        number(pg, label, value)
    body = main_text(pg)
    assert re.search(r"ready to launch", body, re.I), body[-2000:]
    settle(pg)
    shot(pg, "3-workflow")
    pg.get_by_role("button", name=re.compile(r"Launch$")).click()
    idle(pg)

    # Runs: the new run opens and is followed live until it finishes
    pg.get_by_role("heading", name="Runs", exact=True).first.wait_for()
    no_exception(pg, "Runs")
    queued = re.search(r"Queued (r\d{8}-\d{6}-[0-9a-f]{4,8})", main_text(pg))
    assert queued, main_text(pg)[:1500]
    run_id = queued.group(1)
    shot(pg, "4-runs-live")
    t0 = time.monotonic()
    pg.get_by_role("heading", name="Candidates", exact=True).wait_for(timeout=RUN_TIMEOUT_S * 1000)
    idle(pg)
    no_exception(pg, "Runs (finished)")

    from engine.runs.registry import Registry

    run = Registry().get_run(run_id)
    assert run["status"] == "succeeded", (run["status"], run["error_type"], run["error_message"])
    assert "Run failed" not in main_text(pg)
    cells = grids(pg)
    assert "✓ succeeded" in cells or "♻" in cells
    assert "extractadapters" in cells  # the stage timeline
    assert "lora → modelbuilder → extractadapters" in cells  # the candidates, the output one starred
    assert "★" in cells
    pg.get_by_text("Parameters of each candidate's last pass").click()
    pg.locator('[data-testid="stJson"]').first.wait_for()
    settle(pg)
    shot(pg, "5-runs-finished")
    print(f"run {run_id} finished {time.monotonic() - t0:.0f}s after launch")

    # every page once more, now with a finished run: no exception anywhere
    for title in ("Home", "Model & data", "Workflow", "Runs"):
        goto(pg, title)
    shot(pg, "6-runs-page")
    goto(pg, "Home")
    shot(pg, "7-home-after")


# -- Compare, the HTML report from disk, Chat: on the run the test above launched (evaluation on) ---------------------
def test_compare_opens_a_candidate_the_report_renders_offline_and_chat_switches_adapters(page, grove_home: Path,
                                                                                         tmp_path: Path):
    from engine.runs.registry import Registry

    runs = Registry().measured_runs()
    assert runs, "no measured run: the lab-recipe test above launches one with evaluation on"
    run_id = runs[0]["id"]

    # Compare: the chart and the table; a click on a point opens that candidate
    pg = page
    goto(pg, "Compare")
    settle(pg)
    cells = grids(pg)  # the columns in view: the grid draws the others as it scrolls
    # the table's columns in view depend on the window's width: decode_tps is on the chart's axis if not in the grid
    assert "lora > modelbuilder > extractadapters" in cells, cells[:500]
    assert "decode_tps" in cells or "decode_tps" in main_text(pg), cells[:500]
    point = pg.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace .points path').first
    point.click(force=True)
    idle(pg)
    pg.get_by_text("Kept samples:").first.wait_for()
    body = main_text(pg)
    assert re.search(r"· lab: LoRA[^\n]* #\d+", body) and "Fingerprint" in body and "Pass parameters" in body, body[-2000:]
    shot(pg, "8-compare-candidate")

    # the report of that run, written by `grove report`, opened from disk with every network request refused
    report = tmp_path / "report.html"
    env = dict(os.environ, GROVE_HOME=str(grove_home))
    subprocess.run([str(REPO / ".venv" / "bin" / "grove"), "report", run_id, "-o", str(report)], cwd=REPO, env=env,
                   check=True, timeout=120)
    assert '<script src="http' not in report.read_text()
    offline = pg.context.browser.new_context()
    rp = offline.new_page()
    asked: list[str] = []
    rp.route(re.compile(r"^https?://"), lambda route: (asked.append(route.request.url), route.abort()))
    rp.goto(report.as_uri())
    rp.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    assert rp.locator(".js-plotly-plot .scatterlayer .points path").count() > 0
    assert not asked, asked
    rp.screenshot(path=str(SHOTS / "9-report.png"), full_page=False)
    offline.close()

    # Chat: the int4 ONNX candidate with its adapter, an answer streamed with its adapter on, then with it off
    goto(pg, "Chat")
    choose(pg, "Candidate", "int4 + adapter")  # candidates are named by their build (engine.views.labels)
    chat = pg.locator('[data-testid="stChatInput"] textarea')
    for adapter in ("adapter", "none"):
        choose(pg, "Adapter", adapter)
        chat.fill("What should I see in Lisbon?")
        chat.press("Enter")
        idle(pg, timeout=240_000)
        no_exception(pg, f"Chat ({adapter})")
        answers = pg.locator('[data-testid="stChatMessage"]').filter(
            has=pg.locator('[data-testid="stChatMessageAvatarAssistant"]'))
        assert answers.count() == 1, f"{answers.count()} answers with adapter {adapter}"
        said = answers.last.inner_text()  # the streamed text, then its timing caption
        assert "first token" in said and f"· {adapter}" in said and said.split("first token")[0].strip(), said
    shot(pg, "10-chat")
