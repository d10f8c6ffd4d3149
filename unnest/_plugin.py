"""The scheduler side of the hand-off (see :mod:`unnest.handoff`).

Imports nothing else of unnest; the client half is :mod:`unnest._protocol`.

Kept apart so that importing unnest does not import distributed: the
scheduler imports this module when the plugin is installed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

__all__ = ["HOLDER", "OP_HOLD", "OP_STATE", "OP_TAKE_OVER", "PLUGIN_NAME", "HandOffPlugin"]

logger = logging.getLogger("unnest.handoff")

PLUGIN_NAME = "unnest-hand-off"
HOLDER = "unnest-hand-off"  # the pseudo-client that desires held keys
# The scheduler handlers the plugin adds; the client half is unnest._protocol.
OP_HOLD = "unnest_hold"
OP_TAKE_OVER = "unnest_take_over"
OP_STATE = "unnest_hand_off_state"
_FORGOTTEN_MEMORY = 100_000  # recently forgotten keys the plugin remembers
_ENDED = ("released", "forgotten", "erred")


class _Hold:
    __slots__ = ("carrier", "keys", "timer")

    def __init__(self, keys: set[Any], carrier: Any, timer: Any):
        self.keys = keys
        self.carrier = carrier
        self.timer = timer


class HandOffPlugin(SchedulerPlugin):
    """Scheduler plugin holding handed-off keys (see the module docstring).

    Installed automatically by :func:`hand_off` and by ``unwrap``; it needs
    unnest importable on the scheduler. ``client.register_plugin(
    HandOffPlugin())`` installs it by hand.
    """

    name = PLUGIN_NAME
    idempotent = True

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.holds: dict[int, _Hold] = {}
        self.held: dict[Any, list[int]] = {}  # key -> holds on it, oldest first
        self.carried: dict[Any, set[int]] = {}  # carrier key -> its holds
        self.forgotten: collections.OrderedDict[Any, None] = collections.OrderedDict()
        self.waiting: dict[Any, list[asyncio.Future[None]]] = {}
        self.ids = itertools.count()
        scheduler.handlers[OP_HOLD] = self.hold
        scheduler.handlers[OP_TAKE_OVER] = self.take_over
        scheduler.handlers[OP_STATE] = self.state

    # -- hooks ---------------------------------------------------------------

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        if self.waiting:
            for key in tasks:
                for waiter in self.waiting.pop(key, ()):
                    if not waiter.done():
                        waiter.set_result(None)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten":
            self.forgotten[key] = None
            if len(self.forgotten) > _FORGOTTEN_MEMORY:
                self.forgotten.popitem(last=False)
        if finish in _ENDED and key in self.carried:
            for hold_id in list(self.carried.get(key, ())):
                self._release(hold_id)

    # -- handlers (request/response only; they never raise) ---------------------

    async def hold(
        self, keys: list[Any], carrier: Any = None, ttl: float = 3600, wait: float = 30
    ) -> dict[str, Any]:
        """Hold ``keys`` for ``ttl`` seconds at most, waiting ``wait`` for unknown ones."""
        tasks = self.scheduler.tasks
        unknown = [k for k in keys if k not in tasks]
        if unknown:
            await self._appear(unknown, wait)
        missing = [k for k in keys if k not in tasks]
        if missing:
            return {"status": "OK", "missing": missing}
        hold_id = next(self.ids)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(ttl, self._release, hold_id)
        self.holds[hold_id] = _Hold(set(keys), carrier, timer)
        for key in keys:
            self.held.setdefault(key, []).append(hold_id)
        if carrier is not None:
            self.carried.setdefault(carrier, set()).add(hold_id)
        self.scheduler.client_desires_keys(keys=list(keys), client=HOLDER)
        ts = tasks.get(carrier) if carrier is not None else None
        if carrier is not None and (ts is None or ts.state in _ENDED):
            self._release(hold_id)  # the carrier ended while we waited
        return {"status": "OK", "missing": [], "hold": hold_id}

    async def _appear(self, keys: list[Any], wait: float) -> None:
        loop = asyncio.get_running_loop()
        waiters = []
        for key in keys:
            waiter = loop.create_future()
            self.waiting.setdefault(key, []).append(waiter)
            waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.gather(*waiters), wait)
        except asyncio.TimeoutError:
            pass
        finally:
            for key, waiter in zip(keys, waiters):
                with contextlib.suppress(KeyError, ValueError):
                    self.waiting[key].remove(waiter)
                    if not self.waiting[key]:
                        del self.waiting[key]

    def take_over(self, keys: list[Any], client: str) -> dict[str, Any]:
        scheduler = self.scheduler
        tasks = scheduler.tasks
        known = [k for k in keys if k in tasks]
        if known and client in scheduler.clients:
            scheduler.client_desires_keys(keys=known, client=client)
        for key in known:
            for hold_id in list(self.held.get(key, ())):
                hold = self.holds.get(hold_id)
                if hold is not None and hold.carrier is None:
                    self._release(hold_id)
                    break
        missing = [k for k in keys if k not in tasks]
        return {
            "status": "OK",
            "forgotten": [k for k in missing if k in self.forgotten],
            "unknown": [k for k in missing if k not in self.forgotten],
        }

    def state(self) -> dict[str, Any]:
        """What the plugin holds (for tests and diagnostics)."""
        return {
            "status": "OK",
            "holds": len(self.holds),
            "held_keys": sorted(map(str, self.held)),
            "carriers": sorted(map(str, self.carried)),
        }

    def _release(self, hold_id: int) -> None:
        hold = self.holds.pop(hold_id, None)
        if hold is None:
            return  # already released: by take-over, carrier or time-to-live
        hold.timer.cancel()
        if hold.carrier is not None:
            carried = self.carried.get(hold.carrier)
            if carried is not None:
                carried.discard(hold_id)
                if not carried:
                    del self.carried[hold.carrier]
        unheld = []
        for key in hold.keys:
            ids = self.held.get(key)
            if ids is None:
                continue
            with contextlib.suppress(ValueError):
                ids.remove(hold_id)
            if not ids:
                del self.held[key]
                unheld.append(key)
        if unheld and HOLDER in self.scheduler.clients:
            try:
                self.scheduler.client_releases_keys(keys=unheld, client=HOLDER)
            except Exception:  # never let a release take the scheduler down
                logger.exception("unnest: releasing hand-off keys failed")
