"""Hand-off: keep the futures a task returns alive until a consumer takes them over.

The problem
-----------
A task that submits children with ``get_client()`` and returns their futures
hands its caller bare keys: on a multi-process cluster the futures arrive
unbound, and the scheduler forgets the children as soon as the producing
task's own references drop -- usually before any consumer has asked for them.

Design
------
The protocol -- the states of a hold and of a held key, and every event that
moves them -- is written once, in :mod:`unnest._plugin` (the scheduler
half); :mod:`unnest._protocol` is the client half.

Producer side, :func:`hand_off`: finds the futures in the value, and asks the
scheduler to hold their keys before the task returns, naming the running
task as the hold's *carrier*. The request is answered only once every key is
known to the scheduler -- the children's ``update-graph`` travels on the
worker client's stream, not on this request's connection, so the handler
waits (bounded) for the keys to arrive. When the answer comes back the hold
is in place: confirmed, not hoped for. Outside a task, futures bound to a
live client of the user's need no hold and get none.

Consumer side (``unwrap``, see :mod:`unnest._wait_distributed`): for futures
it takes over by key, one take-over request per batch makes the scheduler
register the consumer's client as wanting each key, and answers which keys
are gone (and why) or not known yet. The consumer keeps its reference to the
carrier until that answer arrives, so the carrier cannot be released -- and
the hold with it -- in between.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from unnest import _distributed, _protocol
from unnest._runtime import CLOSED, config_seconds, in_loop_thread
from unnest.traverse import FUTURE, placeholders

__all__ = ["hand_off", "hand_off_async"]

T = TypeVar("T")


# ---------------------------------------------------------------------------
# The producer side


def _client_for(futures: list[Any]) -> Any:
    import distributed

    for future in futures:
        client = _distributed.owner(future)
        if client is not None:
            return client
    return distributed.get_client()


def _needs_hold(futures: list[Any], carrier: Any) -> bool:
    """Whether anything but the user's own references would keep ``futures``.

    Inside a task (a carrier) always. Elsewhere only futures that are unbound,
    or bound to a closed client or to a worker's client (a thread a task
    started, an ``async def`` task) need a hold: futures bound to a live
    client of the user's live exactly as long as the user keeps them, which
    is what they expect of a direct call in their own process.
    """
    if carrier is not None:
        return True
    for future in futures:
        client = _distributed.owner(future)
        if client is None or client.status in CLOSED or _distributed.is_worker_client(client):
            return True
    return False


def hand_off(obj: T) -> T:
    """Keep the futures in ``obj`` alive until a consumer takes them over.

    Call it in a task on the value the task is about to return. Every
    ``distributed.Future`` in ``obj`` (found with the same walk as
    :func:`unnest.unwrap`) is held on the scheduler, and the hold is
    confirmed before ``hand_off`` returns. ``unwrap`` on the consumer side
    takes the futures over; the hold ends when the task's result is released
    (or after ``unnest.hand-off.ttl``, default one hour). Functions wrapped
    by :func:`unnest.resolving` or :func:`unnest.resolves_nested` do this for
    you.

    Outside a task -- a direct call in the user's process -- futures bound
    to a live client of the user's need no hold and get none: they live as
    long as the user keeps them. Futures handed off where the worker does not
    know the running task (an ``async def`` task, a thread a task started)
    are held without a carrier: each key until a consumer takes it over, or
    the time-to-live.

    Parameters
    ----------
    obj : object
        The value the task returns.

    Returns
    -------
    object
        ``obj`` itself, unchanged.

    Raises
    ------
    ValueError
        Some futures are unknown to the scheduler (released or cancelled
        already); they are named.
    RuntimeError
        Called in the event loop thread of the futures' client (in an
        ``async def`` task): use :func:`hand_off_async` there.

    Examples
    --------
    >>> from unnest import hand_off
    >>> hand_off({"nothing": "to hold"})
    {'nothing': 'to hold'}

    In a task on a cluster:

    >>> from distributed import Client, get_client
    >>> from unnest import unwrap
    >>> def producer(n):
    ...     client = get_client()
    ...     return hand_off([client.submit(pow, 2, i) for i in range(n)])
    >>> client = Client()  # doctest: +SKIP
    >>> unwrap(client.submit(producer, 3))  # doctest: +SKIP
    [1, 2, 4]
    """
    to_hold = _to_hold(obj)
    if to_hold is None:
        return obj
    client, futures, carrier = to_hold
    if in_loop_thread(client.loop.asyncio_loop):
        raise RuntimeError(
            "hand_off() was called in the event loop thread of its client (an async "
            "task?); blocking there would deadlock. Use `await "
            "unnest.hand_off_async(...)` instead."
        )
    _check(client.sync(_hold, client, futures, carrier))
    return obj


async def hand_off_async(obj: T) -> T:
    """:func:`hand_off` for coroutines: async tasks and asynchronous clients.

    Parameters
    ----------
    obj : object
        The value the task returns.

    Returns
    -------
    object
        ``obj`` itself, unchanged.

    Examples
    --------
    >>> import asyncio
    >>> from unnest import hand_off_async
    >>> asyncio.run(hand_off_async(["nothing", "to hold"]))
    ['nothing', 'to hold']

    In an ``async def`` task:

    >>> from distributed import Client, get_client
    >>> from unnest import unwrap
    >>> async def producer(n):
    ...     client = get_client()
    ...     return await hand_off_async([client.submit(pow, 2, i) for i in range(n)])
    >>> client = Client()  # doctest: +SKIP
    >>> unwrap(client.submit(producer, 3))  # doctest: +SKIP
    [1, 2, 4]
    """
    to_hold = _to_hold(obj)
    if to_hold is None:
        return obj
    client, futures, carrier = to_hold
    hold = _hold(client, futures, carrier)
    if in_loop_thread(client.loop.asyncio_loop):
        reply = await hold
    else:  # a client whose loop runs in another thread
        reply = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(hold, client.loop.asyncio_loop)
        )
    _check(reply)
    return obj


def _to_hold(obj: Any) -> tuple[Any, list[Any], Any] | None:
    """What both hand-offs do first: ``(client, futures, carrier)`` to hold, or
    None when nothing in ``obj`` needs a hold."""
    futures = placeholders(obj, (FUTURE,))
    if not futures:
        return None
    carrier = _running_task_key()
    if not _needs_hold(futures, carrier):
        return None
    return _client_for(futures), futures, carrier


async def _hold(client: Any, futures: list[Any], carrier: Any) -> Any:
    if client.status in ("newly-created", "connecting"):
        await client  # an async task's worker client may still be starting
    return await _protocol.hold(
        client,
        list(dict.fromkeys(f.key for f in futures)),
        carrier=carrier,
        ttl=config_seconds("unnest.hand-off.ttl", "1h"),
        wait=config_seconds("unnest.hand-off.wait", "30s"),
    )


def _check(reply: dict[str, Any]) -> None:
    if reply["missing"]:
        raise ValueError(
            f"cannot hand off {len(reply['missing'])} future(s) the scheduler does not "
            f"know (released or cancelled already): {reply['missing'][:5]!r}"
        )


def _running_task_key() -> Any:
    import distributed

    try:
        return distributed.get_worker().get_current_task()
    except (ValueError, AttributeError, KeyError):
        # Not in a worker, or in an async task (it runs in the loop thread,
        # which the worker does not map to a task): a hold without carrier.
        return None


def hand_off_state(client: Any) -> dict[str, Any]:
    """What the scheduler's hand-off plugin holds now (tests, diagnostics)."""
    state: dict[str, Any] = client.sync(_protocol.state, client)
    return state
