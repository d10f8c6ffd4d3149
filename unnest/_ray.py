"""Waiting on Ray's ``ObjectRef`` in batches; the one door to Ray.

Design
------
One :class:`RayWaiter` per call (the engine of the built-in Ray placeholder,
:mod:`unnest._placeholders`), on the call's loop:

* The refs a walk found arrive together (``Call.start`` hands on everything
  one walk found, and the values of one fetched chunk are walked in one
  ``Call.batch``). One ``ray.wait(refs, num_returns=len(refs), timeout=0,
  fetch_local=False)`` sorts them into ready and pending, without waiting.
* Ready refs are fetched with one ``ray.get(list)`` per chunk of
  :data:`FETCH_CHUNK`, in a thread of its own (a get may bring objects from
  other nodes: never on the loop), and their values are completed in one
  ``Call.batch``, so the refs those values hold arrive together in turn:
  N ready refs cost N / FETCH_CHUNK round trips, not N, at every depth.
* A pending ref gets a readiness callback (from Ray's thread, handed to the
  loop thread-safely); refs that become ready while a fetch is on its way
  queue up and go in the next one, so the batching follows the load, with
  no timer and no polling.
* A failed ref: ``ray.get`` of a list raises the first failure it meets and
  says not which; the chunk is halved until the failing ref is alone, and its
  exception (Ray's ``RayTaskError``, which is also an instance of the task's
  own exception class) goes to its node, which names the place.

Equal refs met as different objects share one wait and one fetch (``ray.wait``
takes unique refs). Nothing of the user's is cancelled (unnest never calls
``ray.cancel``); the call's end drops every readiness callback.

Ray's private parts used here (the one door to them): ``ObjectRef._on_ready``
(Ray 2.60.0), a readiness callback that neither fetches nor deserializes the
object and can be cancelled. The public fallback, chosen by a feature check
or with ``UNNEST_PUBLIC_ONLY=1``: ``ObjectRef.future()``, whose concurrent
future fetches the value by itself; it is used as the signal only, and the
value is fetched again with the batch, from the local store.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from unnest._caller import Caller
from unnest._graph import Node
from unnest._wait_local import in_thread

__all__ = ["FETCH_CHUNK", "RayWaiter"]

# Refs per ray.get: the fetch's transient memory stays that of a chunk.
FETCH_CHUNK = 2_000


def _fast() -> bool:
    """Use ``ObjectRef._on_ready`` (see the module docstring)?"""
    import ray

    if os.environ.get("UNNEST_PUBLIC_ONLY", "") not in ("", "0"):
        return False
    return callable(getattr(ray.ObjectRef, "_on_ready", None))


class RayWaiter:
    """The Ray refs of one call: sorted, watched and fetched in batches."""

    def __init__(self, call: Caller):
        self.call = call
        self.nodes: dict[Any, list[Node]] = {}  # ref -> the nodes waiting for it
        self.fresh: list[Any] = []  # refs not sorted yet
        self.to_fetch: list[Any] = []  # ready refs
        self.fetching = False
        self.fast = _fast()
        # One slot per readiness callback given to Ray: the callback holds
        # this waiter only through it, and aclose() empties it.
        self.slots: list[list[Any]] = []
        self.cancels: list[Any] = []

    def add(self, node: Node) -> None:
        ref = node.obj
        waiting = self.nodes.get(ref)
        if waiting is not None:
            waiting.append(node)
            return
        self.nodes[ref] = [node]
        if not self.fresh:  # one sort per loop iteration
            self.call.running_loop.call_soon(self.call.guard(self._sort))
        self.fresh.append(ref)

    def _sort(self) -> None:
        import ray

        refs, self.fresh = self.fresh, []
        if self.call.ended or not refs:
            return
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        for ref in pending:
            self._watch(ref)
        self._queue(ready)

    def _watch(self, ref: Any) -> None:
        """Have ``_became_ready(ref)`` called on the loop once ``ref`` is ready."""
        loop = self.call.running_loop
        slot: list[Any] = [self]
        self.slots.append(slot)

        def ready(*_: Any) -> None:  # in Ray's thread
            waiter = slot[0]
            if waiter is None or waiter.call.ended:
                return
            with contextlib.suppress(RuntimeError):  # the loop is closed: call is over
                loop.call_soon_threadsafe(waiter.call.guard(waiter._queue), [ref])

        if self.fast:
            self.cancels.append(ref._on_ready(ready))
        else:
            ref.future().add_done_callback(ready)

    def _queue(self, refs: list[Any]) -> None:
        if not refs or self.call.ended:
            return
        self.to_fetch += refs
        if not self.fetching:
            self.fetching = True
            self.call.group.spawn(self._fetcher())

    async def _fetcher(self) -> None:
        try:
            while self.to_fetch and not self.call.ended:
                refs = self.to_fetch[:FETCH_CHUNK]
                del self.to_fetch[:FETCH_CHUNK]
                outcomes = await in_thread(_get, refs)
                with self.call.batch():
                    for ref, (value, error) in zip(refs, outcomes):
                        for node in self.nodes.pop(ref, ()):
                            if error is None:
                                self.call.complete(node, value)
                            else:
                                self.call.fail(node, error)
                        if self.call.ended:
                            return
        finally:
            self.fetching = False

    async def aclose(self) -> None:
        """The call has ended: drop every readiness callback and every ref."""
        for cancel in self.cancels:
            with contextlib.suppress(Exception):  # Ray shut down meanwhile
                cancel()
        for slot in self.slots:
            slot[0] = None
        self.cancels.clear()
        self.slots.clear()
        self.nodes.clear()
        self.fresh.clear()
        self.to_fetch.clear()


def _get(refs: list[Any]) -> list[tuple[Any, BaseException | None]]:
    """``(value, None)`` or ``(None, error)`` for each of ``refs``, in order."""
    import ray

    try:
        return [(value, None) for value in ray.get(refs)]
    except Exception as e:  # the first failure: find each one's
        if len(refs) == 1:
            return [(None, e)]
        half = len(refs) // 2
        return _get(refs[:half]) + _get(refs[half:])
