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
* A pending ref is waited on through ``ObjectRef.future()``: Ray's core
  worker fetches its value when it is ready, and the future's callback
  (in Ray's thread) queues it for the loop; values that arrive together are
  completed in one ``Call.batch``, so the batching follows the load, with no
  timer and no polling.
* A failed ref: ``ray.get`` of a list raises the first failure it meets and
  says not which; the chunk is halved until the failing ref is alone, and its
  exception (Ray's ``RayTaskError``, which is also an instance of the task's
  own exception class) goes to its node, which names the place.

Equal refs met as different objects share one wait and one fetch (``ray.wait``
takes unique refs). Nothing of the user's is cancelled (unnest never calls
``ray.cancel``); the call's end lets go of every callback it left with Ray.
Public API only: ``ray.wait``, ``ray.get`` and ``ObjectRef.future()``,
checked on Ray 2.60.0.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any

from unnest._caller import Caller
from unnest._graph import Node
from unnest._wait_local import in_thread

__all__ = ["FETCH_CHUNK", "RayWaiter"]

# Refs per ray.get: the fetch's transient memory stays that of a chunk.
FETCH_CHUNK = 2_000


class RayWaiter:
    """The Ray refs of one call: sorted, watched and fetched in batches."""

    def __init__(self, call: Caller):
        self.call = call
        self.nodes: dict[Any, list[Node]] = {}  # ref -> the nodes waiting for it
        self.fresh: list[Any] = []  # refs not sorted yet
        self.to_fetch: list[Any] = []  # ready refs
        self.fetching = False
        # Pending refs' futures done, with their refs: completed in one batch.
        self.arrived: collections.deque[tuple[Any, Any]] = collections.deque()
        # One slot per callback given to Ray: the callback holds this waiter
        # only through it, and aclose() empties it.
        self.slots: list[list[Any]] = []

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
        """Have the value of ``ref`` completed on the loop once Ray has it."""
        loop = self.call.running_loop
        slot: list[Any] = [self]
        self.slots.append(slot)

        def arrived(future: Any) -> None:  # in Ray's thread
            waiter = slot[0]
            if waiter is None or waiter.call.ended:
                return
            waiter.arrived.append((ref, future))
            if len(waiter.arrived) == 1:  # the first since the last drain: one wake-up
                with contextlib.suppress(RuntimeError):  # the loop is closed: call is over
                    loop.call_soon_threadsafe(waiter.call.guard(waiter.drain))

        ref.future().add_done_callback(arrived)

    def drain(self) -> None:
        """Complete the pending refs whose values arrived, together."""
        with self.call.batch():
            while self.arrived and not self.call.ended:
                ref, future = self.arrived.popleft()
                error = future.exception()
                value = None if error is not None else future.result()
                for node in self.nodes.pop(ref, ()):
                    if error is None:
                        self.call.complete(node, value)
                    else:
                        self.call.fail(node, error)

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
        """The call has ended: let go of every callback and every ref."""
        for slot in self.slots:
            slot[0] = None
        self.slots.clear()
        self.arrived.clear()
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
