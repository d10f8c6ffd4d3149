"""register_placeholder and asyncio futures: the placeholders of other libraries and your own.

Every kind of placeholder ``as_future`` may give -- concurrent, asyncio and
distributed futures (on a multi-process cluster) and a dask collection --
with values that hold more; subclasses; errors naming the place; the paths
of ``as_resolved``; the input never modified and the user's futures never
cancelled or released. And asyncio's own futures and tasks, in the
asynchronous API and (with a clear error where they cannot be) in the
blocking one.
"""

import asyncio
import concurrent.futures
import copy
import sys
import threading

import dask
import pytest
from distributed import Event
from helpers import inc, wait_event
from strategies import done

import unnest

if sys.version_info < (3, 11):  # the backport unnest depends on there
    from exceptiongroup import ExceptionGroup


class Job:
    """A future of a workflow library of one's own: it holds a future of another kind."""

    def __init__(self, future, name="job"):
        self.future = future
        self.name = name

    def __repr__(self):
        return f"Job({self.name!r})"


class SubJob(Job):
    pass


calls = []


@unnest.register_placeholder(Job)
def _job_future(job):
    calls.append(job.name)
    return job.future


class Broken:
    """A placeholder type whose as_future fails or gives nothing unnest knows."""

    def __init__(self, how):
        self.how = how


@unnest.register_placeholder(Broken)
def _broken_future(broken):
    if broken.how == "raise":
        raise LookupError("no such job")
    return "not a future"


def settled_later(value):
    """A concurrent future that another thread sets once the test has started waiting."""
    f = concurrent.futures.Future()
    threading.Timer(0.05, f.set_result, [value]).start()
    return f


# -- Every kind of placeholder as_future may give --------------------------------------


def test_concurrent_futures_within_jobs_resolve_to_any_depth():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        inner = Job(pool.submit(pow, 2, 10), "inner")
        middle = Job(pool.submit(lambda: {"inner": inner, "plain": 1}), "middle")
        outer = SubJob(settled_later([middle, Job(done(3))]), "outer")  # a subclass
        assert unnest.unwrap({"x": outer}) == {"x": [{"inner": 1024, "plain": 1}, 3]}


def test_as_future_is_called_once_per_job():
    calls.clear()
    job = Job(done(1), "once")
    assert unnest.unwrap([job, job, {"again": job}]) == [1, 1, {"again": 1}]
    assert calls == ["once"]


def test_asyncio_future_from_as_future():
    async def main():
        loop = asyncio.get_running_loop()
        later = loop.create_future()
        loop.call_soon(later.set_result, [Job(done("deeper"))])
        task = asyncio.ensure_future(asyncio.sleep(0.01, "slept"))
        return await unnest.unwrap_async({"a": Job(later), "b": Job(task)})

    assert asyncio.run(main()) == {"a": ["deeper"], "b": "slept"}


def test_dask_collection_from_as_future():
    # Computed with the others, on the configured scheduler (no client here).
    jobs = [Job(dask.delayed(inc)(i)) for i in range(3)]
    with dask.config.set(scheduler="sync"):
        assert unnest.unwrap({"jobs": jobs}) == {"jobs": [1, 2, 3]}


def test_distributed_futures_from_as_future_on_a_cluster(mp_client):
    inner = mp_client.submit(inc, 1)
    # The value of this one holds a Job standing for a Delayed: computed on
    # the cluster through the same client.
    holder = mp_client.submit(make_job_of_delayed, 41)
    out = unnest.unwrap({"a": Job(inner), "b": [Job(holder)], "c": inner})
    assert out == {"a": 2, "b": [42], "c": 2}
    # The user's futures are used as they are, never released.
    assert inner.status == holder.status == "finished"
    assert inner.result() == 2
    assert inner.key in mp_client.futures and holder.key in mp_client.futures


def make_job_of_delayed(x):
    return Job(dask.delayed(inc)(x), "from-a-task")


def test_the_distributed_engine_batches_stand_ins(mp_client):
    futures = mp_client.map(inc, range(50))
    mp_client.gather(futures)
    assert unnest.unwrap([Job(f) for f in futures]) == list(range(1, 51))


# -- Errors, paths, the input -------------------------------------------------------------


def test_errors_name_the_place_of_the_job():
    bad = Job(pool_failure(ValueError("bad input")), "bad")
    with pytest.raises(ValueError, match="bad input") as info:
        unnest.unwrap({"rows": [Job(done(1)), bad]})
    assert info.value.__notes__ == ["raised by the Job at obj['rows'][1]"]


def pool_failure(exc):
    f = concurrent.futures.Future()
    f.set_exception(exc)
    return f


def test_an_error_inside_a_jobs_value_names_the_place_below_it():
    job = Job(done({"k": [Job(pool_failure(KeyError("deep")))]}))
    with pytest.raises(KeyError) as info:
        unnest.unwrap([job])
    assert info.value.__notes__ == ["raised by the Job at obj[0].result()['k'][0]"]


def test_as_future_that_raises_or_gives_no_placeholder_names_the_place():
    with pytest.raises(LookupError, match="no such job") as info:
        unnest.unwrap({"a": [1, Broken("raise")]})
    assert info.value.__notes__ == ["raised by the Broken at obj['a'][1]"]
    with pytest.raises(TypeError, match="returned a str, not a placeholder") as info:
        unnest.unwrap({"b": Broken("str")})
    assert info.value.__notes__ == ["raised by the Broken at obj['b']"]


def test_errors_return_puts_the_exception_in_place():
    out = unnest.unwrap([Job(pool_failure(ValueError("x"))), Job(done(2))], return_exceptions=True)
    assert isinstance(out[0], ValueError) and out[1] == 2


def test_as_resolved_paths_are_those_of_the_jobs():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        obj = {"a": [Job(done(1))], "b": Job(pool.submit(lambda: [Job(done(2))])), "c": 3}
        pairs = sorted(unnest.as_resolved(obj))
    assert pairs == [(("a", 0), 1), (("b",), [2])]


def test_as_resolved_async_with_asyncio_tasks():
    async def main():
        slow = asyncio.ensure_future(asyncio.sleep(0.05, "slow"))
        fast = asyncio.ensure_future(asyncio.sleep(0, "fast"))
        async with unnest.as_resolved_async({"slow": slow, "fast": [Job(fast)]}) as stream:
            return [pair async for pair in stream]

    assert asyncio.run(main()) == [(("fast", 0), "fast"), (("slow",), "slow")]


def test_the_input_is_never_modified():
    jobs = [Job(done([Job(done(1))]), "a"), {"b": Job(done(2), "b")}]
    before = copy.copy(jobs), [vars(job).copy() for job in (jobs[0], jobs[1]["b"])]
    assert unnest.unwrap(jobs) == [[1], {"b": 2}]
    assert copy.copy(jobs) == before[0]
    assert [vars(job) for job in (jobs[0], jobs[1]["b"])] == before[1]


def test_a_users_futures_are_never_cancelled():
    # A failure elsewhere ends the call; a timeout too. The Job's future waits on.
    pending = concurrent.futures.Future()
    with pytest.raises(ValueError):
        unnest.unwrap([Job(pending), Job(pool_failure(ValueError("x")))])
    with pytest.raises(TimeoutError):
        unnest.unwrap(Job(pending), timeout=0.1)
    assert not pending.cancelled() and not pending.done()
    pending.set_result(1)
    assert unnest.unwrap(Job(pending)) == 1


def test_a_users_distributed_futures_are_never_cancelled(mp_client):
    name = "test-placeholders-release"
    waiting = mp_client.submit(wait_event, name, 7, pure=False)
    with pytest.raises(TimeoutError):
        unnest.unwrap({"a": Job(waiting)}, timeout=0.5)
    assert waiting.status == "pending"
    Event(name, client=mp_client).set()
    assert unnest.unwrap(Job(waiting)) == 7


def test_registering_a_class_covers_subclasses_and_a_subclass_may_be_its_own():
    class Special(Job):
        pass

    assert unnest.unwrap(Special(done(5))) == 5

    class Plain(Job):
        pass

    unnest.register_container(Plain, lambda obj: ([obj.future], lambda v: v[0]))
    # A container now: walked, not waited on (its future resolves as a child).
    assert unnest.unwrap(Plain(done(6))) == 6
    with pytest.raises(TypeError, match="`cls` must be a type"):
        unnest.register_placeholder(Job(None), lambda job: job.future)
    with pytest.raises(TypeError, match="`as_future` must be callable"):
        unnest.register_placeholder(Job, None)(3)


# -- asyncio futures in the blocking API -----------------------------------------------


def test_blocking_unwrap_of_an_asyncio_future_of_the_callers_loop_says_use_unwrap_async():
    async def main():
        pending = asyncio.get_running_loop().create_future()
        with pytest.raises(RuntimeError, match="unwrap_async") as info:
            unnest.unwrap({"a": [pending]})
        assert info.value.__notes__ == ["raised by the asyncio future at obj['a'][0]"]
        assert not pending.cancelled()
        # Done ones are read as they are.
        finished = asyncio.get_running_loop().create_future()
        finished.set_result(3)
        assert unnest.unwrap([finished]) == [3]

    asyncio.run(main())


def test_blocking_unwrap_of_an_asyncio_future_whose_loop_is_not_running():
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="its event loop is not running"):
            unnest.unwrap(loop.create_future())
    finally:
        loop.close()


def test_blocking_unwrap_of_asyncio_futures_of_a_loop_in_another_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def make():
            later = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.05, later.set_result, "set")
            return later, asyncio.ensure_future(asyncio.sleep(0.01, "slept"))

        later, task = asyncio.run_coroutine_threadsafe(make(), loop).result(10)
        assert unnest.unwrap({"later": later, "task": [task]}) == {
            "later": "set",
            "task": ["slept"],
        }
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_cancelled_asyncio_task_names_its_place():
    async def main():
        task = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_soon(task.cancel)
        with pytest.raises(concurrent.futures.CancelledError) as info:
            await unnest.unwrap_async({"t": task})
        assert info.value.__notes__ == ["raised by the asyncio future at obj['t']"]

    asyncio.run(main())


def test_blocking_as_resolved_of_an_asyncio_future_of_the_callers_loop_says_use_async():
    async def main():
        pending = asyncio.get_running_loop().create_future()
        with pytest.raises(RuntimeError, match="as_resolved_async") as info:
            list(unnest.as_resolved({"a": pending, "b": done(1)}))
        assert info.value.__notes__ == ["raised by the asyncio future at obj['a']"]

    asyncio.run(main())


def test_asyncio_futures_beside_distributed_ones_in_unwrap_async(mp_client):
    # The call runs on the client's loop, in another thread than the
    # caller's loop, whose task it waits on through that loop.
    async def main():
        task = asyncio.ensure_future(asyncio.sleep(0.01, "slept"))
        job = Job(asyncio.ensure_future(asyncio.sleep(0, "job")))
        return await unnest.unwrap_async({"t": task, "f": mp_client.submit(inc, 1), "j": job})

    assert asyncio.run(main()) == {"t": "slept", "f": 2, "j": "job"}


def test_errors_group_names_every_job():
    jobs = {"a": Job(pool_failure(ValueError("one"))), "b": [Job(done(2)), Broken("raise")]}
    with pytest.raises(ExceptionGroup) as info:
        unnest.unwrap(jobs, errors="group")
    notes = sorted(error.__notes__[0] for error in info.value.exceptions)
    assert notes == ["raised by the Broken at obj['b'][1]", "raised by the Job at obj['a']"]
