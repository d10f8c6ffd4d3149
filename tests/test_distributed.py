"""The one door to distributed's internals: enforced, and every fast path optional.

* Only ``unnest/_distributed.py`` may touch a private name of dask or
  distributed. Checked on the syntax tree of every other module of the
  package, so no alias fools it: an attribute with a leading underscore is
  allowed on ``self``/``cls`` only where the class itself defines it, and
  on a module of unnest; no private name or module is imported from
  outside unnest; ``getattr`` and friends are given no private names.
* With the fast paths switched off (``UNNEST_PUBLIC_ONLY=1``) the core
  suite gives the same results: ``nox -s tests-public`` runs it, and CI
  runs that session.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unnest
from unnest import _distributed

PACKAGE = Path(unnest.__file__).resolve().parent
DOOR = PACKAGE / "_distributed.py"


# The public API of namedtuples: underscored only to stay clear of field names.
NAMEDTUPLE_API = {"_fields", "_make", "_asdict", "_replace", "_field_defaults"}


def _private(name):
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in NAMEDTUPLE_API


def _own_names(cls):
    """What a class defines itself: methods, class attributes, slots, ``self.x = ``."""
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in cls.body:
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and node in cls.body:
                    names.add(target.id)
                    if target.id == "__slots__" and isinstance(node.value, (ast.Tuple, ast.List)):
                        names.update(
                            e.value for e in node.value.elts if isinstance(e, ast.Constant)
                        )
                elif (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in ("self", "cls")
                ):
                    names.add(target.attr)
    return names


def violations(source, filename="<module>"):
    """Every place in ``source`` that touches a private name of another library."""
    tree = ast.parse(source, filename)
    modules = {"unnest"}  # names bound to unnest's own modules
    classes = {}  # class name -> (node, own names), for classes of this module
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            classes[node.name] = (node, _own_names(node))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "unnest":
            modules.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            modules.update(
                (a.asname or a.name.split(".")[0])
                for a in node.names
                if a.name.split(".")[0] == "unnest"
            )
    found = []

    def report(node, what):
        found.append(f"{filename}:{node.lineno}: {what}")

    def allowed_on_self(node, attr):
        # The innermost class around `node` must define `attr` (or a class of
        # this module it derives from).
        for cls, _ in classes.values():
            if cls.lineno <= node.lineno <= cls.end_lineno:
                seen, todo = set(), [cls.name]
                while todo:
                    name = todo.pop()
                    if name in seen or name not in classes:
                        continue
                    seen.add(name)
                    if attr in classes[name][1]:
                        return True
                    todo.extend(b.id for b in classes[name][0].bases if isinstance(b, ast.Name))
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in modules:
                continue
            on_self = isinstance(base, ast.Name) and base.id in ("self", "cls")
            if on_self and allowed_on_self(node, node.attr):
                continue
            report(node, f"private attribute {node.attr!r}")
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if parts[0] == "unnest" or node.level:
                continue
            if any(_private(p) for p in parts):
                report(node, f"import from the private module {node.module!r}")
            for alias in node.names:
                if _private(alias.name):
                    report(node, f"import of the private name {alias.name!r}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "unnest" and any(_private(p) for p in parts):
                    report(node, f"import of the private module {alias.name!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            report(node, f"{node.func.id}() of the private name {node.args[1].value!r}")
    return found


def test_only_the_door_touches_private_names():
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path != DOOR:
            found += violations(path.read_text(), path.name)
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "future._state.wait()",
        "c = client\nc._send_to_scheduler({})",
        "from distributed.client import _wait",
        "from distributed._concurrent_futures_thread import thread",
        "import distributed._signals",
        "getattr(future, '_client')",
        "class Leaf(DelayedLeaf):\n    def f(self):\n        return self._obj",
        "(lambda f: f)(future)._client",
    ],
)
def test_the_check_finds_each_way_of_reaching_in(source):
    assert violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "class A:\n    def f(self):\n        self._y = 2\n        return self._y",
        "from unnest import _protocol\n_protocol.take_over",
        "import unnest._runtime\nunnest._runtime.private_loop()",
        "class A:\n    __slots__ = ('_z',)\n    def f(self):\n        return self._z",
        "x.__dict__",
    ],
)
def test_the_check_lets_unnests_own_names_be(source):
    assert violations(source) == []


def test_fast_paths_can_be_switched_off_and_on():
    assert _distributed.fast() is (os.environ.get("UNNEST_PUBLIC_ONLY", "") in ("", "0"))
    try:
        _distributed.use_public_only()
        assert not _distributed.fast()
    finally:
        _distributed.use_public_only(False)
    assert _distributed.fast() is (os.environ.get("UNNEST_PUBLIC_ONLY", "") in ("", "0"))


def test_the_environment_switch_reaches_a_new_process():
    code = "from unnest import _distributed; print(_distributed.fast())"
    env = {**os.environ, "UNNEST_PUBLIC_ONLY": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
