"""Ray, Prefect 3 and Parsl futures, resolved for real (issue 20).

Each engine runs for real: Ray with a local ``ray.init(num_cpus=2)``;
Prefect 3 flows on its local ephemeral API, with its thread pool and with
prefect-dask's ``DaskTaskRunner`` on a multi-process ``LocalCluster``; Parsl
with a thread pool and a ``HighThroughputExecutor`` on this machine. None is
in the ``test`` extra: where one is missing its tests skip, except under
``UNNEST_REQUIRE_ENGINES=1`` (``nox -s tests-engines``), where a missing
engine fails them.
"""

import asyncio
import concurrent.futures
import importlib
import logging
import operator
import os
import subprocess
import sys
import threading
from pathlib import Path

import dask
import pytest
from distributed import LocalCluster, get_client
from helpers import close_parsl_logs, in_thread, inc

import unnest
from unnest._distributed import count_gathers

# Prefect's local API server starts in a subprocess at the first flow: on 2
# loaded cores it needs more than its default 20 s. Set before Prefect loads
# its settings, with nothing sent anywhere and little logged.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REQUIRED = os.environ.get("UNNEST_REQUIRE_ENGINES", "") not in ("", "0")

TESTS = Path(__file__).resolve().parent

pytestmark = [
    # The engines' own warnings, raised as errors by setup.cfg's filterwarnings.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*:RuntimeWarning"),
]


def engine(name):
    """The module ``name``: a skip where it is missing, a failure where engines are required."""
    if REQUIRED:
        return importlib.import_module(name)
    return pytest.importorskip(name)


def calls_of(monkeypatch, module, name, then=None):
    """Count the calls of the real ``module.name`` (still called); ``then()`` after each."""
    original = getattr(module, name)
    counter = []

    def counting(*args, **kwargs):
        counter.append(args)
        try:
            return original(*args, **kwargs)
        finally:
            if then is not None:
                then()

    monkeypatch.setattr(module, name, counting)
    return counter


# -- Ray ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray():
    ray = engine("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_tasks(ray):
    """The remote functions, made once Ray is there."""

    @ray.remote
    def r_inc(x):
        return x + 1

    @ray.remote
    def r_fan(n):
        return {"items": [r_inc.remote(i) for i in range(n)]}

    @ray.remote
    def r_fail(x):
        raise ZeroDivisionError(f"ray boom {x}")

    @ray.remote
    def r_delayed(x):
        return [dask.delayed(operator.add)(x, 1)]  # operator: importable on Ray's workers

    return r_inc, r_fan, r_fail, r_delayed


def test_ray_refs_anywhere_returned_by_tasks_and_inside_values(ray):
    r_inc, r_fan, _, _ = ray_tasks(ray)
    inner = r_inc.remote(1)
    # A ref whose value is a ref; refs inside a value of a ref; a ref inside a ref's value's value.
    chain = r_inc.remote(10)
    ref_of_ref = ray.put([chain])
    out = unnest.unwrap({"a": inner, "fan": r_fan.remote(3), "deep": ray.put({"x": ref_of_ref})})
    assert out == {"a": 2, "fan": {"items": [1, 2, 3]}, "deep": {"x": [11]}}


def test_ray_errors_name_their_place(ray):
    r_inc, _, r_fail, _ = ray_tasks(ray)
    with pytest.raises(ZeroDivisionError, match="ray boom 7") as info:
        unnest.unwrap({"rows": [r_inc.remote(1), r_fail.remote(7)]})
    assert info.value.__notes__ == ["raised by the ObjectRef at obj['rows'][1]"]
    out = unnest.unwrap([r_fail.remote(1), r_inc.remote(1)], return_exceptions=True)
    assert isinstance(out[0], ZeroDivisionError) and out[1] == 2


def test_ray_ready_refs_are_fetched_together(ray, monkeypatch):
    r_inc, r_fan, _, _ = ray_tasks(ray)
    refs = [r_inc.remote(i) for i in range(500)]
    fans = [r_fan.remote(20) for _ in range(10)]
    inner = [ref for fan in ray.get(fans) for ref in fan["items"]]
    ray.wait(refs + inner, num_returns=len(refs) + len(inner))  # all finished
    gets = calls_of(monkeypatch, ray, "get")
    out = unnest.unwrap({"flat": [{"x": r} for r in refs], "fans": fans})
    assert [d["x"] for d in out["flat"]] == list(range(1, 501))
    assert out["fans"] == [{"items": list(range(1, 21))}] * 10
    # The 510 refs of the input in one ray.get, the 200 their values hold in one more.
    assert [len(args[0]) for args in gets] == [510, 200]


def test_ray_pending_refs_are_waited_for_without_polling(ray, monkeypatch):
    r_inc, _, _, _ = ray_tasks(ray)

    @ray.remote
    class Gate:
        def __init__(self):
            self.event = asyncio.Event()

        async def open(self):
            self.event.set()

        async def wait(self):
            await self.event.wait()

    @ray.remote
    def gated(gate, x):
        ray.get(gate.wait.remote())
        return [r_inc.remote(x)]

    gate = Gate.remote()
    slow = [gated.remote(gate, i) for i in range(4)]
    sorted_once = threading.Event()
    waits = calls_of(monkeypatch, ray, "wait", then=sorted_once.set)
    call = in_thread(lambda: unnest.unwrap([slow, r_inc.remote(0)], timeout=60))
    assert sorted_once.wait(30)
    assert not call.done()
    ray.get(gate.open.remote())
    assert call.result(60) == [[[1], [2], [3], [4]], 1]
    # One sort per batch of new refs (the input's, then those the values
    # held, as they came): callbacks, not a ray.wait loop.
    assert 2 <= len(waits) <= 5, len(waits)


def test_ray_ref_whose_value_holds_a_delayed(ray):
    _, _, _, r_delayed = ray_tasks(ray)
    with dask.config.set(scheduler="sync"):
        assert unnest.unwrap({"ref": r_delayed.remote(41)}) == {"ref": [42]}


def test_ray_as_resolved_paths(ray):
    r_inc, r_fan, _, _ = ray_tasks(ray)
    pairs = sorted(unnest.as_resolved({"a": [r_inc.remote(1)], "b": r_fan.remote(2)}))
    assert pairs == [(("a", 0), 2), (("b",), {"items": [1, 2]})]


# -- Prefect 3 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect():
    """Prefect, its flows run against a local API server of the module's own
    (Prefect's test harness: a temporary database)."""
    prefect = engine("prefect")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):  # the timeout set above
        yield prefect


def prefect_tasks(prefect):
    @prefect.task
    def p_inc(x):
        return x + 1

    @prefect.task
    def p_fan(n):
        return [p_inc.submit(i) for i in range(n)]

    @prefect.task
    def p_fail(x):
        raise ZeroDivisionError(f"prefect boom {x}")

    return p_inc, p_fan, p_fail


def test_prefect_thread_pool_futures(prefect):
    from prefect.task_runners import ThreadPoolTaskRunner

    p_inc, p_fan, p_fail = prefect_tasks(prefect)

    @prefect.flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def flow():
        futures = {"one": p_inc.submit(1), "fan": p_fan.submit(3)}
        out = unnest.unwrap(futures)
        with pytest.raises(ZeroDivisionError, match="prefect boom 2") as info:
            unnest.unwrap({"rows": [p_inc.submit(0), p_fail.submit(2)]})
        return out, info.value.__notes__

    out, notes = flow()
    assert out == {"one": 2, "fan": [1, 2, 3]}
    assert notes == ["raised by the PrefectConcurrentFuture at obj['rows'][1]"]


def test_prefect_future_whose_value_holds_distributed_futures(prefect, mp_client):
    from prefect.task_runners import ThreadPoolTaskRunner

    @prefect.task
    def submit_to_dask(n):
        client = get_client()  # the test's client, current in this process
        return [client.submit(inc, i, pure=False) for i in range(n)]

    @prefect.flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def flow():
        return unnest.unwrap({"dask": submit_to_dask.submit(4)})

    assert flow() == {"dask": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def dask_runner(prefect):
    """prefect-dask's runner on a multi-process cluster whose workers know the API."""
    engine("prefect_dask")
    from prefect.settings import PREFECT_API_URL
    from prefect_dask import DaskTaskRunner

    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
        env=env,
    ) as cluster:
        yield DaskTaskRunner(address=cluster.scheduler_address)


def p_dask_fan(n):
    """On a dask worker: hand off futures of the cluster, as a task that fans out does."""
    client = get_client()
    return unnest.hand_off([client.submit(inc, i, pure=False) for i in range(n)])


def test_prefect_dask_task_runner_futures_go_to_the_distributed_engine(prefect, dask_runner):
    p_inc = prefect.task(inc)
    p_fan = prefect.task(p_dask_fan)

    @prefect.flow(task_runner=dask_runner)
    def flow():
        futures = [p_inc.submit(i) for i in range(40)]
        fan = p_fan.submit(5)
        for future in [*futures, fan]:
            future.wait()
        with count_gathers() as gathers:
            out = unnest.unwrap({"many": futures, "fan": fan})
        return out, gathers[0]

    out, gathers = flow()
    assert out == {"many": list(range(1, 41)), "fan": [1, 2, 3, 4, 5]}
    # The 41 States in one gather, the 5 handed-off futures in one more
    # (or a few, as they finish): not one round trip per future.
    assert gathers <= 4, gathers


def test_prefect_dask_task_runner_errors_name_their_place(prefect, dask_runner):
    p_fail = prefect.task(fail_on_dask)

    @prefect.flow(task_runner=dask_runner)
    def flow():
        with pytest.raises(ZeroDivisionError, match="dask boom 3") as info:
            unnest.unwrap({"x": [p_fail.submit(3)]})
        return info.value.__notes__

    assert flow() == ["raised by the PrefectDaskFuture at obj['x'][0]"]


def fail_on_dask(x):
    raise ZeroDivisionError(f"dask boom {x}")


# -- Parsl -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["threads", "htex"])
def parsl(request, tmp_path_factory):
    parsl = engine("parsl")
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
    from parsl.providers import LocalProvider

    run_dir = tmp_path_factory.mktemp(f"parsl-{request.param}")
    if request.param == "threads":
        executor = ThreadPoolExecutor(max_threads=2, label="threads")
    else:
        executor = HighThroughputExecutor(
            label="htex",
            address="127.0.0.1",
            max_workers_per_node=2,
            worker_logdir_root=str(run_dir),
            # The apps are this module's: importable there as here.
            provider=LocalProvider(
                init_blocks=1, max_blocks=1, worker_init=f"export PYTHONPATH={TESTS}:$PYTHONPATH"
            ),
        )
    dfk = parsl.load(Config(executors=[executor], run_dir=str(run_dir), usage_tracking=0))
    try:
        yield parsl
    finally:
        dfk.cleanup()
        parsl.clear()
        close_parsl_logs(run_dir)


def parsl_apps(parsl):
    @parsl.python_app
    def a_inc(x):
        return x + 1

    @parsl.python_app
    def a_fail(x):
        raise ZeroDivisionError(f"parsl boom {x}")

    @parsl.python_app
    def a_write(text, outputs=()):
        with open(outputs[0].filepath, "w") as f:
            f.write(text)
        return len(text)

    return a_inc, a_fail, a_write


def test_parsl_app_futures_resolve_and_name_their_place(parsl):
    from parsl.dataflow.futures import AppFuture

    a_inc, a_fail, _ = parsl_apps(parsl)
    futures = [a_inc(i) for i in range(5)]
    assert isinstance(futures[0], AppFuture)
    assert unnest.unwrap({"xs": futures, "chained": a_inc(a_inc(1))}) == {
        "xs": [1, 2, 3, 4, 5],
        "chained": 3,
    }
    with pytest.raises(ZeroDivisionError, match="parsl boom 4") as info:
        unnest.unwrap({"rows": [a_inc(0), a_fail(4)]})
    assert info.value.__notes__ == ["raised by the concurrent.futures.Future at obj['rows'][1]"]


def test_parsl_data_future_resolves_to_what_parsl_says(parsl, tmp_path):
    from parsl.app.futures import DataFuture
    from parsl.data_provider.files import File

    _, _, a_write = parsl_apps(parsl)
    app = a_write("hello", outputs=[File(str(tmp_path / "out.txt"))])
    data = app.outputs[0]
    assert isinstance(data, DataFuture)
    out = unnest.unwrap({"written": app, "file": data})
    assert out["written"] == 5
    assert out["file"] is data.result()
    assert isinstance(out["file"], File) and Path(out["file"].filepath).read_text() == "hello"


# -- Mixed structures -------------------------------------------------------------------------


def test_every_engine_side_by_side_in_one_call(ray, prefect, parsl, mp_client):
    from prefect.task_runners import ThreadPoolTaskRunner

    r_inc, r_fan, _, r_delayed = ray_tasks(ray)
    _, p_fan, _ = prefect_tasks(prefect)
    a_inc, _, _ = parsl_apps(parsl)

    @prefect.task
    def p_ray(x):
        return {"ref": r_inc.remote(x)}  # a Prefect future whose value holds a Ray ref

    @prefect.flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def flow():
        structure = {
            "ray": [r_fan.remote(2), r_delayed.remote(1)],
            "prefect": p_fan.submit(2),
            "parsl": a_inc(a_inc(0)),
            "dask": [mp_client.submit(inc, 1), dask.delayed(inc)(2)],
            "ray in prefect": p_ray.submit(5),
        }
        return unnest.unwrap(structure)

    assert flow() == {
        "ray": [{"items": [1, 2]}, [2]],
        "prefect": [1, 2],
        "parsl": 2,
        "dask": [2, 3],
        "ray in prefect": {"ref": 6},
    }


def test_prefect_results_read_from_storage(prefect, tmp_path):
    # Futures whose State holds no result, only where it is stored: the
    # State's result is read from storage (a thread of its own), and an API
    # future by task run id resolves through its done callback.
    from prefect import get_client
    from prefect.futures import PrefectConcurrentFuture, PrefectDistributedFuture
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    @prefect.task(persist_result=True)
    def stored(x):
        return {"stored": x}

    @prefect.flow
    def flow():
        futures = [stored.submit(5), stored.submit(6)]
        for future in futures:
            future.wait()
        return [future.task_run_id for future in futures]

    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(tmp_path)}):
        first, second = flow()
        with get_client(sync_client=True) as client:
            state = client.read_task_run(first).state
        done = concurrent.futures.Future()
        done.set_result(state)  # as the thread pool's future gives it
        from_api = PrefectConcurrentFuture(first, done)
        by_id = PrefectDistributedFuture(second)
        assert unnest.unwrap({"a": from_api, "b": [by_id]}) == {
            "a": {"stored": 5},
            "b": [{"stored": 6}],
        }


@pytest.mark.parametrize("module", ["ray", "prefect", "parsl"])
def test_importing_unnest_imports_no_engine(module):
    engine(module)  # installed, and still not imported by unnest
    code = f"import sys, unnest; print({module!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
