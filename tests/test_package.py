"""The package as users and CI see it: public names, metadata, lint, types."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import unnest

ROOT = Path(__file__).resolve().parent.parent


def test_public_names():
    assert set(unnest.__all__) >= {
        "unwrap",
        "unwrap_async",
        "unwrap_or_wait",
        "register_container",
        "ForgottenFutureError",
        "hand_off",
        "hand_off_async",
        "resolving",
        "resolves_nested",
        "quote",
        "allow_failure",
        "as_resolved",
        "as_resolved_async",
        "Key",
        "__version__",
    }
    assert unnest.unwrap_or_wait is unnest.unwrap
    assert "opaque" not in unnest.__all__  # deprecated: not in `import *`
    assert (ROOT / "unnest" / "py.typed").exists()


def test_errors_survive_pickling():
    error = unnest.ForgottenFutureError("inc-1", "obj[0]")
    again = pickle.loads(pickle.dumps(error))
    assert (again.key, again.path, str(again)) == (error.key, error.path, str(error))


@pytest.mark.parametrize("module", ["distributed", "pydantic", "attr"])
def test_importing_unnest_does_not_import(module):
    code = f"import sys, unnest; print({module!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        # A cold run takes 7 s on an idle machine, and took over 120 s on a
        # loaded 2-core one during a full run of the suite.
        pytest.param(["mypy", "--strict", "unnest"], marks=pytest.mark.timeout(600)),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_lint_and_types(command):
    # Through this interpreter: its environment's bin/ need not be on PATH.
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _unnest_imports(path):
    """The unnest modules that ``path`` imports anywhere (lazy imports too)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("unnest"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unnest"):
            if node.module == "unnest":  # from unnest import _protocol
                found.update(f"unnest.{a.name}" for a in node.names)
            else:
                found.add(node.module)
    return found


def test_imports_go_one_way():
    modules = {
        f"unnest.{p.stem}": p
        for p in (ROOT / "unnest").glob("*.py")
        if p.stem not in ("__init__", "__main__")
    }
    graph = {name: _unnest_imports(path) & set(modules) for name, path in modules.items()}
    # Depth-first search for a cycle; report it as a path.
    state: dict[str, int] = {}

    def visit(name, trail):
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for dep in sorted(graph[name]):
            visit(dep, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        visit(name, [])
    # The lowest layers import nothing else of unnest; _runtime only the door.
    assert graph["unnest._distributed"] == set()
    assert graph["unnest._runtime"] == {"unnest._distributed"}
    assert graph["unnest._exceptions"] == set()
    assert graph["unnest._plugin"] == set()


def test_no_private_name_is_imported_from_another_module():
    # A module's private names are its own: what another module needs is
    # public in the module that has it (private modules are fine to import).
    import ast

    modules = {p.stem for p in (ROOT / "unnest").glob("*.py")}
    found = []
    for path in sorted((ROOT / "unnest").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unnest"):
                for alias in node.names:
                    is_module = node.module == "unnest" and alias.name in modules
                    if alias.name.startswith("_") and not is_module:
                        found.append(f"{path.name}:{node.lineno}: {node.module}.{alias.name}")
    assert found == []
