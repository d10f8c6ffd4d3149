"""The public API as type checkers see it: tests/typing_checks.py under mypy and pyright."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKS = "tests/typing_checks.py"


def check(*command):
    # Through this interpreter: its environment's bin/ need not be on PATH.
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# A cold mypy run takes 7 s on an idle machine and took over 120 s on a loaded
# 2-core one (tests/test_package.py); pyright took 3 s at a load of 7.
@pytest.mark.timeout(600)
def test_mypy_strict():
    check("mypy", "--strict", CHECKS)


@pytest.mark.timeout(600)
def test_pyright():
    # basedpyright: pyright with node bundled in its wheel (setup.cfg says why).
    # --pythonpath: the packages of this interpreter, not of whichever python
    # is first on PATH.
    check("basedpyright", "--pythonpath", sys.executable, CHECKS)
