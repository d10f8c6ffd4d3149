"""A placeholder met again after it resolved: the later meeting gets its value.

Each case orders the events so that the placeholder's value is known before
the value that contains it again arrives (no timing involved).
"""

import asyncio
import concurrent.futures
import sys

import dask
import pytest
from distributed import Client, Future, get_client, wait
from distributed.client import FutureCancelledError
from helpers import inc, wait_forgotten, watch_forgotten
from strategies import done

import unnest

# -- tasks (module level: workers import them by reference) -------------------


def hand_back(key):
    """Return a future of ``key`` (which the caller keeps alive), handed off."""
    return unnest.hand_off([Future(key, get_client())])


def produce_pure(x):
    """Hand back the child ``inc(x)``, submitted with its pure key."""
    return unnest.hand_off([get_client().submit(inc, x)])


# -- distributed futures --------------------------------------------------------


@pytest.mark.timeout(60)
def test_future_met_again_in_a_later_value(client):
    # f and g finish before the call, so they are fetched in one batch; f's
    # value is known when g's value, which holds f again, is walked.
    f = client.submit(inc, 1)
    g = client.submit(hand_back, f.key, pure=False)
    wait([f, g])
    assert unnest.unwrap([f, g], timeout=10) == [2, [2]]


@pytest.mark.timeout(60)
def test_two_producers_hand_back_the_same_pure_key(client):
    k = client.submit(inc, 10)  # the user holds the pure key the producers make
    p1 = client.submit(produce_pure, 10, pure=False)
    p2 = client.submit(produce_pure, 10, pure=False)
    box = client.submit(hand_back, p2.key, pure=False)  # p2 arrives one level later
    wait([k, p1, p2, box])
    assert p1.result()[0].key == p2.result()[0].key == k.key
    # p1's value brings the key; it resolves before p2's value brings it again.
    assert unnest.unwrap([p1, box], timeout=10) == [[11], [[11]]]


# -- concurrent futures ---------------------------------------------------------


@pytest.mark.timeout(30)
def test_concurrent_future_met_again_after_it_finished():
    f = done(1)
    g = done([f])  # taken after f: f has resolved when g's value is walked
    assert unnest.unwrap([f, g], timeout=5) == [1, [1]]


@pytest.mark.timeout(30)
def test_concurrent_future_met_again_when_set_later():
    f = done(1)
    g = concurrent.futures.Future()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(unnest.unwrap, [f, g], timeout=5)
        g.set_result({"again": f})
        assert result.result(timeout=20) == [1, {"again": 1}]


@pytest.mark.timeout(30)
def test_concurrent_future_met_again_async():
    import asyncio

    f = done("x")
    g = done((f, f))
    assert asyncio.run(unnest.unwrap_async([f, g], timeout=5)) == ["x", ("x", "x")]


# -- Delayed ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_delayed_returned_by_a_delayed_that_is_also_in_the_input():
    with pytest.raises(ValueError):
        Client.current()  # no distributed client: dask's threaded scheduler runs it
    d = dask.delayed(inc)(1)
    outer = dask.delayed(lambda: [d], pure=False)()  # returns the very same Delayed
    with dask.config.set(scheduler="threads"):
        # d and outer are computed together; d's value is known when outer's
        # value, which holds d again, is walked.
        assert unnest.unwrap([d, outer], timeout=5) == [2, [2]]


# -- found by hostile testing --


@pytest.mark.timeout(60)
def test_stale_and_new_future_of_a_reused_key_keep_their_own_outcomes(client):
    watch_forgotten(client)
    old = client.submit(inc, 1, key="unnest-test-reused")
    old.result()
    client.cancel(old)
    assert wait_forgotten(client, [old.key]) == []
    new = client.submit(inc, 1, key="unnest-test-reused")  # the key, reused
    assert new.result(timeout=10) == 2
    assert old.status == "cancelled"
    for structure in ([old, new], [new, old]):
        result = unnest.unwrap(structure, return_exceptions=True, timeout=10)
        outcome = dict(zip(map(id, structure), result))
        assert isinstance(outcome[id(old)], FutureCancelledError), result
        assert outcome[id(new)] == 2, result


@pytest.mark.timeout(30)
def test_container_met_again_in_a_later_value_comes_back_as_one_object():
    first = concurrent.futures.Future()
    later = concurrent.futures.Future()
    outer = [[first], later]  # outer[0] has one referrer while the input is walked

    async def main():
        loop = asyncio.get_running_loop()
        task = loop.create_task(unnest.unwrap_async(outer, timeout=5))
        # Run after the task's first step (the walk of the input), in order:
        loop.call_soon(lambda: later.set_result(outer[0]))  # now met twice
        loop.call_soon(first.set_result, 1)
        return await task

    result = asyncio.run(main())
    assert result == [[1], [1]]
    assert result[0] is result[1]  # one container referenced twice, as in the input


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's refcounts")
def test_the_refcount_gate_is_on_on_cpython():
    # Off, every container is memoized: right, but the walk takes twice as
    # long. A change to the walk once turned it off without a test failing.
    from unnest._graph import _memoizes, _refcount_gate, _shared_pair

    assert _refcount_gate() is sys.getrefcount
    assert _memoizes(_shared_pair)


# -- the graph alone: stand-in placeholders, no engine, no cluster -------------------
#
# Graph is driven by hand: the walk finds the placeholders (concurrent
# futures that are never set: stand-ins), and the test plays the engine,
# completing or failing their nodes in the order it chooses.


def stand_ins(n):
    return [concurrent.futures.Future() for _ in range(n)]


def test_graph_walk_finds_each_placeholder_once_and_fills_in_any_order():
    from unnest._graph import DONE, PENDING, RAISE, Graph

    a, b = stand_ins(2)
    shared = [b]
    obj = {"a": a, "s1": shared, "s2": (shared, 3)}
    done_calls = []
    graph = Graph(RAISE, on_done=lambda node, value: done_calls.append(value))
    assert graph.walk_input(obj) is graph.root
    nodes = {node.obj: node for node in graph.take_new()}
    assert set(nodes) == {a, b} and graph.discovered == 2
    assert nodes[b].state is PENDING
    graph.complete(nodes[b], "B")
    assert not graph.finished and nodes[b].state is DONE
    graph.complete(nodes[a], "A")
    assert graph.finished and done_calls == ["B", "A"]
    value = graph.root.value
    assert value == {"a": "A", "s1": ["B"], "s2": (["B"], 3)}
    assert value["s1"] is value["s2"][0]  # shared in, shared out
    assert obj == {"a": a, "s1": [b], "s2": ([b], 3)}  # the input is untouched


def test_graph_complete_returns_the_placeholders_a_value_holds():
    from unnest._graph import RAISE, Graph

    (a,) = stand_ins(1)
    inner = stand_ins(2)
    graph = Graph(RAISE)
    graph.walk_input([a])
    (node,) = graph.take_new()
    found = graph.complete(node, {"x": inner[0], "y": [inner[1], 1]})
    assert [n.obj for n in found] == inner
    assert [n.obj for n in graph.take_new()] == inner  # also queued for the engines
    assert graph.complete(found[0], 1) == [] and graph.complete(found[1], 2) == []
    assert graph.root.value == [{"x": 1, "y": [2, 1]}]


def test_graph_fail_names_the_place_or_puts_the_error_there():
    from unnest._graph import FAILED, RAISE, RETURN, Graph

    for errors in (RAISE, RETURN):
        return_exceptions = errors is RETURN
        a, b = stand_ins(2)
        graph = Graph(errors)
        graph.walk_input({"k": [1, a], "b": b})
        nodes = {node.obj: node for node in graph.take_new()}
        error = graph.fail(nodes[a], KeyError("boom"))
        assert nodes[a].state is FAILED
        if return_exceptions:
            assert error is None
            graph.complete(nodes[b], 2)
            assert isinstance(graph.root.value["k"][1], KeyError)
        else:
            assert error.__notes__ == ["raised by the concurrent.futures.Future at obj['k'][1]"]


def test_graph_value_that_holds_its_own_waiting_container_is_a_cycle():
    from unnest._graph import RAISE, Graph

    (a,) = stand_ins(1)
    box = [a]
    graph = Graph(RAISE)
    graph.walk_input({"box": box})
    (node,) = graph.take_new()
    with pytest.raises(ValueError, match=r"cycle at obj\['box'\]\[0\]\.result\(\)"):
        graph.complete(node, box)  # the box waits for a, and a's value is the box


def test_graph_placeholder_met_again_after_it_is_done_is_its_value():
    from unnest._graph import RAISE, Graph

    a, b = stand_ins(2)
    graph = Graph(RAISE)
    graph.walk_input([a, b])
    nodes = {node.obj: node for node in graph.take_new()}
    graph.complete(nodes[a], "A")
    assert graph.complete(nodes[b], [a, a]) == []  # a is done: no new node
    assert graph.root.value == ["A", ["A", "A"]]
