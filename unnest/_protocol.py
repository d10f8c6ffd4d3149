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

from unnest._exceptions import HandOffUnavailable

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


async def _request(client: Any, op: str, /, **kwargs: Any) -> Any:
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
    reply = await getattr(client.scheduler, op)(**kwargs)
    if reply is None:
        raise HandOffUnavailable(f"the scheduler has no handler {op!r}")
    return reply


async def hold(client: Any, keys: list[Any], carrier: Any, ttl: float, wait: float) -> Any:
    """Ask the scheduler to hold ``keys``; answered once every key is known."""
    from unnest._plugin import OP_HOLD

    return await _request(client, OP_HOLD, keys=keys, carrier=carrier, ttl=ttl, wait=wait)


async def take_over(client: Any, keys: list[Any]) -> dict[str, Any]:
    """Make ``client`` want ``keys``; the reply lists forgotten and unknown keys."""
    from unnest._plugin import OP_TAKE_OVER

    return await _request(client, OP_TAKE_OVER, keys=keys, client=client.id)


async def state(client: Any) -> dict[str, Any]:
    """What the scheduler's hand-off plugin holds now."""
    from unnest._plugin import OP_STATE

    return await _request(client, OP_STATE)


def ask_on_stream(client: Any, key: Any) -> None:
    """Without the plugin: register interest in ``key`` and ask its state.

    Desire first, then report: the scheduler handles both in order on this
    client's stream, so a key it knows is now held for us and reported when
    done, and a key it does not know is answered with ``cancelled-keys``
    instead of silence.
    """
    client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
    client._send_to_scheduler({"op": "report-key", "key": key})
