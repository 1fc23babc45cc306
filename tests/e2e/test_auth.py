"""A team's Grove in a real browser: a real OpenID Connect provider (``oidc-provider-mock``, real HTTP on a free
port, a real discovery document, RS256-signed ID tokens), Grove started as docs/auth.md says
(``grove up --host 0.0.0.0`` with ``[auth]`` in a secrets.toml and a roles file), and Debian's chromium signing
in as four people with different roles, each in a browser context of their own (their own cookies):

    bob@example.com    member (roles file)      launches the demo runs, cancels one of his own, signs out
    carol@example.com  member (roles file)      cannot cancel bob's run
    vic@example.com    viewer (roles file)      sees runs, cannot launch or cancel, has no Workflow page
    ada@example.com    admin  (the provider's "groups" claim)  cancels bob's run; sees who signed in
    eve@example.com    not listed, the roles file's default is "none": refused

A request without the sign-in cookie sees only the sign-in button. The worker is given no CPU slot
(``GROVE_CPU_SLOTS=0``), so the runs stay queued while the people act on them; the runs' execution is tested
elsewhere. The registry is read at the end: who launched, who cancelled, the sign-ins and the refusals.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_browser import (
    ARGS,
    CHROMIUM,
    REPO,
    SHOTS,
    _free_port,
    _stop_group,
    _wait_health,
    idle,
    no_exception,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # includes building the demo when no earlier test did

PEOPLE = {
    "ada@example.com": {"email": "ada@example.com", "name": "Ada", "groups": ["staff", "grove-admins"]},
    "bob@example.com": {"email": "bob@example.com", "name": "Bob"},
    "carol@example.com": {"email": "carol@example.com", "name": "Carol"},
    "vic@example.com": {"email": "vic@example.com", "name": "Vic"},
    "eve@example.com": {"email": "eve@example.com", "name": "Eve"},
}
ROLES = """\
default = "none"
claim = "groups"
[users]
"bob@example.com" = "member"
"carol@example.com" = "member"
"vic@example.com" = "viewer"
[claim_roles]
"grove-admins" = "admin"
"""


@pytest.fixture(scope="module")
def oidc() -> Iterator[str]:
    """A real OpenID Connect provider on a free local port; the people above are its predefined users."""
    from oidc_provider_mock import User, run_server_in_thread

    users = [User(sub=k, claims=v) for k, v in PEOPLE.items()]
    with run_server_in_thread(port=_free_port(), user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def team_grove(demo: dict, grove_home: Path, oidc: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``./grove up --host 0.0.0.0`` with sign-in configured, a roles file, and a GROVE_HOME of its own that has the
    tiny demo model (copied from the session's) as its default model."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("team")
    home = tmp / "home"
    shutil.copytree(grove_home / "demo", home / "demo")
    (home / "models").mkdir(parents=True)
    (home / "models" / "fallback.txt").write_text("the browser test of sign-in uses the tiny demo model\n")
    port = _free_port()
    secrets_file = tmp / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "http://localhost:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_urlsafe(32)}"\n'
        'client_id = "grove"\n'
        'client_secret = "grove-test-secret"\n'
        f'server_metadata_url = "{oidc}/.well-known/openid-configuration"\n'
    )
    roles = tmp / "roles.toml"
    roles.write_text(ROLES)
    log = tmp / "grove-up.log"
    env = dict(os.environ, GROVE_HOME=str(home), GROVE_SECRETS=str(secrets_file), GROVE_ROLES=str(roles),
               GROVE_CPU_SLOTS="0")
    with open(log, "wb") as out:
        # `grove up` as ./grove runs it (.venv/bin/grove is engine.cli:main), with this interpreter's environment
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "up", "--host", "0.0.0.0", "--port", str(port)],
                                cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_health(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        yield {"url": f"http://localhost:{port}", "home": home, "log": log}
    finally:
        _stop_group(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _sign_in(browser, url: str, who: str):
    """A fresh browser context (no cookies), the sign-in button, the provider's form, and back in Grove."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(url + "/")
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_url(re.compile(r"/oauth2/authorize"))  # the provider's page
    pg.get_by_role("button", name=who, exact=True).click()
    pg.wait_for_url(re.compile(re.escape(url)))
    idle(pg)
    return ctx, pg


def _signed_in(pg, who: str, role: str) -> None:
    pg.locator('[data-testid="stSidebar"]').get_by_text(re.compile(rf"{re.escape(who)} · {role}")).wait_for()
    no_exception(pg, who)


def _nav(pg) -> list[str]:
    """The pages in the navigation, by title (each link's text is its icon's name, then its title)."""
    return [t.strip().splitlines()[-1].strip() for t in pg.locator('[data-testid="stSidebarNav"] a').all_inner_texts()]


def _open_run(pg, url: str, run_id: str) -> None:
    pg.goto(f"{url}/runs?run={run_id}")
    idle(pg)
    pg.get_by_role("heading", name="Runs", exact=True).first.wait_for()
    pg.get_by_text(run_id).filter(visible=True).first.wait_for()  # the grid also holds it, in a hidden cell
    no_exception(pg, f"Runs ({run_id})")


def _button(pg, name: str):
    return pg.locator('[data-testid="stMain"]').get_by_role("button", name=re.compile(rf"{name}$")).first


def test_people_sign_in_and_act_by_role(team_grove: dict, browser):
    url = team_grove["url"]
    from engine.runs.registry import Registry

    reg = Registry(team_grove["home"] / "grove.db")

    # No sign-in cookie: the sign-in button and nothing of Grove
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    t0 = time.monotonic()
    pg.goto(url + "/")
    pg.get_by_role("button", name="Sign in").wait_for()
    idle(pg)
    print(f"the sign-in page drawn {time.monotonic() - t0:.1f}s after the request (cold server)")
    assert _nav(pg) == [] and pg.locator('[data-testid="stSidebar"]').count() == 0
    buttons = [b.strip() for b in pg.locator('[data-testid="stMain"] button').all_inner_texts() if b.strip()]
    assert buttons == ["Sign in"], buttons
    body = pg.locator('[data-testid="stMain"]').inner_text()
    assert "Launch the demo workflow" not in body and "Runs" not in body
    pg.goto(url + "/runs")  # a page's own address shows the same
    pg.get_by_role("button", name="Sign in").wait_for()
    assert _nav(pg) == []
    pg.screenshot(path=str(SHOTS / "auth-1-signed-out.png"), full_page=True)
    ctx.close()

    # bob, a member: launches the demo runs (queued by him), cancels one of his own, signs out
    ctx, pg = _sign_in(browser, url, "bob@example.com")
    _signed_in(pg, "bob@example.com", "member")
    assert "Workflow" in _nav(pg)
    for n in (1, 2):  # twice: two runs of his (the tiny model's demo is one run)
        pg.goto(url + "/")
        idle(pg)
        _button(pg, "Launch the demo workflow").click()
        idle(pg)
        deadline = time.monotonic() + 120
        while len(reg.list_runs()) < n and time.monotonic() < deadline:
            time.sleep(0.5)
    runs = reg.list_runs()
    assert len(runs) == 2 and {r["user"] for r in runs} == {"bob@example.com"}, runs
    mine, other = runs[0]["id"], runs[1]["id"]
    _open_run(pg, url, mine)
    _button(pg, "Cancel").click()
    idle(pg)
    assert reg.get_run(mine)["status"] == "cancelled"
    pg.screenshot(path=str(SHOTS / "auth-2-member.png"), full_page=True)
    pg.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
    pg.wait_for_url(re.compile(r"/oauth2/end_session"))  # the provider's end of session
    pg.get_by_role("button", name="End session").click()
    pg.wait_for_url(re.compile(re.escape(url)))
    pg.get_by_role("button", name="Sign in").wait_for()
    assert _nav(pg) == []
    ctx.close()

    # carol, another member: bob's run cannot be cancelled by her
    ctx, pg = _sign_in(browser, url, "carol@example.com")
    _signed_in(pg, "carol@example.com", "member")
    _open_run(pg, url, other)
    assert _button(pg, "Cancel").is_disabled()
    assert "only their own runs" in pg.locator('[data-testid="stMain"]').inner_text()
    assert reg.get_run(other)["status"] == "queued"
    ctx.close()

    # vic, a viewer: sees the runs, no Workflow or Model & data, no launch, no cancel
    ctx, pg = _sign_in(browser, url, "vic@example.com")
    _signed_in(pg, "vic@example.com", "viewer")
    nav = _nav(pg)
    assert "Runs" in nav and "Compare" in nav and "Chat" in nav and "Workflow" not in nav and "Model & data" not in nav
    assert _button(pg, "Launch the demo workflow").count() == 0 or _button(pg, "Launch the demo workflow").is_disabled()
    _open_run(pg, url, other)
    assert _button(pg, "Cancel").is_disabled() and _button(pg, "Retry").is_disabled()
    pg.screenshot(path=str(SHOTS / "auth-3-viewer.png"), full_page=True)
    ctx.close()

    # eve: signed in at the provider, but the roles file gives her nothing
    ctx, pg = _sign_in(browser, url, "eve@example.com")
    pg.get_by_text(re.compile("has no role in Grove")).wait_for()
    assert _nav(pg) == []
    ctx.close()

    # ada, an admin by the provider's groups claim: cancels bob's run, sees the sign-ins and refusals
    ctx, pg = _sign_in(browser, url, "ada@example.com")
    _signed_in(pg, "ada@example.com", "admin")
    _open_run(pg, url, other)
    _button(pg, "Cancel").click()
    idle(pg)
    assert reg.get_run(other)["status"] == "cancelled"
    pg.goto(url + "/")
    idle(pg)
    pg.get_by_text("Sign-ins and refusals").first.click()
    idle(pg)
    pg.screenshot(path=str(SHOTS / "auth-4-admin.png"), full_page=True)
    ctx.close()

    log = reg.access_log(limit=100)
    signed = {(r["user"], r["role"]) for r in log if r["action"] == "sign-in" and r["allowed"]}
    assert {("bob@example.com", "member"), ("carol@example.com", "member"), ("vic@example.com", "viewer"),
            ("ada@example.com", "admin")} <= signed, log
    assert any(r["user"] == "eve@example.com" and r["action"] == "sign-in" and not r["allowed"] for r in log), log
    cancels = {(r["user"], r["target"]) for r in log if r["action"] == "cancel" and r["allowed"]}
    assert {("bob@example.com", mine), ("ada@example.com", other)} <= cancels, log
