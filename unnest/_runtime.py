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
import time
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
    -- cleanup included, even when cancelling made the first one done early,
    and at once when the cancel came before ``coro`` started (it then never
    runs: its task is cancelled before its first step).
    """
    finished: concurrent.futures.Future[None] = concurrent.futures.Future()
    started = False

    def end() -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            finished.set_result(None)

    async def main() -> Any:
        nonlocal started
        started = True
        try:
            return await coro
        finally:
            end()

    def cancelled_early(future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled() and not started:
            end()

    future = asyncio.run_coroutine_threadsafe(main(), loop)
    future.add_done_callback(cancelled_early)
    return future, finished


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
    pair = None
    try:
        # In the try: an interrupt right after the coroutine is scheduled
        # still cancels it (else it would run on, its caller gone).
        pair = submit(coro, loop)
        future = pair[0]
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
        if pair is not None and not pair[0].done():
            pair[0].cancel()
            concurrent.futures.wait([pair[1]], CLEANUP_WAIT)
        raise


async def run_elsewhere(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
    """Await ``coro`` running on ``loop`` (another thread's).

    If the awaiting task is cancelled, ``coro`` is cancelled too and its
    cleanup awaited for up to :data:`CLEANUP_WAIT` seconds before the
    cancellation propagates.
    """
    future, finished = submit(coro, loop)  # no await before the try: not cancelled between
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


# The cyclic garbage collector, paused.
#
# A call allocates an object or two per pending container and placeholder
# (its graph), and the rebuilt containers; CPython starts a young collection
# every 700 allocations, and every collection scans every young object that is
# still alive. A call's graph lives as long as the call: resolving 10,000
# nested finished futures, the collections triggered by the fetch's own
# allocations scanned it again and again -- 60 ms of young collections where a
# bare gather of the same keys spent 10 (benchmarks/run.py, the rows against
# the bare scheduler gather). Paused, the graph dies with the call without
# ever being scanned, and the collections that would have run meanwhile merge
# into one.
#
# Pauses nest and overlap across threads: the first one disables the
# collector if it was enabled, the last one ends re-enables it, so a user's own
# gc.disable() before the first is respected. A pause of a call is bounded
# (``unnest.gc-pause``): a timer thread of its own ends it when the time is
# up, whatever the call's loop is doing, so a long wait never holds the
# collector off; the timer is cancelled (and its thread ends) with the pause,
# so no thread outlives the call (distributed's test utilities check that).

_gc_lock = threading.Lock()
_gc_pauses: dict[object, float] = {}  # pause -> its deadline
_gc_timers: dict[object, threading.Timer] = {}  # a timed pause -> its timer
_gc_resume = False  # the collector was enabled when the first pause began
_gc_next = [float("inf")]  # the nearest deadline
gc_resumed = threading.Event()  # set while no pause is on (tests wait on it)
gc_resumed.set()

# The end of a pause its owner ends itself (a walk), should an interrupt land
# between the pause's start and its owner holding the token: checked by the
# next pause or resume (no thread for these: a walk's pause costs none).
GC_BACKSTOP = 60.0


def pause_gc(seconds: float | None = None) -> object:
    """Start a pause of the cyclic GC; return its token for :func:`resume_gc`.

    ``seconds``: it ends by itself after that long, whatever its owner does (a
    daemon timer thread, ``unnest-gc``, ends it). None: meant to be ended by
    :func:`resume_gc`; after :data:`GC_BACKSTOP` seconds the next pause or
    resume ends it.
    """
    global _gc_resume
    token = object()
    now = time.monotonic()
    timer = None
    if seconds is not None:
        # A wait takes at most TIMEOUT_MAX: a longer bound is that.
        timer = threading.Timer(min(max(seconds, 0.0), threading.TIMEOUT_MAX), resume_gc, (token,))
        timer.name = "unnest-gc"
        timer.daemon = True
    with _gc_lock:
        if now >= _gc_next[0]:
            _expire(now)
        if not _gc_pauses:
            _gc_resume = gc.isenabled()
            gc.disable()
            gc_resumed.clear()
        deadline = now + (GC_BACKSTOP if seconds is None else seconds)
        _gc_pauses[token] = deadline
        _gc_next[0] = min(_gc_next[0], deadline)
        if timer is not None:
            _gc_timers[token] = timer
    if timer is not None:
        timer.start()  # after the lock: resumed meanwhile, it ends at once
    return token


def resume_gc(token: object) -> None:
    """End the pause ``token`` (again: nothing); the last one re-enables the GC."""
    now = time.monotonic()
    with _gc_lock:
        _end_pause(token)
        if now >= _gc_next[0]:
            _expire(now)


def _end_pause(token: object) -> None:
    timer = _gc_timers.pop(token, None)
    if timer is not None:
        timer.cancel()
    if _gc_pauses.pop(token, None) is not None and not _gc_pauses:
        if _gc_resume:
            gc.enable()
        gc_resumed.set()


def _expire(now: float) -> None:
    """End the pauses whose deadline has passed (under the lock)."""
    for token, deadline in list(_gc_pauses.items()):
        if deadline <= now:
            _end_pause(token)
    _gc_next[0] = min(_gc_pauses.values(), default=float("inf"))


def _gc_after_fork() -> None:
    # The child has none of the parent's timers or calls: its
    # collector is back as it was before the first pause. The fork happened
    # with the lock held (before=), so the state is whole: no pause half made.
    # The lock and the event are made anew (another thread of the parent may
    # have held the event's own lock); everything looks both up by name.
    global _gc_lock, gc_resumed
    _gc_lock = threading.Lock()
    gc_resumed = threading.Event()
    _gc_timers.clear()  # their threads are the parent's
    _gc_next[0] = float("inf")
    if _gc_pauses:
        _gc_pauses.clear()
        if _gc_resume:
            gc.enable()
    gc_resumed.set()


def _gc_before_fork() -> None:
    _gc_lock.acquire()


def _gc_after_fork_in_parent() -> None:
    _gc_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_gc_before_fork,
        after_in_parent=_gc_after_fork_in_parent,
        after_in_child=_gc_after_fork,
    )


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector during a burst of allocations.

    A walk allocates a node per pending container and placeholder; every 700
    allocations start a collection, and the older generations' collections
    scan every object in the process: the walk of many nested futures is
    several times faster with it paused (benchmarks/run.py,
    finished_futures). A pause as :func:`pause_gc`'s (a user's gc.disable()
    is respected).
    """
    token = pause_gc()
    try:
        yield
    finally:
        resume_gc(token)


def gc_pause_seconds() -> float:
    """How long a call with many placeholders may keep the GC paused (``unnest.gc-pause``).

    0 (also ``None``, which dask parses as None): no pause.
    """
    return config_seconds("unnest.gc-pause", "5s") or 0.0


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
