"""Waiting without a distributed client: concurrent futures and local dask.

* ``concurrent.futures.Future``: its done callback hands the future to the
  call's loop with ``call_soon_threadsafe``. Futures that are already done
  are queued and taken in a loop, not by recursion (a chain of 100,000
  of them must not overflow the stack). This is also how concurrent futures
  are waited on in calls that do have a client: they are loop-agnostic.
* dask collections, when no client applies: ``dask.compute`` on the
  configured scheduler, in an executor thread, one call per batch of
  collections that :func:`batches` deems safe to compute together.

Invariants: every callback that runs user code (a future's result, the walk
of its value) runs inside the call's error boundary (``Call.complete`` /
``Call.fail`` catch ``BaseException``); nothing reaches the loop. A
computation that is already running in a thread cannot be stopped: when the
call ends first, its result is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
from typing import Any

from unnest._exceptions import add_note
from unnest._graph import PENDING, Node, where


def batches(nodes: list[Node]) -> list[list[Node]]:
    """Collection nodes grouped into what one ``compute`` may take at once.

    Only collections of one type go together: ``dask.compute(x.sum(), bag,
    x)`` returns the bag's and the array's results swapped (a dask bug seen
    on every scheduler), and a bag beside an array or a ``Delayed`` has no
    common default scheduler. One type at a time keeps the batching that
    makes a thousand ``Delayed`` one graph, and never reorders results.
    """
    groups: dict[type, list[Node]] = {}
    for node in nodes:
        groups.setdefault(type(node.obj), []).append(node)
    return list(groups.values())


class LocalWaiter:
    """Concurrent futures, and dask collections computed without a client."""

    def __init__(self, call: Any):
        # `call` is the unnest.resolve.Call this waiter serves (see above).
        self.call = call
        self.ready: collections.deque[tuple[Node, Any]] = collections.deque()
        self.draining = False

    # -- concurrent.futures.Future ---------------------------------------------

    def add_concurrent(self, node: Node) -> None:
        future = node.obj
        if future.done():
            self.ready.append((node, future))
            return
        loop = self.call.loop
        call = self.call

        def done(f: Any) -> None:
            if call.ended:
                return
            with contextlib.suppress(RuntimeError):  # the loop is closed: call is over
                loop.call_soon_threadsafe(call.guard(self._concurrent_done), node, f)

        future.add_done_callback(done)

    def drain(self) -> None:
        """Take the concurrent futures that were done when found."""
        if self.draining:
            return
        self.draining = True
        try:
            while self.ready and not self.call.ended:
                self._concurrent_done(*self.ready.popleft())
        finally:
            self.draining = False

    def _concurrent_done(self, node: Node, f: Any) -> None:
        if node.state is not PENDING or self.call.ended:
            return
        if f.cancelled():
            self.call.fail(node, concurrent.futures.CancelledError())
            return
        exc = f.exception()
        if exc is not None:
            self.call.fail(node, exc)
        else:
            self.call.complete(node, f.result())

    # -- dask collections --------------------------------------------------------

    def compute(self, nodes: list[Node]) -> None:
        for batch in batches(nodes):
            self.call.group.spawn(self._compute(batch))

    async def _compute(self, batch: list[Node]) -> None:
        import dask

        collections = [node.obj for node in batch]
        loop = asyncio.get_running_loop()
        try:
            values = await loop.run_in_executor(None, _compute, dask, collections)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the loop must never see it
            if len(batch) == 1:
                self.call.fail(batch[0], e)
                return
            if not self.call.graph.return_exceptions:
                places = ", ".join(where(node) for node in batch)
                self.call.end(
                    add_note(e, f"raised while computing the dask collections at {places}")
                )
                return
            # dask does not say which one failed: compute one by one to put
            # each exception in its place.
            for node in batch:
                self.call.group.spawn(self._compute([node]))
            return
        for node, value in zip(batch, values):
            self.call.complete(node, value)


def _compute(dask: Any, collections: list[Any]) -> Any:
    # In the executor thread. A BaseException here (SystemExit in a task, say)
    # is carried back to the loop by the executor's future like any other.
    return dask.compute(*collections)
