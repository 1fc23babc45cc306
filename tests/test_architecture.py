"""The layer order of engine/ and the UI's bounds, as import-linter contracts (pyproject.toml [tool.importlinter]),
and no import circles between engine modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")  # import-linter's own command, from this environment
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_import_contracts_are_kept():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7 kept, 0 broken" in r.stdout


def test_a_layer_importing_upwards_breaks_the_contract(tmp_path):
    """The contracts bite: a spec module importing a view is reported with the offending line."""
    for name in ("engine", "app", "pyproject.toml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    schema = tmp_path / "engine" / "spec" / "schema.py"
    schema.write_text(schema.read_text() + "\nfrom engine.views import runs  # noqa: E402\n")
    r = lint_imports(tmp_path)
    assert r.returncode != 0
    assert "engine.spec.schema -> engine.views.runs" in r.stdout


def test_no_import_circles_between_engine_modules():
    graph = grimp.build_graph("engine")
    modules = sorted(graph.modules)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("engine")} for m in modules}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                circles.append(stack[stack.index(n):] + [n] if n in stack else [m, n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in modules:
        if m not in state:
            visit(m, [m])
    # a package's __init__ importing its own submodules is not a circle between modules
    circles = [c for c in circles if not all(x == c[0] or x.startswith(c[0] + ".") for x in c)]
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
