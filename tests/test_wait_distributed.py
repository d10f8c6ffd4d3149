"""Waiting through a distributed client, on a multi-process cluster."""

import contextlib
import gc
import logging
import threading
import traceback

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest
from dask.delayed import Delayed
from distributed import Client, Future, get_client, get_worker
from helpers import bounded, counting, fail, failed, inc, wait_forgotten, watch_forgotten
from strategies import done

import unnest
from unnest import _distributed

# -- tasks (module level: workers import them by reference) -------------------


def produce_bare(start, n):
    """Return the futures of pure children WITHOUT handing them off."""
    client = get_client()
    return [client.submit(inc, i) for i in range(start, start + n)]


def produce_handed(start, n):
    """The same pure children, handed off."""
    client = get_client()
    return unnest.hand_off([client.submit(inc, i) for i in range(start, start + n)])


# -- scheduler-side fault injection ----------------------------------------------

TAKE_OVER = "unnest_take_over"


def _break_handler(dask_scheduler, name):
    """Make the scheduler's handler ``name`` raise; keep the real one to restore."""
    if name not in dask_scheduler.handlers:
        return False
    saved = dask_scheduler.__dict__.setdefault("_unnest_test_saved", {})
    saved.setdefault(name, dask_scheduler.handlers[name])

    def broken(*args, **kwargs):
        raise RuntimeError(f"injected fault in the scheduler handler {name!r}")

    dask_scheduler.handlers[name] = broken
    return True


def _restore_handler(dask_scheduler, name):
    saved = dask_scheduler.__dict__.get("_unnest_test_saved", {})
    if name in saved:
        dask_scheduler.handlers[name] = saved.pop(name)


# -- helpers ----------------------------------------------------------------------


def close_quietly(client):
    """Close ``client`` if it still can (a client whose loop died cannot)."""

    def close():
        with contextlib.suppress(Exception):
            client.close(timeout=10)

    closing = threading.Thread(target=close, daemon=True)
    closing.start()
    closing.join(15)


@pytest.fixture
def no_gc():
    """The cyclic garbage collector paused for the test.

    What a call took over must be let go when the call ends, not whenever the
    collector happens to run; with it paused that is deterministic.
    """
    enabled = gc.isenabled()
    gc.disable()
    yield
    if enabled:
        gc.enable()


# -- BaseExceptions that are not Exceptions --------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["exit", "interrupt"])
def test_base_exception_of_a_concurrent_future_next_to_a_distributed_future(mp_cluster, exc):
    # A client of its own (its own loop thread, not the default client): if its
    # loop dies, only it is lost.
    client = Client(mp_cluster.scheduler_address, set_as_default=False)
    try:
        mine = client.submit(inc, 1)  # bound: the call runs on this client's loop
        with pytest.raises(type(exc)):
            bounded(lambda: unnest.unwrap([mine, failed(exc)], timeout=5), 15)
        assert bounded(lambda: client.submit(inc, 10).result(timeout=5), 15) == 11
        assert bounded(lambda: unnest.unwrap({"x": mine}, timeout=5), 15) == {"x": 2}
    finally:
        close_quietly(client)


# -- Exceptions of the engine's own coroutines -----------------------------------


@pytest.mark.timeout(60)
def test_a_failing_scheduler_request_fails_the_call_promptly(mp_client):
    # A real take-over installs the hand-off plugin and its handlers.
    assert unnest.unwrap(mp_client.submit(produce_handed, 100, 2, pure=False), timeout=20) == [
        101,
        102,
    ]
    assert mp_client.run_on_scheduler(_break_handler, name=TAKE_OVER), "no take-over handler"
    try:
        # A key the scheduler has not heard of: unnest asks about it, and the
        # call ends with that request's own error -- not with the timeout, nor
        # once the grace for an unknown key is over.
        ghost = Future("unnest-test-never-submitted")
        with (
            dask.config.set({"unnest.forgotten-key-grace": "1s"}),
            pytest.raises(RuntimeError, match=r"injected fault .* 'unnest_take_over'"),
        ):
            unnest.unwrap({"x": ghost}, client=mp_client, timeout=10)
    finally:
        mp_client.run_on_scheduler(_restore_handler, name=TAKE_OVER)


# -- A failed call leaves nothing that hangs a later one --------------------------


def _forgotten_children(client, start, n):
    """The unbound futures a producer returned, whose children are forgotten now."""
    watch_forgotten(client)
    producer = client.submit(produce_bare, start, n, pure=False)
    raw = producer.result()
    del producer  # its worker drops the children's last references
    assert wait_forgotten(client, [f.key for f in raw]) == []
    return raw


@pytest.mark.timeout(60)
def test_failed_call_leaves_no_futures_behind(mp_client, no_gc):
    raw = _forgotten_children(mp_client, 200, 3)
    keys = [f.key for f in raw]
    with pytest.raises(unnest.ForgottenFutureError):
        unnest.unwrap(raw, client=mp_client, timeout=20)
    mp_client.run_on_scheduler(lambda: None)  # a round trip: the loop runs a few times
    assert {key: mp_client.futures[key].status for key in keys if key in mp_client.futures} == {}
    # The same pure keys, submitted again by the user, compute.
    again = [mp_client.submit(inc, i) for i in range(200, 203)]
    assert [f.key for f in again] == keys
    assert [f.result(timeout=10) for f in again] == [201, 202, 203]


@pytest.mark.timeout(60)
def test_later_call_after_a_forgotten_future_error_resolves(mp_client, no_gc):
    raw = _forgotten_children(mp_client, 300, 3)
    with pytest.raises(unnest.ForgottenFutureError):
        unnest.unwrap(raw, client=mp_client, timeout=20)
    # Now the same pure keys are submitted again (by a producer that hands
    # them off) and are in memory: a later call gets their values.
    handed = mp_client.submit(produce_handed, 300, 3, pure=False)
    assert [f.key for f in handed.result()] == [f.key for f in raw]
    assert unnest.unwrap(handed, timeout=10) == [301, 302, 303]


# -- Collections resolved together ------------------------------------------------


@pytest.mark.timeout(60)
def test_collections_computed_together_keep_their_places_with_a_client(mp_client):
    x = da.arange(6, chunks=3)
    bag = db.from_sequence([1, 2, 3], npartitions=2)
    total, items, array = unnest.unwrap([x.sum(), bag, x], timeout=20)
    assert total == 15
    assert items == [1, 2, 3]
    np.testing.assert_array_equal(array, np.arange(6))
    result = unnest.unwrap({"bag": bag, "d": dask.delayed(inc)(1)}, timeout=20)
    assert result == {"bag": [1, 2, 3], "d": 2}


@pytest.mark.timeout(60)
def test_collections_on_a_local_scheduler_chosen_while_a_client_is_active(mp_client):
    # dask's config asks for the threaded scheduler: it computes locally, and
    # dask.compute(x.sum(), bag, x) swaps the bag's and the array's values.
    x = da.arange(6, chunks=3)
    bag = db.from_sequence([1, 2, 3], npartitions=2)
    with dask.config.set(scheduler="threads"):
        total, items, array = unnest.unwrap([x.sum(), bag, x], timeout=20)
    assert total == 15
    assert items == [1, 2, 3]
    np.testing.assert_array_equal(array, np.arange(6))


# -- Batches -------------------------------------------------------------------


def returns_delayed(i):
    """A task whose value is a Delayed."""
    return dask.delayed(inc)(i)


@pytest.mark.timeout(60)
@pytest.mark.skipif(
    not _distributed.fast(), reason="the chunks of the fast path's scheduler requests"
)
def test_finished_futures_are_fetched_in_chunks(mp_client):
    from unnest._wait_distributed import FETCH_CHUNK

    count = 2 * FETCH_CHUNK + 7
    futures = mp_client.map(inc, range(count), pure=False)
    mp_client.gather(futures)
    with counting(mp_client.scheduler, "gather", arg="keys") as gathers:
        result = unnest.unwrap({"fs": [[f] for f in futures]})
    assert result == {"fs": [[i + 1] for i in range(count)]}
    assert sorted(gathers) == [7, FETCH_CHUNK, FETCH_CHUNK]


@pytest.mark.timeout(60)
def test_a_client_that_gathers_from_workers_directly_still_does(mp_cluster):
    with Client(mp_cluster, direct_to_workers=True) as direct:
        futures = direct.map(inc, range(50), pure=False)
        direct.gather(futures)
        with (
            counting(direct.scheduler, "gather", arg="keys") as via_scheduler,
            counting(direct, "_gather") as gathers,
        ):
            assert unnest.unwrap({"fs": futures}) == {"fs": list(range(1, 51))}
        assert via_scheduler == [] and gathers == [50]


@pytest.mark.timeout(60)
def test_delayed_found_in_one_fetched_batch_are_submitted_together(mp_client):
    # Finished before unwrap starts: their values (Delayed) arrive in one
    # batch and are submitted as one graph (Client.get), not one each.
    outer = mp_client.map(returns_delayed, range(30), pure=False)
    mp_client.gather(outer, direct=False)  # Delayed values travel fine; just wait
    with (
        counting(mp_client, "get", arg=1) as submissions,
        counting(mp_client, "compute") as computes,
    ):
        assert unnest.unwrap(outer) == [i + 1 for i in range(30)]
    assert submissions == [30] and computes == []


def where_am_i(_):
    return get_worker().address


def returns_pinned_delayed(address):
    """A task whose value is a Delayed annotated to run on ``address``."""
    with dask.annotate(workers=[address], allow_other_workers=False):
        return dask.delayed(where_am_i)(None)


@pytest.mark.timeout(60)
def test_delayed_submitted_as_one_graph_keep_what_dask_compute_keeps(mp_client):
    workers = sorted(mp_client.scheduler_info()["workers"])
    future = mp_client.submit(inc, 41, pure=False)
    x = da.arange(6, chunks=2)
    chunk = x.to_delayed()[1]  # its graph holds the whole array
    same = dask.delayed(inc)(1, dask_key_name="the-same-key")
    again = dask.delayed(inc)(1, dask_key_name="the-same-key")  # another object, one key
    # A Delayed made by hand on a plain dict of old-style tasks.
    raw = Delayed("raw-graph-key", {"raw-graph-key": (inc, 1), "unused": (fail, 0)})
    with counting(mp_client, "get", arg=1) as submissions:
        result = unnest.unwrap(
            {
                "future inside": dask.delayed(inc)(future),
                "chunk": chunk,
                "same": [same, again],
                "raw": raw,
                # Annotations made where the Delayed is built, inside a task.
                "pinned": [
                    mp_client.submit(returns_pinned_delayed, w, pure=False) for w in workers
                ],
            }
        )
    assert result["future inside"] == 43
    np.testing.assert_array_equal(result["chunk"], [2, 3])
    assert result["same"] == [2, 2]
    assert result["raw"] == 2
    assert result["pinned"] == workers
    assert sum(submissions) == 7  # one key each, "the-same-key" twice
    assert future.status == "finished"  # the user's future is used, not taken


@pytest.mark.timeout(60)
def test_delayed_with_fusing_configured_go_through_client_compute(mp_client):
    with (
        dask.config.set({"optimization.fuse.delayed": True}),
        counting(mp_client, "compute") as computes,
        counting(mp_client, "get", arg=1) as submissions,
    ):
        assert unnest.unwrap([dask.delayed(inc)(dask.delayed(inc)(1))]) == [3]
    assert computes == [1] and submissions == []


# -- Errors ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_erred_future_is_not_pinned_by_the_error_unwrap_raised(mp_client):
    watch_forgotten(mp_client)
    f = mp_client.submit(fail, 1, pure=False)
    key = f.key
    with pytest.raises(ZeroDivisionError) as info:
        unnest.unwrap([f])
    kept = f._state.exception
    error = info.value
    assert error is not kept and type(error) is type(kept) and error.args == kept.args
    assert "raised by the future" in "".join(error.__notes__)
    assert not getattr(kept, "__notes__", None)  # the note is on the copy only
    assert any(frame.name == "fail" for frame in traceback.extract_tb(error.__traceback__))
    del f, info, kept, error
    # Before, the error raised was the one the client keeps for the key, and
    # its traceback (through unwrap's frame, which holds the structure) kept
    # the future alive for as long as the client lived: the key never went.
    assert wait_forgotten(mp_client, [key]) == []


# -- one bad result, and a fetch that outlives its call (issue 17) --------------------


def unserializable(tag):
    return {"lock": threading.Lock(), "tag": tag}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("direct", [False, True], ids=["via-scheduler", "direct-to-workers"])
def test_a_result_that_cannot_be_serialized_fails_at_its_own_place(mp_cluster, direct):
    # Issue 17, bug 5: the fetch of a chunk failed whole, without a place;
    # return_exceptions raised; the stream yielded none of the good pairs.
    with Client(mp_cluster, direct_to_workers=direct) as client:
        obj = {f"good{i}": [client.submit(inc, i)] for i in range(5)}
        obj["bad"] = client.submit(unserializable, "x", pure=False)
        good = {f"good{i}": [i + 1] for i in range(5)}
        with pytest.raises(TypeError, match="Could not serialize") as info:
            unnest.unwrap(obj)
        assert info.value.__notes__[-1] == (
            f"raised by the future {obj['bad'].key!r} at obj['bad']"
        )
        placed = unnest.unwrap(obj, return_exceptions=True)
        assert isinstance(placed.pop("bad"), TypeError)
        assert placed == good
        pairs = dict(unnest.as_resolved(obj, return_exceptions=True))
        assert isinstance(pairs.pop(("bad",)), TypeError)
        assert pairs == {(k, 0): v[0] for k, v in good.items()}


def _gate_gather(dask_scheduler):
    """Hold every scheduler ``gather`` request at the door until the gate opens."""
    import asyncio

    gate = dask_scheduler._unnest_test_gate = {
        "entered": asyncio.Event(),
        "open": asyncio.Event(),
        "original": dask_scheduler.handlers["gather"],
        "errors": [],
    }

    async def gated(*args, **kwargs):
        gate["entered"].set()
        await gate["open"].wait()
        return await gate["original"](*args, **kwargs)

    class Errors(logging.Handler):
        def emit(self, record):
            gate["errors"].append(record.getMessage())

    gate["handler"] = Errors(logging.ERROR)
    logging.getLogger("distributed.scheduler").addHandler(gate["handler"])
    dask_scheduler.handlers["gather"] = gated


async def _gather_entered(dask_scheduler):
    await dask_scheduler._unnest_test_gate["entered"].wait()


def _open_gate(dask_scheduler, keys):
    """Open the gate; say which of ``keys`` the scheduler still has."""
    gate = dask_scheduler._unnest_test_gate
    gate["open"].set()
    return [key for key in keys if key in dask_scheduler.tasks]


def _remove_gate(dask_scheduler):
    gate = dask_scheduler.__dict__.pop("_unnest_test_gate")
    dask_scheduler.handlers["gather"] = gate["original"]
    logging.getLogger("distributed.scheduler").removeHandler(gate["handler"])
    return gate["errors"]


@pytest.mark.timeout(60)
def test_a_fetch_in_flight_when_a_stream_closes_is_answered_before_its_keys_go(mp_client):
    # Issue 17, bug 10: closing a stream while a fetch was on its way
    # released the fetched keys first; the scheduler then logged an ERROR
    # ("Couldn't gather keys ... forgotten") for a clean early exit.
    watch_forgotten(mp_client)
    computed = dask.delayed(inc, pure=False)(1)  # computed by unnest: its future is unnest's
    stream = unnest.as_resolved({"ready": done(0), "computed": computed})
    mp_client.run_on_scheduler(_gate_gather)
    try:
        assert next(stream) == (("ready",), 0)
        mp_client.run_on_scheduler(_gather_entered)  # the fetch of `computed` is on its way
        stream.close()
        # The call is over, but its request is not answered: unnest's future
        # of the key is still held (a release would have left client.futures
        # before close() returned).
        assert computed.key in mp_client.futures
        assert mp_client.run_on_scheduler(_open_gate, keys=[computed.key]) == [computed.key]
        assert wait_forgotten(mp_client, [computed.key]) == []
    finally:
        errors = mp_client.run_on_scheduler(_remove_gate)
    assert errors == []
