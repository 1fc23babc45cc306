"""Benchmarks and scripts cannot rot unnoticed: a refactor of engine/ that breaks one fails here.

- every ``engine`` name a bench/ or scripts/ file imports (at the top or inside a function, where most benchmarks
  import) exists, and so does every attribute it reads from an imported engine module (``rc.start_node``);
- every bench/ and scripts/ Python file answers ``--help`` in a fresh interpreter (GPU-only benchmarks too: their
  GPU work happens after parsing, so this runs on a CPU machine); every shell script parses (``bash -n``);
- the benchmarks with a quick mode finish it (``bench_pages.py --quick``: a small registry, a few renders).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY_FILES = sorted([*REPO.glob("bench/*.py"), *REPO.glob("scripts/*.py")])
SH_FILES = sorted([*REPO.glob("bench/*.sh"), *REPO.glob("scripts/*.sh")])
MAIN_FILES = [p for p in PY_FILES if "__main__" in p.read_text()]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def engine_names(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, kind, module, name) for every engine import of ``path`` (kind "import" or "from") and every
    ``alias.attr`` read from a name bound by one (kind "attr": checked when that name is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str, str, str | None]] = []
    bound: dict[str, str] = {}  # local name -> the engine module (or module.name) it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "engine" or a.name.startswith("engine."):
                    out.append((node.lineno, "import", a.name, None))
                    if a.asname:
                        bound[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine" or node.module.startswith("engine."):
                for a in node.names:
                    out.append((node.lineno, "from", node.module, a.name))
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            out.append((node.lineno, "attr", bound[node.value.id], node.attr))
    return out


CHECK = """
import importlib, json, sys

def module(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None  # that module itself does not exist
        raise

problems = []
for line, kind, mod, name in json.loads(sys.argv[1]):
    try:
        if kind == "import":
            if module(mod) is None:
                problems.append(f"line {line}: no module {mod}")
        elif kind == "from":
            m = module(mod)
            if m is None:
                problems.append(f"line {line}: no module {mod}")
            elif not hasattr(m, name) and module(f"{mod}.{name}") is None:
                problems.append(f"line {line}: {mod} has no {name}")
        else:  # an attribute read from a bound name: checked when the name is a module
            m = module(mod)  # None: a class or function imported by name, or a name reported above
            if m is not None and not hasattr(m, name):
                problems.append(f"line {line}: {mod} has no {name}")
    except Exception as e:  # an import that fails for another reason is a problem too
        problems.append(f"line {line}: importing {mod}: {type(e).__name__}: {e}")
print(json.dumps(problems))
"""


def _resolve(names: list[tuple[int, str, str, str | None]]) -> list[str]:
    """Checked in a fresh interpreter: importing engine modules (Olive's patches among them) stays out of this one."""
    out = subprocess.run([sys.executable, "-c", CHECK, json.dumps(names)], capture_output=True, text=True, cwd=REPO,
                         env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def name_problems() -> dict[str, list[str]]:
    """Every file's problems, from one interpreter (importing engine's modules once)."""
    names = [(f"{p.relative_to(REPO)}:{line}", kind, mod, name) for p in PY_FILES for line, kind, mod, name in engine_names(p)]
    out: dict[str, list[str]] = {}
    for problem in _resolve(names):  # "line bench/x.py:12: ..."
        where = problem.split()[1].rstrip(":").rsplit(":", 1)[0]
        out.setdefault(where, []).append(problem)
    return out


@pytest.mark.parametrize("path", PY_FILES, ids=_ids(PY_FILES))
def test_every_engine_name_a_benchmark_uses_exists(path, name_problems):
    problems = name_problems.get(str(path.relative_to(REPO)), [])
    assert not problems, f"{path.relative_to(REPO)} uses engine names that do not exist:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", MAIN_FILES, ids=_ids(MAIN_FILES))
def test_every_script_answers_help(path):
    out = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=REPO, env=ENV,
                         timeout=300)
    assert out.returncode == 0, f"{path.relative_to(REPO)} --help exited {out.returncode}:\n{out.stderr[-3000:]}"
    assert "usage" in out.stdout.lower(), out.stdout[-2000:]


@pytest.mark.parametrize("path", SH_FILES, ids=_ids(SH_FILES))
def test_every_shell_script_parses(path):
    out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_name_check_catches_a_name_that_is_gone(tmp_path):
    """The check above can fail: the two imports bench_llamacpp.py once had (engine.data.split_rows,
    engine.evaluate.rouge_l) and a module that is gone (engine.registry) are reported; the current ones are not."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n"
        "    from engine.data import split_rows\n"
        "    from engine.evaluate import rouge_l\n"
        "    from engine.registry import Registry\n"
        "    from engine.evaluate.scores import rouge_l as ok\n"
        "    from engine.runs import ray_cluster as rc\n"
        "    rc.start_node, rc.no_such_function\n"
    )
    problems = _resolve(engine_names(probe))
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "engine.data has no split_rows" in text and "engine.evaluate has no rouge_l" in text
    assert "engine.registry" in text and "no_such_function" in text


def test_bench_pages_quick_mode_finishes(tmp_path):
    out = tmp_path / "pages.json"
    p = subprocess.run([sys.executable, "bench/bench_pages.py", "--quick", "--out", str(out)], capture_output=True,
                       text=True, cwd=REPO, env=dict(ENV, GROVE_HOME=str(tmp_path / "home")), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["runs"] > 0 and res["candidates"] > 0
    assert {k.split()[0] for k in res["results"]} == {"home", "runs", "compare"}
    assert all(r["cold_ms"] > 0 for r in res["results"].values())
