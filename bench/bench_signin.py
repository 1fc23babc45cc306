"""What sign-in costs on the first page render: Grove's UI with and without OpenID Connect sign-in, same machine, same
run, in a real browser (Debian's chromium through Playwright).

    python bench/bench_signin.py [--repeats 10] [--out bench/results/signin.json]

Starts a real OpenID Connect provider (oidc-provider-mock, real HTTP on a free port) and two Grove UIs exactly as
``grove up`` starts the UI (``streamlit run app/main.py`` with ``--secrets.files``), over one GROVE_HOME: one without
sign-in (no secrets file), one with ``[auth]`` configured and a roles file. Each repeat, in alternation, in a fresh
browser context (no cache, no cookies but the ones said):

  off        no sign-in: the request to Home until Home is drawn and the script has finished
  on         signed in before (the identity cookie of one earlier sign-in): the same, Grove's gate included
             (Streamlit reads the signed cookie, Grove reads the roles file, records the sign-in in the registry)
  sign-in    no cookie: the request, the sign-in button, the provider's page (one click on the person), back in
             Grove, Home drawn: what a person waits the first time
  gate       no cookie: the request until the sign-in button is drawn (what an unauthenticated request gets)

Target: ``on`` within 1.25x of ``off`` (sign-in must not slow every first page); the ratio is what is reported.
Prints a table and writes bench/results/signin.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TARGET_RATIO = 1.25
DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(port: int, env: dict[str, str], secrets_file: Path, log: Path) -> subprocess.Popen:
    """The UI as ``grove up`` starts it (engine/cli.py cmd_up), without the worker: nothing runs here."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--secrets.files", str(secrets_file)]
    with open(log, "wb") as out:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return p
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the UI on port {port} did not start:\n{log.read_text()[-2000:]}")


def home_drawn(pg) -> None:
    pg.get_by_role("heading", name="Grove").first.wait_for()
    pg.wait_for_selector(DONE)


def measure(browser, kind: str, off: str, on: str, cookies: list, sign_in) -> float:
    """Milliseconds of one first render of ``kind`` in a fresh browser context."""
    ctx = browser.new_context()
    if kind == "on":
        ctx.add_cookies(cookies)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    t0 = time.perf_counter()
    if kind == "off":
        pg.goto(off + "/")
        home_drawn(pg)
    elif kind == "on":
        pg.goto(on + "/")
        home_drawn(pg)
    elif kind == "gate":
        pg.goto(on + "/")
        pg.get_by_role("button", name="Sign in").wait_for()
        pg.wait_for_selector(DONE)
    else:
        pg.close()
        t0 = time.perf_counter()
        sign_in(ctx)
    ms = (time.perf_counter() - t0) * 1000
    ctx.close()
    return ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "signin.json"))
    args = ap.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    from oidc_provider_mock import User, run_server_in_thread
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="grove-bench-signin-"))
    home = tmp / "home"
    home.mkdir()
    (tmp / "roles.toml").write_text('[users]\n"ada@example.com" = "admin"\n')
    procs: list[subprocess.Popen] = []
    times: dict[str, list[float]] = {"off": [], "on": [], "sign-in": [], "gate": []}
    with run_server_in_thread(port=free_port(), user_claims=[User(sub="ada@example.com",
                                                                  claims={"email": "ada@example.com"})]) as idp:
        p_off, p_on = free_port(), free_port()
        on_secrets = tmp / "secrets.toml"
        on_secrets.write_text(
            f'[auth]\nredirect_uri = "http://localhost:{p_on}/oauth2callback"\n'
            f'cookie_secret = "{secrets.token_urlsafe(32)}"\nclient_id = "grove"\nclient_secret = "bench"\n'
            f'server_metadata_url = "http://localhost:{idp.server_port}/.well-known/openid-configuration"\n')
        base = dict(os.environ, GROVE_HOME=str(home), GROVE_ROLES=str(tmp / "roles.toml"), PYTHONPATH=str(REPO))
        try:
            procs.append(start_ui(p_off, dict(base, GROVE_SECRETS=str(tmp / "none.toml")), tmp / "none.toml",
                                  tmp / "off.log"))
            procs.append(start_ui(p_on, dict(base, GROVE_SECRETS=str(on_secrets)), on_secrets, tmp / "on.log"))
            off, on = f"http://localhost:{p_off}", f"http://localhost:{p_on}"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)

                def sign_in(ctx) -> None:
                    pg = ctx.new_page()
                    pg.goto(on + "/")
                    pg.get_by_role("button", name="Sign in").click()
                    pg.get_by_role("button", name="ada@example.com", exact=True).click()
                    home_drawn(pg)
                    pg.close()

                # one warm-up of each server (its first session imports the pages' modules), and the cookie
                ctx = browser.new_context()
                pg = ctx.new_page()
                pg.goto(off + "/")
                home_drawn(pg)
                sign_in(ctx)
                cookies = ctx.cookies()
                ctx.close()
                for _ in range(args.repeats):
                    for kind in ("off", "on", "gate", "sign-in"):
                        times[kind].append(measure(browser, kind, off, on, cookies, sign_in))
                browser.close()
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["on"] / med["off"]
    print(f"{'first render':12} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}  n={args.repeats}")
    for k, v in times.items():
        p90 = sorted(v)[max(0, int(round(0.9 * len(v))) - 1)]
        print(f"{k:12} {med[k]:10.0f} {p90:8.0f} {min(v):8.0f}")
    print(f"\nsigned in vs no sign-in (first render of Home): {ratio:.2f}x (target <= {TARGET_RATIO}x)"
          f"{'' if ratio <= TARGET_RATIO else '  MISSED'}")
    load = os.getloadavg()
    write_json(args.out, {
        "repeats": args.repeats, "times_ms": times, "median_ms": med, "ratio_on_vs_off": ratio,
        "target_ratio": TARGET_RATIO, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                  "platform": platform.platform(), "loadavg_after": load},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
