"""Faults, bad input and load: the right answer or a clear error, never a hang."""

import concurrent.futures
import dataclasses
import os
import random
import signal
import time
import typing

import pytest
from distributed import Client, Event, Future, get_client, wait
from helpers import (
    connect_worker_clients,
    fail,
    in_thread,
    inc,
    wait_event,
    wait_forgotten,
    watch_forgotten,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import containers, done, same_types, snapshot, swap_leaves

import unnest
from unnest.handoff import hand_off_state


def started_then_sleep(i, seconds):
    Event("children-started").set()
    time.sleep(seconds)
    return i


@unnest.resolving
def slow_producer(n, seconds):
    client = get_client()
    return [client.submit(started_then_sleep, i, seconds, pure=False) for i in range(n)]


def worker_pid(client, address):
    return client.run(os.getpid, workers=[address])[address]


# -- Faults ---------------------------------------------------------------------


def test_worker_killed_while_inner_futures_compute(fault_cluster):
    scheduler_file, _, _ = fault_cluster
    with Client(scheduler_file=scheduler_file) as client:
        producer = client.submit(slow_producer, 8, 1.0, pure=False)
        outcome = in_thread(lambda: unnest.unwrap({"p": producer}, timeout=120))
        Event("children-started", client=client).wait(timeout=60)
        victim = next(iter(client.scheduler_info()["workers"]))
        os.kill(worker_pid(client, victim), signal.SIGKILL)
        assert outcome.result(timeout=120) == {"p": list(range(8))}


def hand_off_finished_children(n):
    client = get_client()
    children = [client.submit(inc, i, pure=False) for i in range(n)]
    wait(children)
    return unnest.hand_off(children)


def test_a_carrier_recomputed_after_its_worker_died_is_named(fault_cluster):
    scheduler_file, _, _ = fault_cluster
    with Client(scheduler_file=scheduler_file) as client:
        p = client.submit(hand_off_finished_children, 3, pure=False)
        old = p.result()  # the first run's children, as a consumer got them
        (carrier_worker,) = client.who_has(p)[p.key]
        os.kill(worker_pid(client, carrier_worker), signal.SIGKILL)
        # The scheduler recomputes the carrier, which hands off new children;
        # the first run's hold ends with it.
        assert unnest.unwrap(p, timeout=60) == [1, 2, 3]
        with pytest.raises(unnest.ForgottenFutureError) as info:
            unnest.unwrap(old, client=client, timeout=30)
        message = str(info.value)
        assert "recomputed" in message and "Unwrap the outer future again" in message


def test_only_copy_of_data_lost_is_a_fast_clear_error(fault_cluster):
    scheduler_file, _, _ = fault_cluster
    with Client(scheduler_file=scheduler_file) as client:
        victim = next(iter(client.scheduler_info()["workers"]))
        [data] = client.scatter([list(range(10))], workers=[victim])  # no recipe to recompute
        os.kill(worker_pid(client, victim), signal.SIGKILL)
        # Fast: the call ends with the loss, well before its own timeout.
        with pytest.raises(Exception) as info:
            unnest.unwrap({"data": [data]}, timeout=30)
        assert not isinstance(info.value, TimeoutError), info.value
        assert data.key in str(info.value) + "".join(getattr(info.value, "__notes__", []))


def test_scheduler_killed_while_waiting(fault_cluster):
    scheduler_file, scheduler, _ = fault_cluster
    with Client(scheduler_file=scheduler_file) as client:
        blocked = client.submit(wait_event, "never-scheduler", 0, pure=False)
        outcome = in_thread(lambda: unnest.unwrap({"x": blocked}, timeout=60))
        os.killpg(scheduler.pid, signal.SIGKILL)
        # The loss itself ends the call (its timeout would be a TimeoutError).
        with pytest.raises(Exception, match="scheduler-connection-lost") as info:
            outcome.result(timeout=30)
        assert "obj['x']" in info.value.__notes__[-1]


def test_client_closed_while_another_thread_waits(client):
    other = Client(client.scheduler.address)
    blocked = other.submit(wait_event, "never-closed", 0, pure=False)
    outcome = in_thread(lambda: unnest.unwrap([blocked], client=other, timeout=60))
    other.close()
    with pytest.raises(RuntimeError, match="client was closed") as info:
        outcome.result(timeout=30)
    assert blocked.key in str(info.value)


def test_futures_of_a_closed_client_are_named(client):
    with Client(client.scheduler.address) as other:
        theirs = other.submit(inc, 1)
        theirs.result()
    with pytest.raises(ValueError, match=rf"{theirs.key}.*obj\[0\].*closed client"):
        unnest.unwrap([theirs], client=client)


def test_futures_of_another_scheduler_are_named(client, cli_client):
    theirs = cli_client.submit(inc, 1)
    with pytest.raises(ValueError, match=rf"{theirs.key}.*obj\['a'\].*client of scheduler"):
        unnest.unwrap({"a": theirs}, client=client)


@pytest.mark.slow  # load: 10,000 futures
def test_failing_task_deep_in_10000_futures(client):
    futures = client.map(inc, range(9_999), pure=False)
    bad = client.submit(fail, 7, pure=False)
    structure = {"ok": [{"f": f} for f in futures[:5_000]], "deep": [tuple(futures[5_000:]), [bad]]}
    with pytest.raises(ZeroDivisionError, match="boom 7") as info:
        unnest.unwrap(structure)
    assert info.value.__notes__[-1].endswith("at obj['deep'][1][0]")
    wait(futures)
    assert {f.status for f in futures} == {"finished"}  # nothing of ours cancelled


# -- Bad input --------------------------------------------------------------------


class Raising:
    """Every protocol method raises: unnest must never call them on a leaf."""

    def __eq__(self, other):
        raise RuntimeError("__eq__")

    def __hash__(self):
        raise RuntimeError("__hash__")

    def __len__(self):
        raise RuntimeError("__len__")

    def __iter__(self):
        raise RuntimeError("__iter__")

    def __bool__(self):
        raise RuntimeError("__bool__")


class Liar:
    """Claims to be empty, equal to everything, and hashes differently each time."""

    def __eq__(self, other):
        return True

    def __hash__(self):
        return random.getrandbits(32)

    def __len__(self):
        return 0

    def __iter__(self):
        return iter(())


class Defaults(typing.NamedTuple):
    a: typing.Any
    b: typing.Any = "default"


@dataclasses.dataclass
class CustomInit:
    a: typing.Any
    hidden: typing.Any = dataclasses.field(init=False, default=None)

    def __init__(self, value, *, extra):
        self.a = value
        self.hidden = extra


class OddDict(dict):
    def __init__(self, *, required):
        super().__init__()
        self.required = required


awkward_leaves = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.just(float("nan")),
    st.floats(),
    st.text(max_size=3),
    st.builds(Raising),
    st.builds(Liar),
    st.none(),
)


def awkward_containers(children):
    def odd_dict(items):
        d = OddDict(required=len(items))
        d.update(items)
        return d

    return st.one_of(
        containers(children),
        st.tuples(children).map(lambda t: Defaults(*t)),
        st.tuples(children, children).map(lambda t: CustomInit(t[0], extra=t[1])),
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(odd_dict),
    )


def recursive_variant(obj):
    """Sometimes make the structure contain itself."""
    if isinstance(obj, list):
        obj.append(obj)
    elif isinstance(obj, dict) and type(obj) is dict:
        obj["self"] = obj
    return obj


awkward = st.tuples(
    st.recursive(awkward_leaves, awkward_containers, max_leaves=20), st.booleans()
).map(lambda t: recursive_variant(t[0]) if t[1] else t[0])


def small_int(obj):
    return type(obj) is int and abs(obj) < 1000


def same_or_equal_int(a, b):
    """Awkward leaves may raise on ``==``: ints by value, the rest by identity."""
    return a == b if type(a) is int else a is b


def is_acyclic(obj, stack=()):
    if isinstance(obj, (list, tuple, dict)):
        if any(obj is s for s in stack):
            return False
        values = obj.values() if isinstance(obj, dict) else obj
        return all(is_acyclic(v, (*stack, obj)) for v in values)
    return True


@given(awkward)
def test_awkward_input_nothing_to_resolve(obj):
    before = snapshot(obj)
    assert unnest.unwrap(obj) is obj
    assert snapshot(obj) == before  # never mutated


@given(awkward)
def test_awkward_input_with_futures_swapped_in(obj):
    assume(is_acyclic(obj))
    with_futures = swap_leaves(obj, done, small_int)
    before = snapshot(with_futures)
    result = unnest.unwrap(with_futures)
    assert snapshot(with_futures) == before
    assert same_types(result, obj, same_or_equal_int)


# -- Load -------------------------------------------------------------------------


@pytest.mark.slow
def test_many_futures_in_one_structure(client):
    # Computing while unwrap waits, fetched in several chunks; 100,000 in the
    # figures of the README (see its command).
    count = 5_000
    futures = client.map(inc, range(count), pure=False)
    structure = {"a": [{"x": f} for f in futures[: count // 2]], "b": tuple(futures[count // 2 :])}
    result = unnest.unwrap(structure)
    assert result["a"][-1] == {"x": count // 2} and result["b"][-1] == count


@pytest.mark.slow
def test_concurrent_unwraps_from_8_threads(client):
    futures = client.map(inc, range(200), pure=False)
    shared = [{"i": i, "fs": futures[i : i + 20]} for i in range(0, 200, 20)]
    expected = [{"i": i, "fs": list(range(i + 1, i + 21))} for i in range(0, 200, 20)]

    def fifty():
        return [unnest.unwrap(shared) for _ in range(50)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(lambda _: fifty(), range(8)) for r in batch]
    assert len(results) == 400 and all(r == expected for r in results)


def produce_ten(i):
    """Hand off ten children; every tenth producer cancels its first child after."""
    client = get_client()
    children = [client.submit(inc, 10 * i + j, pure=False) for j in range(10)]
    unnest.hand_off(children)
    if i % 10 == 1:
        client.cancel(children[0], force=True)
    return children


@unnest.resolving
def consume(values, delay):
    time.sleep(delay)
    return sum(values)


def consume_or_say_why(values):
    """A plain task: it gets the futures and says what unwrapping them raised."""
    try:
        return sum(unnest.unwrap(values, timeout=60))
    except Exception as e:
        return type(e).__name__


@pytest.mark.slow
def test_hand_off_under_churn(client):
    connect_worker_clients(client)  # producers cancel while the first ones connect
    watch_forgotten(client)
    producers = client.map(produce_ten, range(1_000), pure=False)
    rng = random.Random(0)
    # A tenth of the carriers are released before anyone takes their children over.
    early = [p for i, p in enumerate(producers) if i % 10 == 2]
    consumers = [
        client.submit(consume_or_say_why, p, pure=False)
        if i % 10 == 1
        else client.submit(consume, p, rng.uniform(0, 0.01), pure=False)
        for i, p in enumerate(producers)
        if i % 10 != 2
    ]
    raws = client.gather(early)  # their unbound futures, as a late consumer would get them
    del producers, early
    sums = client.gather(consumers)
    expected = [
        "FutureCancelledError" if i % 10 == 1 else sum(inc(10 * i + j) for j in range(10))
        for i in range(1_000)
        if i % 10 != 2
    ]
    assert sums == expected
    del consumers
    # Every producer, child and consumer, the released carriers' children too.
    assert wait_forgotten(client, made=1_000 * 11 + 900, timeout=60) == []
    errors = unnest.unwrap(raws, client=client, return_exceptions=True)
    assert all(
        isinstance(e, unnest.ForgottenFutureError) and "released" in str(e)
        for values in errors
        for e in values
    )
    assert hand_off_state(client)["holds"] == 0


@pytest.mark.slow
def test_unbound_future_of_a_forgotten_key_under_load(client):
    watch_forgotten(client)
    keys = [f.key for f in client.map(inc, range(50), pure=False)]  # dropped at once
    # All forgotten. (Not "the scheduler is empty": that can hold before the
    # map's update-graph, which travels on another connection, arrives.)
    assert wait_forgotten(client, keys) == []
    results = unnest.unwrap([Future(k) for k in keys[:3]], client=client, return_exceptions=True)
    assert all(isinstance(r, unnest.ForgottenFutureError) for r in results)
