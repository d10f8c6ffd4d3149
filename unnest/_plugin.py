"""The scheduler side of the hand-off: the protocol, and the plugin that keeps it.

Imports nothing else of unnest; the client half is :mod:`unnest._protocol`,
and the request names below are shared with it. Kept apart so that importing
unnest does not import distributed: the scheduler imports this module when
the plugin is installed (so the scheduler needs unnest installed, as it needs
any library that the graphs it receives use).

The protocol
------------
A producer task hands off the futures it returns: it asks the plugin to
*hold* their keys before it returns. A consumer *takes over* keys: its client
comes to want them, and the plugin tells it which keys are gone and why.

A **hold** is a set of keys desired by the pseudo-client ``HOLDER``, with an
optional *carrier* (the task whose result carries the futures) and a timer.

=========  ================================================================
state      meaning
=========  ================================================================
live       its keys are desired by ``HOLDER`` (each key's hold count > 0)
ended      gone; its keys are no longer desired on its behalf
=========  ================================================================

Events of a hold:

* ``hold(keys, carrier)``: waits (bounded) for unknown keys; answers
  ``missing`` for keys still unknown (no hold), else makes a live hold.
  A carrier that already ended makes it end at once.
* carrier *released* (``memory -> released/forgotten`` with nobody wanting
  it), *recomputed* (released while still wanted: its worker was lost, it
  will run again and hand off new futures) or *erred*: every hold of that
  carrier ends.
* time-to-live (``unnest.hand-off.ttl``): the hold ends.
* take-over of some keys: a hold with a carrier is unchanged (the same
  result can be unwrapped twice, as long as it lives); a hold without a
  carrier lets go of *those keys only*, and ends when it has none left.

A **held key** is in the scheduler while any live hold or any client wants
it. Events of a key, besides the above:

* taken over: the consumer's client wants it (``client_desires_keys``);
* cancelled (a transition whose stimulus is ``cancel-key-...``), forgotten
  (all wanters gone), worker loss (recomputed while wanted: no change here);
* forgotten while held (``cancel(..., force=True)`` releases every wanter,
  ``HOLDER`` included): the key leaves its holds, and a hold left empty ends;
* re-submitted (``update_graph`` names it): a new incarnation of the key;
  everything remembered about the old one is dropped.

What the plugin remembers of a key that is gone: when it was forgotten and
*why* -- ``cancelled``, or the end of the hold that kept it (``carrier
released``, ``carrier recomputed``, ``carrier erred``, ``ttl``), else
nothing. It also remembers when each task last finished (went to memory),
to tell incarnations apart. Only what an answer needs, and bounded (each a
:class:`_Memory`): keys gone *with* a why, the newest ``_EXPLAINED`` of them
(an explanation is worth keeping); keys gone without one and finishing
times, the newest ``_RECENT`` and none older than ``_HORIZON`` seconds (they
only make an answer come at once rather than after the grace). What an
entry costs, and that the process levels off, is measured by
``benchmarks/soak.py`` (README.rst, Configuration).

A take-over answers, for each key that is not in the scheduler:

* **forgotten**, with its why, when the incarnation the consumer refers to is
  known to be gone: it was forgotten *after* the carrier the consumer found
  it in last finished (that result referred to this incarnation), or the
  consumer names no carrier (a bare future of the user's), or -- the
  carrier's finish no longer remembered -- it was held and its hold ended;
* **unknown** otherwise: a key the producer submitted just before it
  returned, whose ``update-graph`` travels on another connection than the
  carrier's result, or a key forgotten *before* the carrier that revealed it
  finished: an older incarnation, and the carrier's result refers to a newer
  one, which may still be on its way (issue 17: a pure key handed off and
  forgotten, then returned again by a later producer, failed at once with
  the old incarnation's "carrier released"). The consumer asks again within
  ``unnest.forgotten-key-grace``; ``hints`` says why the older incarnation
  went, for the error if the grace ends with the key still unknown (a
  carrier recomputed after its worker died is such a case).

Invariants (``tests/test_plugin.py`` checks them against a model over random
event orders): a key that a consumer may still take over -- held by a live
hold -- is in the scheduler; a key nobody holds or wants is released by the
scheduler at once, and a hold ends at its time-to-live at the latest; no
event order makes a handler or hook raise in the scheduler. Handlers are
request/response only and never raise: a stream handler that raises makes
distributed drop the client's connection and cancel all its futures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
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
# What the plugin remembers of keys (see "What the plugin remembers" above).
_EXPLAINED = 10_000  # keys gone with a why
_RECENT = 10_000  # keys gone without one, and finishing times ...
_HORIZON = 600.0  # ... for at most this many seconds
_ENDED = ("released", "forgotten", "erred")

# Why a key is gone, as the take-over reply says it.
CANCELLED = "cancelled"
CARRIER_RELEASED = "carrier released"
CARRIER_RECOMPUTED = "carrier recomputed"
CARRIER_ERRED = "carrier erred"
TTL = "ttl"


class _Hold:
    __slots__ = ("carrier", "keys", "timer")

    def __init__(self, keys: set[Any], carrier: Any, timer: Any):
        self.keys = keys
        self.carrier = carrier
        self.timer = timer


class _Memory:
    """Facts about keys, each with when it was learnt: the newest ``limit``, and
    none older than ``horizon`` seconds (None: no age limit)."""

    __slots__ = ("entries", "horizon", "limit")

    def __init__(self, limit: int, horizon: float | None = None):
        self.entries: collections.OrderedDict[Any, tuple[float, Any]] = collections.OrderedDict()
        self.limit = limit
        self.horizon = horizon

    def put(self, key: Any, value: Any = None) -> None:
        now = time.monotonic()
        entries = self.entries
        entries[key] = (now, value)
        entries.move_to_end(key)
        while len(entries) > self.limit:
            entries.popitem(last=False)
        self._expire(now)

    def get(self, key: Any) -> tuple[float, Any] | None:
        self._expire(time.monotonic())
        return self.entries.get(key)

    def pop(self, key: Any) -> None:
        self.entries.pop(key, None)

    def __len__(self) -> int:
        return len(self.entries)

    def _expire(self, now: float) -> None:
        if self.horizon is None:
            return
        entries = self.entries
        while entries:
            when, _ = next(iter(entries.values()))
            if now - when <= self.horizon:
                return
            entries.popitem(last=False)


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
        self.held: dict[Any, list[int]] = {}  # key -> live holds on it, oldest first
        self.carried: dict[Any, set[int]] = {}  # carrier key -> its live holds
        # Keys that are gone: key -> (when forgotten, why), with a why and without.
        self.explained = _Memory(_EXPLAINED)
        self.forgotten = _Memory(_RECENT, _HORIZON)
        # Why a held key lost its last hold, until it is forgotten (bounded by
        # the held keys: an entry goes when its key is forgotten or held again).
        self.unheld: dict[Any, str] = {}
        self.finished = _Memory(_RECENT, _HORIZON)  # key -> (when it last finished, None)
        self.waiting: dict[Any, list[asyncio.Future[None]]] = {}
        self.ids = itertools.count()
        scheduler.handlers[OP_HOLD] = self.hold
        scheduler.handlers[OP_TAKE_OVER] = self.take_over
        scheduler.handlers[OP_STATE] = self.state

    # -- hooks (never raise: see the module docstring) ---------------------------

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        try:
            for key in tasks:
                # A new incarnation: forget what we knew of the old one.
                self.explained.pop(key)
                self.forgotten.pop(key)
                self.unheld.pop(key, None)
                for waiter in self.waiting.pop(key, ()):
                    if not waiter.done():
                        waiter.set_result(None)
        except Exception:
            logger.exception("unnest: hand-off plugin update_graph failed")

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._transition(key, start, finish, str(kwargs.get("stimulus_id", "")))
        except Exception:
            logger.exception("unnest: hand-off plugin transition failed")

    def _transition(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        if finish == "memory":
            self.finished.put(key)
        elif finish == "forgotten":
            why = self.unheld.pop(key, None)
            if stimulus_id.startswith("cancel-key"):
                why = CANCELLED
            if why is None:
                self.explained.pop(key)
                self.forgotten.put(key)
            else:
                self.forgotten.pop(key)
                self.explained.put(key, why)
            if key in self.held:
                # Forgotten although held: cancelled with force=True, which
                # releases every wanter. Nobody can take it over any more.
                for hold_id in self.held.pop(key):
                    hold = self.holds.get(hold_id)
                    if hold is not None:
                        hold.keys.discard(key)
                        if not hold.keys:
                            self._release(hold_id, why)
        if finish in _ENDED and key in self.carried:
            if finish == "erred":
                why = CARRIER_ERRED
            else:
                ts = self.scheduler.tasks.get(key)
                wanted = ts is not None and (ts.who_wants or ts.waiters)
                why = CARRIER_RECOMPUTED if wanted else CARRIER_RELEASED
            for hold_id in list(self.carried.get(key, ())):
                self._release(hold_id, why)

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
        timer = loop.call_later(ttl, self._release, hold_id, TTL)
        self.holds[hold_id] = _Hold(set(keys), carrier, timer)
        for key in keys:
            self.held.setdefault(key, []).append(hold_id)
            self.unheld.pop(key, None)
        if carrier is not None:
            self.carried.setdefault(carrier, set()).add(hold_id)
        self.scheduler.client_desires_keys(keys=list(keys), client=HOLDER)
        ts = tasks.get(carrier) if carrier is not None else None
        if carrier is not None and (ts is None or ts.state in _ENDED):
            self._release(hold_id, CARRIER_RELEASED)  # the carrier ended while we waited
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

    def take_over(
        self, keys: list[Any], client: str, carriers: dict[Any, Any] | None = None
    ) -> dict[str, Any]:
        """Make ``client`` want ``keys``; say which are gone (and why) or unknown.

        ``carriers`` maps a key to the key of the result the consumer found
        it in, where it knows one.
        """
        scheduler = self.scheduler
        tasks = scheduler.tasks
        carriers = carriers or {}
        known = [k for k in keys if k in tasks]
        if known and client in scheduler.clients:
            scheduler.client_desires_keys(keys=known, client=client)
        for key in known:
            self._taken_over(key)
        forgotten = {}
        unknown = []
        hints = {}
        for key in keys:
            if key in tasks:
                continue
            gone = self.explained.get(key) or self.forgotten.get(key)
            if gone is None:
                unknown.append(key)
                continue
            when, why = gone
            carrier = carriers.get(key)
            if carrier is None:
                forgotten[key] = why
                continue
            # Is it the incarnation the carrier's result referred to?
            finished = self.finished.get(carrier)
            if finished is not None and when > finished[0]:
                forgotten[key] = why  # gone since that result was made
            elif finished is None and why is not None:
                forgotten[key] = why  # held, and its hold ended
            else:
                unknown.append(key)  # an older incarnation; a newer may come
                if why is not None:
                    hints[key] = why
        return {
            "status": "OK",
            "forgotten": list(forgotten),
            "why": forgotten,
            "unknown": unknown,
            "hints": hints,
        }

    def _taken_over(self, key: Any) -> None:
        """Holds without a carrier let go of ``key`` (and only of it)."""
        for hold_id in list(self.held.get(key, ())):
            hold = self.holds.get(hold_id)
            if hold is None or hold.carrier is not None:
                continue
            hold.keys.discard(key)
            if self._unhold(key, hold_id, None):
                self._let_go([key])
            if not hold.keys:
                self._release(hold_id, None)

    def state(self) -> dict[str, Any]:
        """What the plugin holds (for tests and diagnostics)."""
        return {
            "status": "OK",
            "holds": len(self.holds),
            "held_keys": sorted(map(str, self.held)),
            "carriers": sorted(map(str, self.carried)),
        }

    def _unhold(self, key: Any, hold_id: int, why: str | None) -> bool:
        """Drop ``hold_id`` from ``key``; whether that was its last hold."""
        ids = self.held.get(key)
        if ids is None:
            return False
        with contextlib.suppress(ValueError):
            ids.remove(hold_id)
        if ids:
            return False
        del self.held[key]
        if why is not None:
            self.unheld[key] = why
        return True

    def _let_go(self, keys: list[Any]) -> None:
        """``HOLDER`` no longer wants ``keys``."""
        if keys and HOLDER in self.scheduler.clients:
            try:
                self.scheduler.client_releases_keys(keys=keys, client=HOLDER)
            except Exception:  # never let a release take the scheduler down
                logger.exception("unnest: releasing hand-off keys failed")

    def _release(self, hold_id: int, why: str | None) -> None:
        """End a hold (see the module docstring for ``why``)."""
        hold = self.holds.pop(hold_id, None)
        if hold is None:
            return  # already ended: by take-over, carrier or time-to-live
        hold.timer.cancel()
        if hold.carrier is not None:
            carried = self.carried.get(hold.carrier)
            if carried is not None:
                carried.discard(hold_id)
                if not carried:
                    del self.carried[hold.carrier]
        self._let_go([key for key in hold.keys if self._unhold(key, hold_id, why)])
