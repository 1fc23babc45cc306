"""A target's environment: create it (a venv with its pinned packages, with progress), check it (a real graph on its
execution provider, in its own interpreter), say what it holds, and give the interpreter a run for it uses.

``$GROVE_HOME/targets/<name>/`` holds the venv (``venv/``), ``target.json`` (written last, once the packages are
installed and the check passed: what was installed from which requirements, the check's result, install time and
size) and ``install.log`` (pip's output). A target is ready when ``target.json`` exists, its check passed and it was
made from the requirements file as it is now; a changed requirements file makes ``grove target add`` install again.
Two ``add`` calls for the same target wait for each other (a file lock), and a failed install leaves no
``target.json``: the target stays "not created" and the log says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import GroveError
from engine.targets import DEFAULT, Target, env_dir, get

Progress = Callable[[str, float | None], None]  # (message, fraction done or None)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==(\S+)")


class TargetError(GroveError):
    """A target cannot be created, checked or used; the message says what is missing."""


SITECOMPAT = Path(__file__).resolve().parent / "sitecompat.py"


def requirements_hash(t: Target) -> str:
    """What the environment is made from: the pins (not the comments) and the start-up fixes (sitecompat.py)."""
    if t.requirements_path() is None:
        return ""
    text = "\n".join(f"{k}=={v}" for k, v in pins(t))
    return hashlib.sha256(text.encode() + SITECOMPAT.read_bytes()).hexdigest()[:16]


def install_sitecompat(name: str) -> Path:
    """Copy engine/targets/sitecompat.py into the venv's site-packages with a .pth line that imports it at start-up."""
    out = subprocess.run([str(venv_python(name)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    site = Path(out)
    (site / "grove_target_compat.py").write_text(SITECOMPAT.read_text())
    (site / "grove_target_compat.pth").write_text("import grove_target_compat\n")
    return site


def pins(t: Target) -> list[tuple[str, str]]:
    """(package, version) of every pinned line of the target's requirements file."""
    p = t.requirements_path()
    if p is None:
        return []
    out = []
    for line in p.read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def venv_python(name: str) -> Path:
    return env_dir(name) / "venv" / "bin" / "python"


def record(name: str) -> dict[str, Any] | None:
    """``target.json`` of a created target, or None."""
    try:
        return json.loads((env_dir(name) / "target.json").read_text())
    except (OSError, ValueError):
        return None


def status(name: str) -> dict[str, Any]:
    """What the target is and holds: ``state`` is "ready", "stale" (made from an older requirements file), "not
    created", "unavailable" (cannot be installed here: ``missing``) or "default"."""
    t = get(name)
    out: dict[str, Any] = {"name": t.name, "title": t.title, "providers": list(t.providers), "device": t.device}
    if t.default:
        return {**out, "state": "default", "python": sys.executable}
    if not t.installable:
        return {**out, "state": "unavailable", "missing": t.missing, "needs": t.needs}
    rec = record(name)
    out["path"] = str(env_dir(name))
    out["pins"] = len(pins(t))
    if rec is None or not venv_python(name).exists():
        return {**out, "state": "not created"}
    state = "ready" if rec.get("requirements_hash") == requirements_hash(t) and (rec.get("check") or {}).get("ok") else "stale"
    return {**out, **rec, "state": state, "python": str(venv_python(name))}


def python_for(name: str) -> str:
    """The interpreter a run for target ``name`` uses; TargetError says what is missing when it is not ready."""
    t = get(name)
    if t.default:
        return sys.executable
    st = status(name)
    if st["state"] == "ready":
        return st["python"]
    raise TargetError(not_ready_message(t, st))


def python_for_run(run: dict[str, Any]) -> str:
    """The interpreter of a registry run's target environment (from its spec's ``target.execution_provider``);
    TargetError when that environment is not ready."""
    from engine.targets import for_provider

    try:
        ep = (json.loads(run.get("spec") or "{}").get("target") or {}).get("execution_provider")
    except (TypeError, ValueError, AttributeError):
        ep = None
    return python_for(for_provider(ep).name)


def not_ready_message(t: Target, st: dict[str, Any]) -> str:
    if st["state"] == "unavailable":
        return (f"target {t.name} ({', '.join(t.providers)}) cannot run on this machine: {t.missing}. It would need "
                f"{t.needs}.")
    if st["state"] == "stale":
        return (f"target {t.name}'s environment was made from an older {t.requirements}: run `grove target add "
                f"{t.name}` (or Create on the Workflow page) to bring it up to date")
    return (f"target {t.name} ({', '.join(t.providers)}) has no environment yet: run `grove target add {t.name}` "
            f"(or Create on the Workflow page; it installs {len(pins(t))} pinned packages into {env_dir(t.name)})")


def run_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Grove code in a target's interpreter: the repository first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    pp = [str(paths.REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(paths.REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(pp)
    env.pop("VIRTUAL_ENV", None)
    return env


def _base_python() -> str:
    """The interpreter the venv is made from: the one under Grove's own venv (same version as Grove's)."""
    return os.path.join(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")


def _size(p: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(p):
        for f in files:
            fp = os.path.join(dirpath, f)
            if not os.path.islink(fp):
                try:
                    total += os.path.getsize(fp)
                except OSError:
                    pass
    return total


def add(name: str, progress: Progress | None = None) -> dict[str, Any]:
    """Create (or bring up to date) target ``name``'s environment: a venv, its pinned packages, the check. Returns
    its status; TargetError when it cannot be installed here or a step fails (the log's end in the message)."""
    from filelock import FileLock

    t = get(name)
    said = progress or (lambda msg, frac: None)

    def say(msg: str, frac: float | None) -> None:
        said(msg, frac)
        _write_progress(name, {"message": msg, "fraction": frac, "pid": os.getpid(), "done": frac == 1.0})

    if t.default:
        say("the default environment is Grove's own (.venv): nothing to create", 1.0)
        return status(name)
    if not t.installable:
        raise TargetError(not_ready_message(t, {"state": "unavailable"}))
    d = env_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d / ".lock")):
        if status(name)["state"] == "ready":
            say(f"target {name} is ready (made from {t.requirements} as it is)", 1.0)
            return status(name)
        (d / "target.json").unlink(missing_ok=True)
        t0 = time.time()
        try:
            return _install(name, t, d, say, t0)
        except Exception as e:
            _write_progress(name, {"message": str(e).splitlines()[0][:500], "fraction": None, "pid": os.getpid(),
                                   "done": True, "error": True})
            raise


def _install(name: str, t: Target, d: Path, say: Progress, t0: float) -> dict[str, Any]:
    """The venv, its pinned packages, the start-up fixes, the check, then target.json (written last)."""
    venv = d / "venv"
    if not venv_python(name).exists():
        say(f"creating the environment {venv}", 0.0)
        if venv.exists():
            shutil.rmtree(venv)
        _run([_base_python(), "-m", "venv", str(venv)], d / "install.log", "creating the venv")
    want = pins(t)
    n = len(want)
    say(f"installing {n} pinned packages from engine/targets/{t.requirements} (first time: several minutes)", 0.02)
    req = t.requirements_path()
    assert req is not None
    # every package is pinned, dependencies included: --no-deps installs exactly the list
    cmd = [str(venv_python(name)), "-m", "pip", "install", "--no-deps", "--progress-bar", "off", "-r", str(req)]
    log = d / "install.log"
    k = 0
    with open(log, "a") as lf:
        lf.write(f"\n$ {' '.join(cmd)}\n")
        lf.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env())
        assert proc.stdout is not None
        for line in proc.stdout:
            lf.write(line)
            if line.startswith(("Collecting ", "Processing ", "Requirement already satisfied")):
                k = min(n, k + 1)
                what = line.split()[1] if not line.startswith("Requirement") else line.split()[3]
                say(f"[{k}/{n}] {Path(what).name}", 0.02 + 0.78 * k / max(n, 1))
            elif line.startswith("Installing collected packages"):
                say("installing the downloaded packages (the longest step, no progress from pip)", 0.8)
        rc = proc.wait()
    if rc != 0:
        raise TargetError(f"installing target {name}'s packages failed (pip exit {rc}); the end of {log}:\n"
                          + _tail(log))
    install_sitecompat(name)  # Grove's start-up fixes for this environment (sitecompat.py says which)
    say("checking: a graph on " + t.providers[0], 0.92)
    chk = check(name)
    if not chk.get("ok"):
        raise TargetError(f"target {name}'s packages are installed but the check failed: {chk.get('error')}")
    rec = {
        "requirements": t.requirements,
        "requirements_hash": requirements_hash(t),
        "packages": installed(name),
        "check": chk,
        "install_s": round(time.time() - t0, 1),
        "size_mb": round(_size(venv) / 2**20, 1),
        "created_at": time.time(),
    }
    tmp = d / "target.json.tmp"
    tmp.write_text(json.dumps(rec, indent=2))
    tmp.replace(d / "target.json")
    say(f"target {name} is ready: {rec['size_mb']:.0f} MB, {rec['install_s']:.0f} s; {chk['detail']}", 1.0)
    return status(name)


def _write_progress(name: str, data: dict[str, Any]) -> None:
    p = env_dir(name) / "progress.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({**data, "at": time.time()}))
    tmp.replace(p)


def progress_of(name: str) -> dict[str, Any] | None:
    """The last ``add``'s progress: {"message", "fraction", "done", "error"?, "running"} (running: its process is
    alive and not done), or None when no add was started."""
    try:
        data = json.loads((env_dir(name) / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    alive = False
    try:
        os.kill(int(data.get("pid") or 0), 0)
        alive = bool(data.get("pid"))
    except (OSError, ValueError):
        pass
    return {**data, "running": alive and not data.get("done")}


def start_add(name: str) -> int:
    """Start ``grove target add NAME`` in the background (its own process group; output in ``add.log``); the UI
    follows it with ``progress_of``. Returns the process id. TargetError for a target that cannot be installed."""
    t = get(name)
    if not t.installable or t.default:
        raise TargetError(not_ready_message(t, {"state": "unavailable"}) if not t.installable else
                          "the default environment is Grove's own: nothing to create")
    pr = progress_of(name)
    if pr and pr["running"]:
        return int(pr["pid"])
    d = env_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    _write_progress(name, {"message": f"starting `grove target add {name}`", "fraction": 0.0, "pid": 0, "done": False})
    with open(d / "add.log", "ab") as log:
        p = subprocess.Popen([sys.executable, "-m", "engine.cli", "target", "add", name], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(paths.REPO_ROOT),
                             env=run_env({**os.environ, "GROVE_HOME": str(paths.home())}))
    _write_progress(name, {"message": f"starting `grove target add {name}`", "fraction": 0.0, "pid": p.pid, "done": False})
    return p.pid


def installed(name: str) -> dict[str, str]:
    """{package: version} as pip lists them in the target's environment."""
    p = subprocess.run([str(venv_python(name)), "-m", "pip", "list", "--format", "json"], capture_output=True,
                       text=True, timeout=120, env=run_env())
    try:
        return {x["name"]: x["version"] for x in json.loads(p.stdout)}
    except ValueError:
        return {}


def check(name: str, timeout: float = 300) -> dict[str, Any]:
    """Run engine.targets.probe in the target's interpreter: a real graph on its execution provider, then its runtime
    and Grove's runner and evaluator imported (two processes: engine/targets/probe.py says why).
    {"ok", "detail" | "error", ...}."""
    t = get(name)
    py = sys.executable if t.default else str(venv_python(name))
    if not Path(py).exists():
        return {"ok": False, "error": f"no interpreter at {py}"}
    out: dict[str, Any] = {}
    for part in ("provider", "runtime"):
        try:
            p = subprocess.run([py, "-m", "engine.targets.probe", part, t.providers[0]], capture_output=True,
                               text=True, timeout=timeout, env=run_env(), cwd=str(paths.REPO_ROOT))
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"the check ({part}) took more than {timeout:.0f} s"}
        last = (p.stdout.strip().splitlines() or [""])[-1]
        try:
            res = json.loads(last)
        except ValueError:
            res = {"ok": False, "error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
        if p.returncode != 0 or not res.get("ok"):
            return {**out, **res, "ok": False}
        out.update(res)
    fallback = "" if t.providers[0] == "CPUExecutionProvider" else "no CPU fallback, "
    out["detail"] = (f"a MatMul+Add+Relu graph ran on {t.providers[0]} (onnxruntime {out.get('onnxruntime')}, "
                     f"{fallback}{out.get('ms')} ms) and matched numpy; {out.get('runtime')}; Grove's runner and "
                     "evaluator import")
    return out


def _run(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "a") as lf:
        lf.write(f"\n$ {' '.join(cmd)}\n")
        lf.flush()
        rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise TargetError(f"{what} failed (exit {rc}); the end of {log}:\n" + _tail(log))


def _tail(log: Path, n: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def listing() -> list[dict[str, Any]]:
    """Every known target with its state (the default first)."""
    from engine.targets import TARGETS

    return [status(n) for n in [DEFAULT, *[k for k in TARGETS if k != DEFAULT]]]
