"""The suite as a run: stopped by a signal, it leaves no process behind (issue 17)."""

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

# In the environment of the run under test, so of every process it starts.
RUN = "UNNEST_TEST_STOPPED_RUN"
FIXTURES = "UNNEST_TEST_STOPPED_RUN_FIXTURES"
UP = "unnest-test: the clusters are up"

# The processes each fixture starts, by a part of their command lines.
STARTS = {
    "cli_cluster": {"dask scheduler": 1, "dask worker": 2},
    "mp_cluster": {"multiprocessing.spawn": 2},  # the workers; their nannies are in the run
    "client": {"multiprocessing.spawn": 3},  # the scheduler and 2 workers
}


@pytest.mark.skipif(RUN not in os.environ, reason="run by test_a_stopped_run_leaves_no_process")
def test_held_until_stopped(request):
    for name in os.environ[FIXTURES].split(","):
        request.getfixturevalue(name)
    print(UP, flush=True)
    threading.Event().wait()  # until the run is stopped


def processes_of_run(marker):
    """The processes whose environment carries ``marker``, the run's own included."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(RUN) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or not ours
            continue
    return found


def running(processes):
    """Those of ``processes`` that still run (a zombie only waits to be reaped)."""
    left = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.NoSuchProcess:
            continue
    return left


@pytest.mark.slow  # a run of the suite, with its clusters, per case
@pytest.mark.integration
@pytest.mark.timeout(360)
@pytest.mark.parametrize(
    ("stop", "fixtures"),
    [
        # The fixtures are torn down, each cluster's processes with them.
        pytest.param(signal.SIGTERM, ["cli_cluster", "mp_cluster"], id="SIGTERM"),
        pytest.param(signal.SIGTERM, ["client"], id="SIGTERM-distributed-client"),
        # Nothing is torn down: the `dask` processes die with the run
        # (prctl), the LocalCluster's workers by distributed's own pipe to
        # their parent. (The client fixture's processes have neither.)
        pytest.param(signal.SIGKILL, ["cli_cluster", "mp_cluster"], id="SIGKILL"),
    ],
)
def test_a_stopped_run_leaves_no_process(stop, fixtures):
    marker = uuid.uuid4().hex
    env = {**os.environ, RUN: marker, FIXTURES: ",".join(fixtures)}
    target = f"{Path(__file__).relative_to(ROOT)}::test_held_until_stopped"
    command = [sys.executable, "-m", "pytest", target, "-s", "-q", "-p", "no:cacheprovider"]
    output, up = [], threading.Event()
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as run:

        def read():
            for line in run.stdout:
                output.append(line)
                if UP in line:
                    up.set()

        threading.Thread(target=read, daemon=True, name="run-output").start()
        try:
            assert up.wait(120), "".join(output)
            children = [p for p in processes_of_run(marker) if p.pid != run.pid]
            commands = [" ".join(p.cmdline()) for p in children]
            expected = collections.Counter()
            for name in fixtures:
                expected.update(STARTS[name])
            found = {name: sum(name in c for c in commands) for name in expected}
            assert found == expected, commands  # the clusters' processes, found by the marker

            run.send_signal(stop)
            stopped = pytest.ExitCode.INTERRUPTED if stop == signal.SIGTERM else -stop
            assert run.wait(timeout=120) == stopped, "".join(output)
            psutil.wait_procs(children, timeout=60)
            # The children found, and any process of the run started since.
            left = running({*children, *processes_of_run(marker)})
            assert left == [], "".join(output)
        finally:
            # Anything still running means the test failed: end it, by its id.
            if run.poll() is None:
                run.kill()
            for process in running(processes_of_run(marker)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
