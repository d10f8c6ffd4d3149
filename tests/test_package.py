"""The package as users and CI see it: public names, metadata, lint, types, what ships."""

import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
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


# -- What ships: the sdist and the wheel ---------------------------------------

# Folders and files of the checkout that are not part of the source.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".nox", ".hypothesis", ".benchmarks", "*_cache", "__pycache__", "*.egg-info",
    "build", "dist", "_build", "_notebooks", "dask-scratch-space", ".ipynb_checkpoints",
)  # fmt: skip


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist and, built from it, the wheel (``python -m build``, as a release is)."""
    tmp = tmp_path_factory.mktemp("dist")
    # From a copy: a build writes egg-info and build/ into its source tree.
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp / "out"), str(source)],
        check=True,
        capture_output=True,
    )
    (sdist,) = (tmp / "out").glob("*.tar.gz")
    (wheel,) = (tmp / "out").glob("*.whl")
    return source, sdist, wheel


def _sdist_names(sdist):
    with tarfile.open(sdist) as tar:
        # unnest-0.1.0/tests/conftest.py -> tests/conftest.py
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


@pytest.mark.timeout(300)
def test_license_is_in_the_repository_the_wheel_and_the_sdist(dists):
    _source, sdist, wheel = dists
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    assert "LICENSE" in _sdist_names(sdist)
    with zipfile.ZipFile(wheel) as whl:
        licenses = [n for n in whl.namelist() if ".dist-info/" in n and n.endswith("LICENSE")]
        assert len(licenses) == 1
        assert whl.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
        metadata = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        assert "BSD-3-Clause" in whl.read(metadata).decode()


@pytest.mark.timeout(300)
def test_sdist_carries_what_its_tests_need(dists):
    source, sdist, _wheel = dists
    names = _sdist_names(sdist)
    # Everything of these kinds in the source, whatever its name: a new test
    # helper or docs page cannot be left out.
    wanted = {
        str(path.relative_to(source))
        for pattern in [
            "unnest/*.py",
            "unnest/py.typed",
            "tests/*.py",
            "benchmarks/*.py",
            "notebooks/*.ipynb",
            "docs/*.rst",
            "docs/conf.py",
            "docs/_static/*",
            "docs/_inventories/*",
        ]
        for path in source.glob(pattern)
    }
    wanted |= {"LICENSE", "README.rst", "setup.cfg", "setup.py", "pyproject.toml", "noxfile.py"}
    assert {"tests/conftest.py", "tests/helpers.py", "tests/strategies.py"} <= wanted
    assert sorted(wanted - names) == []
    junk = [n for n in names if re.search(r"__pycache__|\.pyc$|docs/_build/|docs/_notebooks/", n)]
    assert junk == []
