"""hand_off and its take-over by unwrap, on multi-process clusters."""

import uuid

import dask
import pytest
from distributed import Client, Event, Future, get_client, wait
from distributed.client import FutureCancelledError
from helpers import in_thread, inc, wait_forgotten, watch_forgotten

import unnest
from unnest.handoff import hand_off_state


def producer(n, wait_children=False):
    """Hand off the futures of ``n`` children; optionally return once they finished."""
    client = get_client()
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    if wait_children:
        wait(futures)
    return unnest.hand_off({"xs": futures, "n": n})


async def async_producer(n):
    client = get_client()
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    return await unnest.hand_off_async({"xs": futures})


async def async_producer_blocking(n):
    client = get_client()
    return unnest.hand_off([client.submit(inc, i, pure=False) for i in range(n)])


@unnest.resolving
def levels(depth):
    """A future of a future of ... (``depth`` levels), handed off by ``resolving``."""
    if depth == 0:
        return "bottom"
    return [get_client().submit(levels, depth - 1, pure=False)]


def test_hand_off_then_unwrap(client):
    watch_forgotten(client)
    p = client.submit(producer, 5, pure=False)
    assert unnest.unwrap(p) == {"xs": [1, 2, 3, 4, 5], "n": 5}
    del p
    assert wait_forgotten(client, made=6) == []
    assert hand_off_state(client)["holds"] == 0


def test_hand_off_async_in_an_async_task(client):
    watch_forgotten(client)
    p = client.submit(async_producer, 3, pure=False)
    assert unnest.unwrap(p) == {"xs": [1, 2, 3]}
    del p
    assert wait_forgotten(client, made=4) == []


def test_blocking_hand_off_in_an_async_task_says_what_to_use(client):
    with pytest.raises(RuntimeError, match="hand_off_async"):
        client.submit(async_producer_blocking, 2, pure=False).result()


def test_futures_of_futures_of_futures(client):
    watch_forgotten(client)
    top = client.submit(levels, 4, pure=False)
    assert unnest.unwrap(top) == [[[["bottom"]]]]
    del top
    assert wait_forgotten(client, made=5) == []


def test_consumer_arriving_late_and_twice(client):
    watch_forgotten(client)
    p = client.submit(producer, 3, True, pure=False)
    raw = p.result()  # the children finished before the producer returned
    assert all(f.status is None for f in raw["xs"])  # unbound: what we are handed
    assert unnest.unwrap(p) == {"xs": [1, 2, 3], "n": 3}
    # The hold lasts as long as the result that carried it: again works.
    assert unnest.unwrap(raw, client=client) == {"xs": [1, 2, 3], "n": 3}
    del p, raw
    assert wait_forgotten(client, made=4) == []


def test_unconsumed_hand_off_ends_with_its_carrier(client):
    watch_forgotten(client)
    p = client.submit(producer, 4, True, pure=False)
    wait(p)
    assert hand_off_state(client)["holds"] == 1
    del p
    assert wait_forgotten(client, made=5) == []
    assert hand_off_state(client)["holds"] == 0


def test_carrierless_hold_ends_at_take_over(client):
    watch_forgotten(client)
    future = client.submit(inc, 1, pure=False)
    unnest.hand_off([Future(future.key)])  # unbound, outside a task: no carrier
    with Client(client.scheduler.address) as other:
        assert unnest.unwrap([Future(future.key)], client=other) == [2]
        assert hand_off_state(other)["holds"] == 0
    del future
    assert wait_forgotten(client, made=1) == []


def test_carrierless_hold_ends_after_its_ttl(client):
    watch_forgotten(client)
    future = client.submit(inc, 1, pure=False)
    with dask.config.set({"unnest.hand-off.ttl": "0.2s"}):
        unnest.hand_off({"f": Future(future.key)})  # unbound: held without a carrier
    del future  # only the hold keeps it now, until the time-to-live passes
    assert wait_forgotten(client, made=1) == []


def test_hand_off_of_unknown_keys_names_them(client):
    ghost = Future("never-submitted")  # unbound: what a task hands its caller
    with (
        dask.config.set({"unnest.hand-off.wait": "0.2s"}),
        pytest.raises(ValueError, match="never-submitted"),
    ):
        unnest.hand_off([ghost])


def test_forgotten_key_fails_at_once_with_the_plugin(client):
    watch_forgotten(client)
    future = client.submit(inc, 1, pure=False)
    key = future.key
    hand_off_state(client)  # installs the plugin: it sees the key forgotten
    future.result()
    del future
    assert wait_forgotten(client, [key]) == []
    # A grace of a minute: only knowing the key is forgotten can fail in time.
    with (
        dask.config.set({"unnest.forgotten-key-grace": "60s"}),
        pytest.raises(unnest.ForgottenFutureError, match=key),
    ):
        unnest.unwrap({"x": Future(key)}, client=client, timeout=20)


def test_hand_off_on_command_line_cluster(cli_client):
    watch_forgotten(cli_client)
    p = cli_client.submit(producer, 3, True, pure=False)
    assert unnest.unwrap(p) == {"xs": [1, 2, 3], "n": 3}
    top = cli_client.submit(levels, 3, pure=False)
    assert unnest.unwrap(top) == [[["bottom"]]]
    del p, top
    assert wait_forgotten(cli_client, made=8) == []


# -- Hand-off v2: cancel, direct calls, partial take-overs, reused keys, errors ----


def blocked_child(name):
    Event(f"{name}-started").set()
    Event(f"{name}-release").wait()
    return name


def hand_off_blocked(name):
    child = get_client().submit(blocked_child, name, pure=False)
    return unnest.hand_off({"child": child})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["cancel", "force", "force-from-another-client"])
def test_cancelling_a_handed_off_child_is_cancelled_at_once(client, how):
    name = f"cancel-{how}-{uuid.uuid4().hex[:6]}"
    p = client.submit(hand_off_blocked, name, pure=False)
    try:
        # A grace of a minute: only knowing the key was cancelled ends in time.
        with dask.config.set({"unnest.forgotten-key-grace": "60s"}):
            outcome = in_thread(lambda: unnest.unwrap({"p": p}, timeout=30))
            assert Event(f"{name}-started", client=client).wait(30)
            key = p.result()["child"].key
            if how == "force-from-another-client":
                with Client(client.scheduler.address) as other:
                    other.cancel([Future(key, other)], force=True)
            else:
                client.cancel([Future(key, client)], force=how == "force")
            with pytest.raises(FutureCancelledError) as info:
                outcome.result(timeout=20)
        assert info.value.key == key
        assert "at obj['p'].result()['child']" in info.value.__notes__[-1]
    finally:
        Event(f"{name}-release", client=client).set()


@unnest.resolving
def fan_out(n):
    client = get_client()
    return [client.submit(inc, i, pure=False) for i in range(n)]


@pytest.mark.timeout(60)
def test_direct_calls_in_the_client_process_hold_nothing(client):
    watch_forgotten(client)
    results = [fan_out(100) for _ in range(10)]  # a resolving function, called directly
    assert unnest.unwrap(results[0]) == list(range(1, 101))
    assert hand_off_state(client)["holds"] == 0
    del results
    assert wait_forgotten(client, made=1000) == []


@pytest.mark.timeout(60)
def test_a_carrierless_hold_lets_go_of_each_key_as_it_is_taken_over(client):
    watch_forgotten(client)
    p = client.submit(async_producer, 3, pure=False)
    raw = p.result()
    carrier = p.key
    del p  # the carrier result is released; the hold has no carrier anyway
    assert wait_forgotten(client, [carrier]) == []
    children = [f.key for f in raw["xs"]]
    assert client.run_on_scheduler(_held, keys=children) == children  # the hold keeps them
    values = [unnest.unwrap(f, client=client, timeout=20) for f in raw["xs"]]
    assert values == [1, 2, 3]
    del raw
    assert wait_forgotten(client, made=4) == []
    assert hand_off_state(client)["holds"] == 0


def _held(dask_scheduler, keys):
    return [key for key in keys if key in dask_scheduler.tasks]


def produce_pure(x):
    """Return the future of a pure key without handing it off."""
    return [get_client().submit(inc, x)]


@pytest.mark.timeout(120)
def test_a_pure_key_forgotten_once_and_submitted_again_is_waited_for(client):
    hand_off_state(client)  # install the plugin: it sees every key forgotten
    watch_forgotten(client)
    for i in range(20):
        x = 10_000 + i
        once = client.submit(inc, x)
        once.result()
        key = once.key
        del once
        assert wait_forgotten(client, [key]) == []  # forgotten: the plugin remembers the key
        # A producer submits the same pure key again and returns its future;
        # the consumer may ask before the producer's update-graph arrives.
        p = client.submit(produce_pure, x, pure=False)
        assert unnest.unwrap(p, timeout=30) == [x + 1]
        del p


@pytest.mark.timeout(60)
def test_a_released_carrier_is_named_not_a_missing_hand_off(client):
    watch_forgotten(client)
    p = client.submit(producer, 3, True, pure=False)
    raw = p.result()
    del p
    # The carrier, and the children with it, are gone.
    assert wait_forgotten(client, [f.key for f in raw["xs"]]) == []
    with pytest.raises(unnest.ForgottenFutureError) as info:
        unnest.unwrap(raw, client=client, timeout=20)
    message = str(info.value)
    assert "released" in message and "Keep the outer future" in message
    assert "hand_off(" not in message


def test_handoff_unavailable_is_public():
    assert issubclass(unnest.HandOffUnavailable, RuntimeError)
    assert "HandOffUnavailable" in unnest.__all__


def opaque_producer(n):
    """Pass the futures of ``n`` children on on purpose, in an ``unnest.quote``."""
    client = get_client()
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    return unnest.hand_off({"n": n, "later": unnest.quote(futures)})


def test_futures_inside_opaque_are_held_and_handed_on_as_futures(client):
    watch_forgotten(client)
    p = client.submit(opaque_producer, 3, pure=False)
    result = unnest.unwrap(p)
    futures = result["later"]
    assert result["n"] == 3 and all(isinstance(f, Future) for f in futures)
    assert hand_off_state(client)["holds"] == 1  # held although unwrap did not look inside
    assert unnest.unwrap(futures, client=client) == [1, 2, 3]
    del p, result, futures
    assert wait_forgotten(client, made=4) == []
