"""hand_off and its take-over by unwrap, on multi-process clusters."""

import dask
import pytest
from distributed import Client, Future, get_client, wait
from helpers import keys_left

import unnest
from unnest.handoff import hand_off_state


def inc(x):
    return x + 1


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
    p = client.submit(producer, 5, pure=False)
    assert unnest.unwrap(p) == {"xs": [1, 2, 3, 4, 5], "n": 5}
    del p
    assert keys_left(client) == []
    assert hand_off_state(client)["holds"] == 0


def test_hand_off_async_in_an_async_task(client):
    p = client.submit(async_producer, 3, pure=False)
    assert unnest.unwrap(p) == {"xs": [1, 2, 3]}
    del p
    assert keys_left(client) == []


def test_blocking_hand_off_in_an_async_task_says_what_to_use(client):
    with pytest.raises(RuntimeError, match="hand_off_async"):
        client.submit(async_producer_blocking, 2, pure=False).result()


def test_futures_of_futures_of_futures(client):
    top = client.submit(levels, 4, pure=False)
    assert unnest.unwrap(top) == [[[["bottom"]]]]
    del top
    assert keys_left(client) == []


def test_consumer_arriving_late_and_twice(client):
    p = client.submit(producer, 3, True, pure=False)
    raw = p.result()  # the children finished before the producer returned
    assert all(f.status is None for f in raw["xs"])  # unbound: what we are handed
    assert unnest.unwrap(p) == {"xs": [1, 2, 3], "n": 3}
    # The hold lasts as long as the result that carried it: again works.
    assert unnest.unwrap(raw, client=client) == {"xs": [1, 2, 3], "n": 3}
    del p, raw
    assert keys_left(client) == []


def test_unconsumed_hand_off_ends_with_its_carrier(client):
    p = client.submit(producer, 4, True, pure=False)
    wait(p)
    assert hand_off_state(client)["holds"] == 1
    del p
    assert keys_left(client) == []
    assert hand_off_state(client)["holds"] == 0


def test_carrierless_hold_ends_at_take_over(client):
    future = client.submit(inc, 1, pure=False)
    unnest.hand_off([future])  # outside a task: no carrier
    with Client(client.scheduler.address) as other:
        assert unnest.unwrap([Future(future.key)], client=other) == [2]
        assert hand_off_state(other)["holds"] == 0
    del future
    assert keys_left(client) == []


def test_carrierless_hold_ends_after_its_ttl(client):
    future = client.submit(inc, 1, pure=False)
    with dask.config.set({"unnest.hand-off.ttl": "0.2s"}):
        unnest.hand_off({"f": future})
    del future  # only the hold keeps it now, until the time-to-live passes
    assert keys_left(client, timeout=30) == []


def test_hand_off_of_unknown_keys_names_them(client):
    ghost = Future("never-submitted", client)
    with (
        dask.config.set({"unnest.hand-off.wait": "0.2s"}),
        pytest.raises(ValueError, match="never-submitted"),
    ):
        unnest.hand_off([ghost])


def test_forgotten_key_fails_at_once_with_the_plugin(client):
    future = client.submit(inc, 1, pure=False)
    key = future.key
    hand_off_state(client)  # installs the plugin: it sees the key forgotten
    client.cancel(future)
    del future
    assert keys_left(client) == []
    # A grace of a minute: only knowing the key is forgotten can fail in time.
    with (
        dask.config.set({"unnest.forgotten-key-grace": "60s"}),
        pytest.raises(unnest.ForgottenFutureError, match=key),
    ):
        unnest.unwrap({"x": Future(key)}, client=client, timeout=20)


def test_hand_off_on_command_line_cluster(cli_client):
    p = cli_client.submit(producer, 3, True, pure=False)
    assert unnest.unwrap(p) == {"xs": [1, 2, 3], "n": 3}
    top = cli_client.submit(levels, 3, pure=False)
    assert unnest.unwrap(top) == [[["bottom"]]]
    del p, top
    assert keys_left(cli_client) == []


def opaque_producer(n):
    """Pass the futures of ``n`` children on on purpose, in an ``unnest.opaque``."""
    client = get_client()
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    return unnest.hand_off({"n": n, "later": unnest.opaque(futures)})


def test_futures_inside_opaque_are_held_and_handed_on_as_futures(client):
    p = client.submit(opaque_producer, 3, pure=False)
    result = unnest.unwrap(p)
    futures = result["later"]
    assert result["n"] == 3 and all(isinstance(f, Future) for f in futures)
    assert hand_off_state(client)["holds"] == 1  # held although unwrap did not look inside
    assert unnest.unwrap(futures, client=client) == [1, 2, 3]
    del p, result, futures
    assert keys_left(client) == []
