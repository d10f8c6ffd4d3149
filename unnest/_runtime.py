"""Where unnest's coroutines run, and what they may rely on there.

The lowest layer: of unnest it imports only :mod:`unnest._distributed`
(which imports nothing of unnest).

* Loops. A call that involves a distributed client runs on that client's
  loop; one that involves none runs on the caller's loop (``unwrap_async``) or
  on one private loop in a daemon thread (``unwrap``), started on first use
  and again after a fork.
* :class:`TaskGroup`: every coroutine a call starts belongs to the call.
  The first failure of any of them is handed to the call (never left to the
  loop's exception handler), and the call's end cancels and awaits all of
  them, as trio's nurseries and ``asyncio.TaskGroup`` do (3.11 has the
  latter; we support 3.10).
* :func:`guarded`: the boundary at which user code runs inside a loop
  callback. Nothing a user's object raises -- ``BaseException`` included --
  escapes into the loop's own frames, where ``SystemExit`` or
  ``KeyboardInterrupt`` would stop the loop, and with it the client.
* :func:`run_blocking`: a blocking caller's side of a coroutine on another
  loop. If the caller is interrupted (Ctrl-C) the coroutine is cancelled and
  its cleanup awaited before the interrupt propagates.
* Workers (:func:`seceded`), clients, dask config and the GC pause.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from unnest._distributed import seceded_in_task

CLOSED = ("closing", "closed")

# How long an interrupted blocking call waits for its coroutine to clean up
# (release what it took) before the interrupt propagates regardless. A second
# Ctrl-C ends the wait at once.
CLEANUP_WAIT = 10.0


def distributed() -> Any:
    import distributed

    return distributed


# ---------------------------------------------------------------------------
# Outcomes


class Outcome:
    """How a call ended: its value, or the error it raises.

    Carried as data from the loop where the call ran to the caller's frame,
    where :meth:`unwrap` gives the value or raises the error (trio's
    ``outcome.Value``/``outcome.Error`` in one small type).
    """

    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self.value = value
        self.error = error

    def unwrap(self) -> Any:
        """The value, or raise the error, holding on to nothing.

        The outcome is emptied and the error dropped from this frame before it
        propagates: a traceback refers to the frames it passes through, and a
        frame that still held the error would make a cycle that keeps the
        call's futures (the user's too) alive until the garbage collector
        runs.
        """
        value, error = self.value, self.error
        self.value = self.error = None
        if error is None:
            return value
        try:
            raise error
        finally:
            del error


# ---------------------------------------------------------------------------
# Clients


def worker_client() -> Any:
    """The client of the worker task we run in, or None."""
    if "distributed" not in sys.modules:
        return None
    dist = distributed()
    try:
        dist.get_worker()
    except ValueError:
        return None
    return dist.get_client()


def current_client() -> Any:
    """The worker task's client, else the current/default client, else None."""
    client = worker_client()
    if client is not None or "distributed" not in sys.modules:
        return client
    try:
        return distributed().Client.current(allow_global=True)
    except ValueError:
        return None


def distributed_scheduler() -> Any:
    """The client dask would compute collections on, or None if local.

    Mirrors ``dask.base.get_scheduler`` (a ``scheduler`` set in dask's config
    wins, else the worker's or current client) without its fallback to a
    local scheduler when it runs in the client's event loop thread.
    """
    if "distributed" not in sys.modules:
        return None
    import dask

    scheduler = dask.config.get("scheduler", None)
    if scheduler is None or scheduler in ("distributed", "dask.distributed"):
        return current_client()
    if isinstance(scheduler, distributed().Client):
        return scheduler
    return None


# ---------------------------------------------------------------------------
# Loops


def in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_private: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None
_private_lock = threading.Lock()


def private_loop() -> asyncio.AbstractEventLoop:
    """A loop in a daemon thread for ``unwrap`` calls that involve no client."""
    global _private
    with _private_lock:
        if (
            _private is None
            or _private[0] != os.getpid()
            or _private[1].is_closed()
            or not _private[2].is_alive()
        ):
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="unnest-loop", daemon=True)
            thread.start()
            _private = (os.getpid(), loop, thread)
        return _private[1]


def guarded(func: Callable[..., Any], on_error: Callable[[BaseException], None]) -> Any:
    """``func`` for a loop callback: any exception goes to ``on_error``."""

    def call(*args: Any) -> None:
        try:
            func(*args)
        except BaseException as e:  # the loop must never see it
            on_error(e)

    return call


class TaskGroup:
    """The coroutines of one call: none unobserved, none outliving the call.

    ``spawn`` starts a coroutine as a task of the running loop. A task that
    raises -- anything but its own cancellation -- hands the exception to
    ``on_error`` (the call's end). ``aclose`` cancels every task still running
    and awaits them all.
    """

    def __init__(self, on_error: Callable[[BaseException], None]):
        self.on_error = on_error
        self.tasks: dict[asyncio.Task[None], Coroutine[Any, Any, Any]] = {}
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self.closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(self._run(coro))
        self.tasks[task] = coro
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        coro = self.tasks.pop(task, None)
        if coro is not None:
            # A task cancelled before its first step never ran `coro`: close
            # it, or Python warns that it was never awaited.
            coro.close()

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            if not self.closed:
                # Cancelled by someone else than us (a cancelled waiter inside
                # distributed, say): the call cannot go on without it.
                self.on_error(RuntimeError("an internal task of unnest was cancelled"))
            raise
        except BaseException as e:  # the loop must never see it
            self.on_error(e)

    async def aclose(self) -> None:
        self.closed = True
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def submit(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop
) -> tuple[concurrent.futures.Future[Any], concurrent.futures.Future[None]]:
    """Run ``coro`` on ``loop`` (another thread's).

    Returns its future, and a future that is done once ``coro`` has ended
    -- cleanup included, even when cancelling made the first one done early.
    """
    finished: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def main() -> Any:
        try:
            return await coro
        finally:
            finished.set_result(None)

    return asyncio.run_coroutine_threadsafe(main(), loop), finished


def run_blocking(
    coro: Coroutine[Any, Any, Any],
    loop: asyncio.AbstractEventLoop,
    tick: Any = None,
) -> Any:
    """Run ``coro`` on ``loop`` (another thread's) and block for its result.

    If waiting is interrupted (KeyboardInterrupt, or any other exception
    raised in this thread), ``coro`` is cancelled and its cleanup awaited for
    up to :data:`CLEANUP_WAIT` seconds before the interrupt propagates.
    ``tick``, if given (``progress=``), has ``wait()`` (seconds until it is
    due) and ``tick()``, called in this thread while it waits; what it
    raises interrupts the wait.
    """
    future, finished = submit(coro, loop)
    try:
        if tick is None:
            return future.result()
        while True:
            try:
                return future.result(tick.wait())
            except concurrent.futures.TimeoutError:
                if future.done():
                    raise
            tick.tick()
    except BaseException:
        if not future.done():
            future.cancel()
            concurrent.futures.wait([finished], CLEANUP_WAIT)
        raise


async def run_elsewhere(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
    """Await ``coro`` running on ``loop`` (another thread's).

    If the awaiting task is cancelled, ``coro`` is cancelled too and its
    cleanup awaited for up to :data:`CLEANUP_WAIT` seconds before the
    cancellation propagates.
    """
    future, finished = submit(coro, loop)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.wrap_future(finished), CLEANUP_WAIT)
        raise


def seceded() -> contextlib.AbstractContextManager[None]:
    """Leave the worker's thread pool while we block, if we run in a task."""
    return seceded_in_task()


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector during a burst of allocations.

    A walk allocates a node per pending container and placeholder; every 700
    allocations start a collection, and the older generations' collections
    scan every object in the process: the walk of many nested futures is
    several times faster with it paused (benchmarks/run.py,
    finished_futures). Only re-enabled if it was enabled (a user's
    gc.disable() is respected).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------
# Configuration


def config_seconds(name: str, default: str) -> float:
    """A duration from dask's config (``"2s"``, ``"1h"``, or seconds)."""
    import dask
    from dask.utils import parse_timedelta

    seconds: float = parse_timedelta(dask.config.get(name, default))
    return seconds


def forgotten_grace() -> float:
    return config_seconds("unnest.forgotten-key-grace", "2s")
