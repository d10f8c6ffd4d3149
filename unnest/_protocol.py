"""The client half of the hand-off protocol: every request unnest sends.

The scheduler half, and the protocol itself, are in :mod:`unnest._plugin`;
request names are its constants. Requests are request/response only: a
stream message that the scheduler's handler does not know, or that raises
there, would make distributed drop the client's connection and cancel all
its futures.

* :func:`hold` -- the producer asks the scheduler to hold keys;
* :func:`take_over` -- the consumer asks it to make its client want keys, and
  learns which are forgotten or not known yet;
* :func:`state` -- what the plugin holds (tests, diagnostics).

The plugin is installed on first use, by whichever side needs it first, once
per client and scheduler (``register_plugin`` is idempotent for it). Where it
cannot be installed (unnest not importable on the scheduler)
:class:`~unnest.HandOffUnavailable` is raised; ``unwrap`` then falls back to
asking on its client's own stream, and ``hand_off`` fails with that error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from unnest import _distributed
from unnest._exceptions import ForgottenFutureError, HandOffUnavailable

logger = logging.getLogger("unnest.handoff")

_installed: dict[tuple[str, str], bool] = {}  # (client id, scheduler) -> ok


async def _ensure_plugin(client: Any) -> bool:
    """Install the hand-off plugin on the client's scheduler (idempotent)."""
    from unnest._plugin import PLUGIN_NAME, HandOffPlugin

    try:
        result = client.register_plugin(HandOffPlugin(), name=PLUGIN_NAME)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
    except Exception:
        logger.debug("unnest: cannot install the hand-off plugin", exc_info=True)
        return False
    return True


def available(client: Any) -> bool:
    """Whether the hand-off plugin is known to be installed for ``client``."""
    return _installed.get((client.id, client.scheduler.address), False)


async def _request(client: Any, op: str, /, **kwargs: Any) -> dict[str, Any]:
    """Call a handler of the hand-off plugin, installing the plugin first."""
    where = (client.id, client.scheduler.address)
    if where not in _installed:
        _installed[where] = await _ensure_plugin(client)
    if not _installed[where]:
        raise HandOffUnavailable(
            "the scheduler has no unnest hand-off plugin and it could not be "
            "installed: the scheduler needs unnest installed, as it needs any "
            "library that the graphs it receives use"
        )
    # distributed answers a request for a handler it lacks with None.
    reply: dict[str, Any] | None = await getattr(client.scheduler, op)(**kwargs)
    if reply is None:
        raise HandOffUnavailable(f"the scheduler has no handler {op!r}")
    return reply


async def hold(client: Any, keys: list[Any], carrier: Any, ttl: float, wait: float) -> Any:
    """Ask the scheduler to hold ``keys``; answered once every key is known."""
    from unnest._plugin import OP_HOLD

    return await _request(client, OP_HOLD, keys=keys, carrier=carrier, ttl=ttl, wait=wait)


async def take_over(
    client: Any, keys: list[Any], carriers: dict[Any, Any] | None = None
) -> dict[str, Any]:
    """Make ``client`` want ``keys``; the reply lists forgotten and unknown keys.

    ``carriers`` maps a key to the key of the result it was found in, where
    known: it tells the plugin which incarnation of a key the consumer means.
    The reply's ``why`` says why each forgotten key is gone (see
    :func:`gone_error`).
    """
    from unnest._plugin import OP_TAKE_OVER

    kwargs: dict[str, Any] = {"keys": keys, "client": client.id}
    if carriers:
        kwargs["carriers"] = carriers
    return await _request(client, OP_TAKE_OVER, **kwargs)


def gone_error(key: Any, place: str, why: str | None) -> BaseException:
    """The error for a key a take-over found gone, saying what happened."""
    from unnest import _plugin

    if why == _plugin.CANCELLED:
        from distributed.client import FutureCancelledError

        return FutureCancelledError(key, "cancelled")
    reason = {
        _plugin.CARRIER_RELEASED: (
            "It was handed off, but the result that carried it was released before "
            "unwrap took it over. Keep the outer future (the task's result) until "
            "unwrap returns."
        ),
        _plugin.CARRIER_RECOMPUTED: (
            "It was handed off, but the result that carried it was recomputed (its "
            "worker was lost) and the recomputed task handed off new futures. Unwrap "
            "the outer future again to resolve those."
        ),
        _plugin.CARRIER_ERRED: (
            "It was handed off, but the task that carried it failed afterwards."
        ),
        _plugin.TTL: (
            "It was handed off, but nobody took it over within unnest.hand-off.ttl "
            "(dask config), so its hold ended."
        ),
    }.get(why or "")
    return ForgottenFutureError(key, place, reason)


async def state(client: Any) -> dict[str, Any]:
    """What the scheduler's hand-off plugin holds now."""
    from unnest._plugin import OP_STATE

    return await _request(client, OP_STATE)


def ask_on_stream(client: Any, key: Any) -> bool:
    """Without the plugin: register interest in ``key`` and ask its state.

    On the client's own stream (:func:`unnest._distributed.send_desire_and_report`):
    False where that private way is not available.
    """
    return _distributed.send_desire_and_report(client, key)


def cannot_ask(key: Any, place: str) -> HandOffUnavailable:
    """The error for a future that can be neither taken over nor asked about."""
    return HandOffUnavailable(
        f"cannot resolve the future {key!r} at {place}: it is not bound to a live "
        "client, the scheduler has no unnest hand-off plugin to take it over "
        "(the scheduler needs unnest installed), and this distributed offers no "
        "other way to ask the scheduler for it"
    )
