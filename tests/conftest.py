import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client
from distributed.utils_test import (  # noqa: F401  (pytest fixtures)
    cleanup,
    client,
    cluster_fixture,
    loop,
    loop_in_thread,
)

import unnest.resolve

TESTS = Path(__file__).resolve().parent

# unnest drives calls that involve no client on one private event loop in a
# daemon thread that lives as long as the process (like distributed's own
# offload thread). Start it before any test, so distributed's thread-leak
# check does not count it against the first test that needs it.
unnest.resolve._private_loop()


# -- A cluster started with the `dask scheduler` and `dask worker` commands ----


def _dask(*args, env):
    # Own session, so its own process group: teardown kills it and its children.
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dask"), *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill(procs):
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=30)
    left = []
    for proc in procs:
        try:
            os.killpg(proc.pid, 0)  # anything left in its process group?
        except ProcessLookupError:
            continue
        left.append(proc.pid)
    assert not left, f"process groups left running: {left}"


@pytest.fixture(scope="session")
def cli_cluster(tmp_path_factory):
    """A scheduler and two workers as `dask` command processes on 127.0.0.1.

    Yields the scheduler file. Every process it started is killed by process
    group and reaped at teardown; teardown fails if any is left.
    """
    scheduler_file = str(tmp_path_factory.mktemp("cli-cluster") / "scheduler.json")
    env = dict(os.environ)
    # Workers import the test modules' functions by reference.
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    common = ["--scheduler-file", scheduler_file, "--no-dashboard"]
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", *common, env=env)]
    try:
        for _ in range(2):
            worker = ["--host", "127.0.0.1", "--nthreads", "2", "--no-nanny", *common]
            procs.append(_dask("worker", *worker, env=env))
        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield scheduler_file
    finally:
        _kill(procs)


@pytest.fixture
def cli_client(cli_cluster):
    with Client(scheduler_file=cli_cluster, timeout=30) as cli:
        yield cli
