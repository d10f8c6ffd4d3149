"""Waiting without a distributed client: concurrent futures and dask's local schedulers."""

import concurrent.futures
import contextlib
import gc
import sys
import weakref

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest
from distributed import Client
from helpers import bounded, failed, inc
from strategies import done

import unnest


@pytest.fixture(autouse=True)
def no_client():
    with pytest.raises(ValueError):
        Client.current()  # these tests are about running without any client
    yield
    # HEAD's engine runs client-less calls on one private loop thread; if a
    # test killed it, give the next tests a new one (no-op for other engines).
    resolve = sys.modules.get("unnest.resolve")
    private = getattr(resolve, "_private", None)
    if isinstance(private, tuple) and not private[1].is_running():
        resolve._private = None
        resolve._private_loop()


# -- BaseExceptions that are not Exceptions --------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["exit", "interrupt"])
def test_base_exception_of_a_concurrent_future_is_raised_and_later_calls_work(exc):
    with pytest.raises(type(exc)):
        bounded(lambda: unnest.unwrap({"x": [failed(exc)]}, timeout=5), 10)
    assert bounded(lambda: unnest.unwrap([done(1), done(2)], timeout=5), 10) == [1, 2]


@pytest.mark.timeout(30)
def test_sys_exit_in_an_executor_task_is_raised_and_later_calls_work():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        exiting = pool.submit(sys.exit, 3)  # the executor stores SystemExit(3)
        concurrent.futures.wait([exiting])
        with pytest.raises(SystemExit) as info:
            bounded(lambda: unnest.unwrap([exiting], timeout=5), 10)
        assert info.value.code == 3
        nested = pool.submit(lambda: [pool.submit(inc, 1)])
        assert bounded(lambda: unnest.unwrap(nested, timeout=5), 10) == [2]


# -- Collections computed together -----------------------------------------------


@pytest.mark.timeout(30)
def test_bag_next_to_an_array_without_a_client():
    bag = db.from_sequence([1, 2, 3], npartitions=2).map(inc)
    x = da.arange(6, chunks=3)
    result = unnest.unwrap([bag, x], timeout=10)
    assert result[0] == [2, 3, 4]
    np.testing.assert_array_equal(result[1], np.arange(6))


@pytest.mark.timeout(30)
def test_bag_next_to_a_delayed_without_a_client():
    bag = db.from_sequence([1, 2, 3], npartitions=2)
    assert unnest.unwrap({"b": bag, "d": dask.delayed(inc)(1)}, timeout=10) == {
        "b": [1, 2, 3],
        "d": 2,
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheduler", [None, "threads", "sync"])
def test_collections_computed_together_keep_their_places(scheduler):
    # dask.compute(x.sum(), bag, x) returns the bag's and the array's values
    # swapped (dask 2026.8.0); each value must still land in its own place.
    x = da.arange(6, chunks=3)
    bag = db.from_sequence([1, 2, 3], npartitions=2)
    with dask.config.set(scheduler=scheduler):
        total, items, array = unnest.unwrap([x.sum(), bag, x], timeout=10)
    assert total == 15
    assert items == [1, 2, 3]
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, np.arange(6))


# -- found by hostile testing --


def _count_down(n):
    """A task that unwraps the Delayed of the level below it: ``n`` levels nested."""
    if n == 0:
        return 0
    return unnest.unwrap(dask.delayed(_count_down, pure=False)(n - 1), timeout=15) + 1


@pytest.mark.timeout(60)
def test_unwrap_nested_in_local_tasks_deeper_than_an_executor():
    # Each level's dask.compute holds a thread while the level below runs:
    # 40 levels are more than any default ThreadPoolExecutor has (32 at most).
    with dask.config.set(scheduler="sync"):
        top = dask.delayed(_count_down, pure=False)(40)
        assert unnest.unwrap(top, timeout=40) == 40


class _Payload:
    pass


@pytest.mark.timeout(30)
def test_an_ended_call_is_not_kept_alive_by_the_users_concurrent_future():
    pending = concurrent.futures.Future()  # the user's, long-lived
    payload = _Payload()
    ref = weakref.ref(payload)
    for _ in range(2):
        with contextlib.suppress(TimeoutError):
            unnest.unwrap({"x": [pending], "payload": payload}, timeout=0.05)
    del payload
    gc.collect()
    assert ref() is None, "the ended calls' graphs are kept by callbacks on the user's future"
