import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
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


def _start_callback_thread():
    """Start distributed's ``Future.add_done_callback`` thread now, for the same reason.

    With the fast paths off (``UNNEST_PUBLIC_ONLY=1``) unnest waits on futures
    through ``add_done_callback``, whose one thread distributed starts on
    first use and keeps for the life of the process.
    """
    import concurrent.futures

    from distributed import Future

    if Future._cb_executor is None or Future._cb_executor_pid != os.getpid():
        Future._cb_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="Dask-Callback-Thread"
        )
        Future._cb_executor_pid = os.getpid()
    Future._cb_executor.submit(int).result()


if os.environ.get("UNNEST_PUBLIC_ONLY", "") not in ("", "0"):
    _start_callback_thread()


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


@pytest.fixture(scope="module")
def inproc_cluster():
    """A ``LocalCluster`` of 1 worker x 2 threads, all in this process, shared by a module.

    For the hand-off state machine, whose model counts on it: with worker
    processes, a want of its own client that a step had released was still on
    the scheduler at the step's check.
    """
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    ) as cluster:
        yield cluster


# -- A cluster started with the `dask scheduler` and `dask worker` commands ----


def _dask(*args, env):
    # Own session, so its own process group: teardown kills it and its
    # children, and a Ctrl-C in the terminal reaches pytest only, which tears
    # the cluster down in order.
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dask"), *args],
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _die_with_parent(parent):
    """A ``preexec_fn``: the child gets SIGKILL when the thread that started it ends.

    The backstop for a run that is killed (SIGKILL, or a second SIGTERM):
    no teardown runs then. Linux only (``prctl(PR_SET_PDEATHSIG)``), which
    follows the *thread* that forked: the cluster must be started from the
    main thread, which lives as long as the run.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    pr_set_pdeathsig, sigkill = ctypes.c_int(1), ctypes.c_ulong(signal.SIGKILL)

    def preexec():
        # In the child, between fork and exec: no imports, no locks.
        if prctl(pr_set_pdeathsig, sigkill) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


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
    any is left; if the run itself is killed, they die with it.
    """
    # The processes die with the thread that starts them (_die_with_parent).
    assert threading.current_thread() is threading.main_thread(), "not the main thread"
    scheduler_file = str(Path(directory) / "scheduler.json")
    env = dict(os.environ)
    # Workers import the test modules' functions by reference.
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    common = ["--scheduler-file", scheduler_file, "--no-dashboard"]
    processes = []
    try:
        processes.append(_dask("scheduler", "--host", "127.0.0.1", "--port", "0", *common, env=env))
        for _ in range(nworkers):
            worker = ["--host", "127.0.0.1", "--nthreads", "2", "--no-nanny", *common]
            processes.append(_dask("worker", *worker, env=env))
        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(nworkers, timeout=60)
        yield scheduler_file, processes[0], processes[1:]
    finally:
        _kill(processes)


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


# -- A run stopped by SIGTERM (a CI timeout, kill) stops in order -------------

_SIGTERM = pytest.StashKey[object]()


def _stop_in_order(signum, frame):
    """Stop as a Ctrl-C does, so that pytest runs the fixtures' teardowns.

    Without it the process ends at once, and the processes of the clusters
    live on: the `dask` commands (their own sessions), and the scheduler and
    workers of distributed's ``client`` fixture. A second SIGTERM ends the
    run at once (the `dask` processes still die with it, _die_with_parent).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt("SIGTERM")


# -- Hypothesis: small locally, thorough in CI, more with --slow --------------

# "dev" for a quick local run; CI sets CI=true in the environment and gets
# "ci"; --slow gets "slow" anywhere. Costlier properties run a fraction of
# the profile's count (strategies.examples).
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=2000, deadline=None)
settings.register_profile("slow", max_examples=20000, deadline=None)


def _hypothesis_profile(config):
    if config.getoption("--slow"):
        return "slow"
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return "ci" if in_ci else "dev"


# -- Options and configuration ---------------------------------------------------


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="more Hypothesis examples")


def pytest_configure(config):
    settings.load_profile(_hypothesis_profile(config))
    if threading.current_thread() is threading.main_thread():  # where signals are handled
        config.stash[_SIGTERM] = signal.signal(signal.SIGTERM, _stop_in_order)


def pytest_unconfigure(config):
    if _SIGTERM in config.stash:
        signal.signal(signal.SIGTERM, config.stash[_SIGTERM])
