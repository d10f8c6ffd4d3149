"""Waiting without a distributed client: concurrent futures and local dask.

* ``concurrent.futures.Future``: its done callback hands the future to the
  call's loop with ``call_soon_threadsafe``. Futures that are already done
  are queued and taken in a loop, not by recursion (a chain of 100,000
  of them must not overflow the stack). This is also how concurrent futures
  are waited on in calls that do have a client: they are loop-agnostic.
* dask collections, when no client applies: ``dask.compute`` on the
  configured scheduler, in a thread of its own, one call per batch of
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
import threading
from typing import Any

from unnest._caller import Caller
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

    def __init__(self, call: Caller):
        self.call = call
        self.ready: collections.deque[tuple[Node, Any]] = collections.deque()
        self.draining = False
        self.slots: list[list[Any]] = []

    # -- concurrent.futures.Future ---------------------------------------------

    def add_concurrent(self, node: Node) -> None:
        future = node.obj
        if future.done():
            self.ready.append((node, future))
            return
        loop = self.call.running_loop
        # concurrent.futures never drops a done callback: the callback holds
        # the call only through this slot, which close() empties, so a future
        # the user keeps does not keep an ended call alive.
        slot: list[Any] = [self, node]
        self.slots.append(slot)

        def done(f: Any) -> None:
            waiter, node = slot
            if waiter is None or waiter.call.ended:
                return
            with contextlib.suppress(RuntimeError):  # the loop is closed: call is over
                loop.call_soon_threadsafe(waiter.call.guard(waiter.concurrent_done), node, f)

        future.add_done_callback(done)

    # -- asyncio.Future and Task ---------------------------------------------------

    def add_asyncio(self, node: Node) -> None:
        """Wait on an asyncio future, through its own loop, thread-safely.

        Its loop may be the call's, or another loop that runs in another
        thread (the caller's, when the call runs on a client's loop). A loop
        that cannot run until the call is over -- the one the blocking API
        was called in, or one that is not running -- would never complete
        it: that is an error at once, not a hang.
        """
        future = node.obj
        if future.done():
            self.ready.append((node, future))
            return
        loop = future.get_loop()
        mine = self.call.running_loop
        if loop is not mine and (loop is self.call.blocked_loop or not loop.is_running()):
            why = (
                "its event loop runs in the thread that this blocking call blocks"
                if loop is self.call.blocked_loop
                else "its event loop is not running"
            )
            self.call.fail(
                node,
                RuntimeError(
                    f"cannot wait for an asyncio future: {why}. Use "
                    "`await unnest.unwrap_async(...)` (or `as_resolved_async`) in a "
                    "coroutine on that loop"
                ),
            )
            return
        slot: list[Any] = [self, node]  # emptied by close(), as for concurrent futures
        self.slots.append(slot)

        def done(f: Any) -> None:  # on the future's loop
            waiter, node = slot
            if waiter is None or waiter.call.ended:
                return
            with contextlib.suppress(RuntimeError):  # the loop is closed: call is over
                mine.call_soon_threadsafe(waiter.call.guard(waiter.concurrent_done), node, f)

        if loop is mine:
            future.add_done_callback(done)
            return
        try:
            loop.call_soon_threadsafe(future.add_done_callback, done)
        except RuntimeError as e:  # closed meanwhile
            self.call.fail(node, e)

    def close(self) -> None:
        """The call has ended: let go of it in every callback it left behind."""
        for slot in self.slots:
            slot[0] = slot[1] = None
        self.slots.clear()
        self.ready.clear()

    def drain(self) -> None:
        """Take the concurrent futures that were done when found."""
        if self.draining:
            return
        self.draining = True
        try:
            # The batch's end hands on what the values held, which may make
            # more concurrent futures ready: loop until none is.
            while self.ready and not self.call.ended:
                with self.call.batch():
                    while self.ready and not self.call.ended:
                        self.concurrent_done(*self.ready.popleft())
        finally:
            self.draining = False

    def concurrent_done(self, node: Node, f: Any) -> None:
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
        try:
            values = await in_thread(dask.compute, *collections)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the loop must never see it
            if len(batch) == 1:
                self.call.fail(batch[0], e)
                return
            if not self.call.places_failures:
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
        with self.call.batch():
            for node, value in zip(batch, values):
                self.call.complete(node, value)


async def in_thread(func: Any, *args: Any) -> Any:
    """``func(*args)`` in a thread of its own; its outcome, in this loop.

    A thread per computation, not a bounded executor: a task that unwraps
    the ``Delayed`` of the level below it holds its thread while it waits,
    so nesting deeper than an executor's size would deadlock. Whatever
    ``func`` raises, ``BaseException`` included, is carried back as data.
    """
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()

    def settle(result: tuple[Any, BaseException | None]) -> None:
        if not outcome.done():
            outcome.set_result(result)

    def run() -> None:
        try:
            result: tuple[Any, BaseException | None] = (func(*args), None)
        except BaseException as e:
            result = (None, e)
        with contextlib.suppress(RuntimeError):  # the loop is closed: call is over
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=run, name="unnest-compute", daemon=True).start()
    value, error = await outcome
    if error is not None:
        raise error
    return value
