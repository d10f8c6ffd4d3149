"""The package as users and CI see it: public names, metadata, lint, types."""

import pickle
import shutil
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
        "__version__",
    }
    assert unnest.unwrap_or_wait is unnest.unwrap
    assert (ROOT / "unnest" / "py.typed").exists()


def test_errors_survive_pickling():
    error = unnest.ForgottenFutureError("inc-1", "obj[0]")
    again = pickle.loads(pickle.dumps(error))
    assert (again.key, again.path, str(again)) == (error.key, error.path, str(error))


def test_importing_unnest_does_not_import_distributed():
    code = "import sys, unnest; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy", "unnest"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_lint_and_types(command):
    if command[0] == "ruff":
        command[0] = shutil.which("ruff") or "ruff"
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
