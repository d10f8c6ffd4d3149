import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from distributed.utils_test import (  # noqa: F401  (pytest fixtures)
    cleanup,
    client,
    cluster_fixture,
    loop,
    loop_in_thread,
)
from hypothesis import settings

import unnest._runtime

TESTS = Path(__file__).resolve().parent

# unnest drives calls that involve no client on one private event loop in a
# daemon thread that lives as long as the process (like distributed's own
# offload thread). Start it before any test, so distributed's thread-leak
# check does not count it against the first test that needs it.
unnest._runtime.private_loop()


# -- One multi-process cluster for a module's tests ---------------------------


@pytest.fixture(scope="module")
def mp_cluster():
    """A ``LocalCluster`` of 2 worker processes x 2 threads, shared by a module.

    For modules of many short tests: starting a cluster per test (the
    ``client`` fixture) costs ~3 s each.
    """
    with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture
def mp_client(mp_cluster):
    """A client of its own for each test, on the module's cluster."""
    with Client(mp_cluster) as own:
        yield own


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


@contextlib.contextmanager
def cli_processes(directory, nworkers=2):
    """A scheduler and ``nworkers`` workers as `dask` command processes on 127.0.0.1.

    Yields ``(scheduler_file, scheduler_process, worker_processes)``. Every
    process is killed by process group and reaped on exit, which fails if
    any is left.
    """
    scheduler_file = str(Path(directory) / "scheduler.json")
    env = dict(os.environ)
    # Workers import the test modules' functions by reference.
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    common = ["--scheduler-file", scheduler_file, "--no-dashboard"]
    scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", "0", *common, env=env)
    workers = []
    try:
        for _ in range(nworkers):
            worker = ["--host", "127.0.0.1", "--nthreads", "2", "--no-nanny", *common]
            workers.append(_dask("worker", *worker, env=env))
        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(nworkers, timeout=60)
        yield scheduler_file, scheduler, workers
    finally:
        _kill([scheduler, *workers])


@pytest.fixture(scope="session")
def cli_cluster(tmp_path_factory):
    """A session-wide cluster of `dask` command processes; yields its scheduler file."""
    with cli_processes(tmp_path_factory.mktemp("cli-cluster")) as (scheduler_file, _, _):
        yield scheduler_file


@pytest.fixture
def fault_cluster(tmp_path):
    """A cluster of `dask` command processes of its own, for tests that kill parts."""
    with cli_processes(tmp_path) as processes:
        yield processes


@pytest.fixture
def cli_client(cli_cluster):
    with Client(scheduler_file=cli_cluster, timeout=30) as cli:
        yield cli


_CLI_FIXTURES = {"cli_cluster", "cli_client", "fault_cluster"}


def pytest_collection_modifyitems(items):
    # The `integration` marker means one thing: the test uses a cluster of
    # `dask scheduler`/`dask worker` processes. It follows from the fixtures.
    for item in items:
        if _CLI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# -- Hypothesis: thorough in CI, more with --slow -----------------------------

settings.register_profile("ci", max_examples=2000, deadline=None)
settings.register_profile("slow", max_examples=20000, deadline=None)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="more Hypothesis examples")


def pytest_configure(config):
    settings.load_profile("slow" if config.getoption("--slow") else "ci")
