"""The example of docs/engines.rst runs: quacc#1321's fan-out on Dask, Ray, Prefect and Parsl.

A module of its own: the example loads Parsl and starts Ray itself, which
``tests/test_engines.py``'s module-wide fixtures must not hold meanwhile.
Skipped where an engine is missing, failed then under
``UNNEST_REQUIRE_ENGINES=1`` (``nox -s tests-engines``).
"""

import importlib
import os
import sys
from pathlib import Path

import pytest
from helpers import close_parsl_logs

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
REQUIRED = os.environ.get("UNNEST_REQUIRE_ENGINES", "") not in ("", "0")

# As in tests/test_engines.py: Prefect's local server on loaded cores, quiet.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*:RuntimeWarning"),
]


def test_the_examples_give_the_values_on_every_engine(monkeypatch, tmp_path):
    for name in ("ray", "prefect", "parsl"):
        if REQUIRED:
            importlib.import_module(name)
        else:
            pytest.importorskip(name)
    import ray
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.chdir(tmp_path)  # Parsl writes its runinfo/ here
    sys.path.insert(0, str(EXAMPLES))
    try:
        fan_out = importlib.import_module("fan_out")
    finally:
        sys.path.remove(str(EXAMPLES))
    try:
        with prefect_test_harness(server_startup_timeout=None):
            assert fan_out.main() == fan_out.EXPECTED
            assert fan_out.mixed() == fan_out.MIXED
    finally:
        ray.shutdown()
        close_parsl_logs(tmp_path)
