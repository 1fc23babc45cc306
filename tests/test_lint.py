"""The linter and the suite's own rules are part of the test command (`./grove test`).

- `ruff check` on the whole repository with the rules chosen in pyproject.toml ([tool.ruff.lint]), through the
  venv's ruff (pinned in requirements.txt): a finding fails the suite.
- Every Streamlit AppTest is made with an explicit `default_timeout` (AppTest's own, 3 s, failed CI on a busy
  2-core machine), and no script run is given less than MIN_APPTEST_TIMEOUT seconds.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIN_APPTEST_TIMEOUT = 30  # seconds: a page run on a loaded 2-core machine takes several (3 s failed CI)


def test_ruff_finds_nothing_in_the_repository():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert out.returncode == 0, (
        f"ruff check found problems (fix them, many with `ruff check --fix`; rules in pyproject.toml):\n"
        f"{out.stdout[-6000:]}{out.stderr[-2000:]}"
    )


def _number(node: ast.expr) -> float | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, int | float) else None


def _apptest_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "AppTest.from_" in node.value:
            # a script run in a subprocess (test_pages_never_import_olive_torch_or_transformers): read it too
            try:
                inner = ast.parse(node.value)
            except SyntaxError:
                inner = None
            if inner is not None:
                out += [f"{rel}:{node.lineno} (script in a string): {p}" for p in _calls(inner)]
    out += [f"{rel}:{p}" for p in _calls(tree)]
    return out


def _calls(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        name = node.func.attr
        if name in ("from_file", "from_function", "from_string") and "AppTest" in ast.unparse(node.func.value):
            if "default_timeout" not in kw:
                out.append(f"{node.lineno}: AppTest.{name}(...) without default_timeout= (AppTest's default is 3 s)")
            elif (n := _number(kw["default_timeout"])) is not None and n < MIN_APPTEST_TIMEOUT:
                out.append(f"{node.lineno}: AppTest.{name}(default_timeout={n}) is under {MIN_APPTEST_TIMEOUT} s")
        elif name == "run" and "timeout" in kw and (n := _number(kw["timeout"])) is not None:
            if n < MIN_APPTEST_TIMEOUT:
                out.append(f"{node.lineno}: .run(timeout={n}) is under {MIN_APPTEST_TIMEOUT} s")
    return out


def test_every_apptest_has_a_timeout_that_holds_on_a_busy_machine():
    me = Path(__file__).resolve()
    files = [p for p in sorted((REPO / "tests").rglob("*.py")) if p.resolve() != me and "AppTest" in p.read_text()]
    assert files, "no AppTest found under tests/: this check looks in the wrong place"
    problems = [p for f in files for p in _apptest_problems(f)]
    assert not problems, "\n".join(problems)


def test_the_apptest_check_catches_a_default_timeout(tmp_path):
    """The check above can fail: a test file that relies on AppTest's 3 s default is reported."""
    bad = tmp_path / "test_probe.py"
    bad.write_text(
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file('app/main.py')\n"
        "at.run(timeout=3)\n"
        "ok = AppTest.from_function(print, default_timeout=120)\n"
    )
    problems = _apptest_problems(bad)
    assert len(problems) == 2 and "without default_timeout" in problems[0] and "timeout=3" in problems[1], problems
