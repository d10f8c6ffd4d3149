"""resolves_nested and resolving, on every scheduler, pickled and tokenized."""

import concurrent.futures
import inspect
import pickle
import time

import cloudpickle
import dask
import pytest
from dask import delayed
from distributed import get_client
from helpers import inc, wait_forgotten, watch_forgotten

import unnest
from unnest import resolves_nested, resolving


@delayed
def return_futures(n):
    return [delayed(x + 1) for x in range(n)]


@resolves_nested
def sumit(upstream):
    """Sum whatever arrives, resolved."""
    return sum(upstream)


@resolves_nested(pure=True)
def double(x):
    return 2 * x


@resolving
def total(xs, *, extra=0):
    """Sum of resolved inputs."""
    return sum(xs) + extra


@resolving
def produce(n):
    """A producer of futures: resolving hands them off by itself."""
    client = get_client()
    return {"xs": [client.submit(inc, i, pure=False) for i in range(n)]}


@resolving(resolve_output=True)
def produce_values(n):
    client = get_client()
    return [client.submit(inc, i, pure=False) for i in range(n)]


def key_of_double(x):
    return double(x).key


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_toy_example_on_local_schedulers(scheduler):
    with dask.config.set(scheduler=scheduler):
        assert sumit(return_futures(10)).compute() == 55


def test_toy_example_on_distributed(client):
    assert sumit(return_futures(10)).compute() == 55
    assert client.compute(sumit(return_futures(4))).result() == 10
    (persisted,) = dask.persist(sumit(return_futures(3)))
    assert persisted.compute() == 6
    assert dask.compute(sumit(return_futures(2)), double(4)) == (3, 8)


def test_plain_delayed_without_unnest_gets_a_delayed():
    @delayed
    def plain_sum(upstream):
        return [type(x).__name__ for x in upstream]

    assert set(plain_sum(return_futures(3)).compute(scheduler="sync")) == {"DelayedLeaf"}


def test_decorated_object_keeps_name_doc_wrapped_signature():
    assert sumit.__name__ == "sumit"
    assert sumit.__doc__ == "Sum whatever arrives, resolved."
    assert inspect.signature(sumit) == inspect.signature(sumit.__wrapped__)
    assert sumit.__wrapped__.__name__ == "sumit" and not isinstance(
        sumit.__wrapped__, dask.delayed(inc).__class__
    )
    assert total.__name__ == "total" and total.__doc__ == "Sum of resolved inputs."
    assert str(inspect.signature(total)) == "(xs, *, extra=0)"
    assert isinstance(sumit(1), dask.delayed(inc)(1).__class__)  # a Delayed


def test_the_decorators_themselves_have_signatures():
    # inspect.signature(unnest.resolving) raised a TypeError: the class's
    # __signature__ was a property object (help() and IDEs use it).
    assert list(inspect.signature(unnest.resolving).parameters) == [
        "func",
        "timeout",
        "resolve_output",
    ]
    assert "func" in inspect.signature(unnest.resolves_nested).parameters
    assert inspect.signature(type(sumit)) is not None


def test_every_delayed_option_is_accepted():
    @resolves_nested(nout=2, pure=True, name="pair-fn", traverse=False)
    def pair(x):
        return x, x + 1

    first, second = pair(1)
    assert dask.compute(first, second, scheduler="sync") == (1, 2)
    assert pair.key == "pair-fn"


def test_pure_keys_are_equal_across_calls_and_processes(client):
    assert double(3).key == double(3).key
    assert double(3).key != double(4).key
    assert client.submit(key_of_double, 3).result() == double(3).key


def test_resolving_pickles_with_the_standard_pickle():
    assert pickle.loads(pickle.dumps(total)) is total  # decorated in place: by reference
    inner = sumit._obj
    assert pickle.loads(pickle.dumps(inner)) is inner
    wrapped = resolving(inc, timeout=5)
    again = pickle.loads(pickle.dumps(wrapped))
    assert again == wrapped and again.timeout == 5 and again(1) == 2
    assert cloudpickle.loads(cloudpickle.dumps(total)) is total


def test_resolving_runs_in_a_process_pool():
    with (
        concurrent.futures.ProcessPoolExecutor(1) as processes,
        concurrent.futures.ThreadPoolExecutor(2) as threads,
    ):
        nested = [threads.submit(inc, 1), (threads.submit(inc, 2),)]
        values = unnest.unwrap(nested)  # a process pool cannot take our futures
        assert processes.submit(total, [values[0], *values[1]], extra=1).result() == 6


def test_resolving_with_submit_and_map(client):
    producer = client.submit(produce, 3, pure=False)
    assert client.submit(total, producer.result()["xs"]).result() == 6
    results = client.map(total, [[client.submit(inc, 1)], [1, 2]], pure=False)
    assert client.gather(results) == [2, 3]


def test_resolving_direct_call_and_timeout():
    with concurrent.futures.ThreadPoolExecutor() as pool:
        assert total([pool.submit(inc, 0)], extra=pool.submit(inc, 1)) == 3  # kwargs too
        blocked = concurrent.futures.Future()
        with pytest.raises(TimeoutError):
            resolving(sum, timeout=0.2)([blocked])
        assert not blocked.cancelled()


def test_resolve_output(client):
    assert client.submit(produce_values, 3, pure=False).result() == [1, 2, 3]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="`timeout` must be non-negative"):
        resolving(inc, timeout=-1)
    with pytest.raises(TypeError, match="`func` must be callable"):
        resolving(3)


def test_producer_and_consumer_leave_no_keys(client):
    watch_forgotten(client)
    producer = client.submit(produce, 4, pure=False)
    assert unnest.unwrap(producer) == {"xs": [1, 2, 3, 4]}
    del producer
    assert wait_forgotten(client, made=5) == []


# -- Delayed functions that workflows pass around (issue 20, dask/dask#10733) ------------


@delayed
def timed_job(x):
    """A job of about a second: its work is the sleep. Returns when it ran."""
    start = time.time()
    time.sleep(1)
    return x, start, time.time()


@resolves_nested
def subflow(job, items):
    """Calls the job it is given for each item: with a delayed job, each call is a task."""
    return [job(item) for item in items]


def assert_ran_together(results):
    # Every job started before any job ended: all four ran at the same time.
    # (One after another, each would start after the previous one ended.)
    starts = [start for _, start, _ in results]
    ends = [end for _, _, end in results]
    assert max(starts) < min(ends), results


def test_delayed_function_argument_makes_concurrent_tasks_on_threads():
    with dask.config.set(scheduler="threads", num_workers=4):
        results = unnest.unwrap(subflow(timed_job, range(4)))
    assert [x for x, _, _ in results] == [0, 1, 2, 3]
    assert_ran_together(results)


def test_delayed_function_argument_makes_concurrent_tasks_on_a_cluster(mp_client):
    # 2 worker processes x 2 threads: the 4 jobs, once the subflow returned them.
    results = unnest.unwrap(subflow(timed_job, range(4)))
    assert [x for x, _, _ in results] == [0, 1, 2, 3]
    assert_ran_together(results)


def test_what_a_resolves_nested_function_receives():
    @resolves_nested
    def received(f, *, g, n, called):
        return [type(f).__name__, type(g).__name__, n, called]

    # Delayed functions stay delayed functions, by position and keyword; a
    # Delayed of a value and a called one are computed, as dask.delayed does.
    out = received(timed_job, g=sumit, n=delayed(5), called=double(2))
    assert out.compute(scheduler="sync") == ["DelayedLeaf", "_ResolvingLeaf", 5, 4]


def test_plain_delayed_gets_the_bare_function():
    @delayed
    def plain(f):
        return callable(f) and not dask.is_dask_collection(f)

    assert plain(timed_job).compute(scheduler="sync") is True
