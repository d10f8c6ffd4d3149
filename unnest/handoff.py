"""Hand-off: keep the futures a task returns alive until a consumer takes them over.

The problem
-----------
A task that submits children with ``get_client()`` and returns their futures
hands its caller bare keys: on a multi-process cluster the futures arrive
unbound, and the scheduler forgets the children as soon as the producing
task's own references drop -- usually before any consumer has asked for them.

Design
------
Scheduler side, ``unnest._plugin.HandOffPlugin`` (a ``SchedulerPlugin``, installed
once, idempotently, by the first producer or consumer that needs it; the
requests to it are in :mod:`unnest._protocol`):

* a *hold* makes a pseudo-client (``unnest-hand-off``) desire a set of keys,
  the same way ``publish_dataset`` keeps data alive;
* a hold made inside a task records that task as its *carrier*. It lasts as
  long as the carrier's result does -- so the same result can be unwrapped
  twice -- and is released when the carrier is released, forgotten or errs
  (seen in the plugin's ``transition`` hook), or when the time-to-live in
  dask's config ``unnest.hand-off.ttl`` passes, whichever comes first. A hold
  with no carrier (``hand_off`` called outside a task) ends at its first
  take-over or at the time-to-live;
* two request/response handlers: ``unnest_hold`` and ``unnest_take_over``.
  Nothing is sent as a fire-and-forget stream message, so nothing can close a
  connection: a stream handler that raises makes distributed drop the
  client's connection and cancel all its futures;
* a bounded memory of recently forgotten keys, so a consumer learns at once
  that a key is gone rather than waiting for it.

Producer side, :func:`hand_off`: finds the futures in the value, and asks the
scheduler to hold their keys before the task returns. The request is answered
only once every key is known to the scheduler -- the children's
``update-graph`` travels on the worker client's stream, not on this request's
connection, so the handler waits (bounded) for the keys to arrive. When the
answer comes back the hold is in place: confirmed, not hoped for.

Consumer side (``unwrap``, see :mod:`unnest.resolve`): for futures it takes
over by key, one ``unnest_take_over`` request per batch makes the scheduler
register the consumer's client as wanting each key (and report it, as
``client-desires-keys`` would), releases carrier-less holds, and answers
which keys are forgotten. The consumer keeps its reference to the carrier
until that answer arrives, so the carrier cannot be released -- and the
hold with it -- in between. Releasing tolerates holds that are gone.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from unnest import _protocol
from unnest._runtime import config_seconds, in_loop_thread
from unnest.traverse import FUTURE, placeholders

__all__ = ["hand_off", "hand_off_async"]

T = TypeVar("T")


# ---------------------------------------------------------------------------
# The producer side


def _client_for(futures: list[Any]) -> Any:
    import distributed

    for future in futures:
        if future._client is not None:
            return future._client
    return distributed.get_client()


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

    >>> def producer(n):  # doctest: +SKIP
    ...     client = distributed.get_client()
    ...     return hand_off([client.submit(inc, i) for i in range(n)])
    >>> unnest.unwrap(client.submit(producer, 3))  # doctest: +SKIP
    [1, 2, 3]
    """
    futures = placeholders(obj, (FUTURE,))
    if not futures:
        return obj
    client = _client_for(futures)
    if in_loop_thread(client.loop.asyncio_loop):
        raise RuntimeError(
            "hand_off() was called in the event loop thread of its client (an async "
            "task?); blocking there would deadlock. Use `await "
            "unnest.hand_off_async(...)` instead."
        )
    _check(client.sync(_hold, client, futures, _running_task_key()))
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

    >>> async def producer(n):  # doctest: +SKIP
    ...     client = distributed.get_client()
    ...     return await hand_off_async([client.submit(inc, i) for i in range(n)])
    """
    futures = placeholders(obj, (FUTURE,))
    if not futures:
        return obj
    client = _client_for(futures)
    hold = _hold(client, futures, _running_task_key())
    if in_loop_thread(client.loop.asyncio_loop):
        reply = await hold
    else:  # a client whose loop runs in another thread
        reply = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(hold, client.loop.asyncio_loop)
        )
    _check(reply)
    return obj


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
    return client.sync(_protocol.state, client)
