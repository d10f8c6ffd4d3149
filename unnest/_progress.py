"""``progress=``: how far a call has got, for a bar or a callable of the user's.

Imports only :mod:`unnest._runtime`; tqdm only when ``progress=True``.

The counts are the ones the call's graph keeps anyway (``discovered``: the
placeholders found so far, ``resolved``: of which done or failed), read by a
thread that is never an event loop's. Nothing here exists when progress is
off, so a call without it does no work for it at all.

Who reports
-----------
* A blocking call (``unwrap``, ``as_resolved``) reports in its caller's
  thread, while that thread waits anyway: :func:`unnest._runtime.run_blocking`
  wakes it every :data:`INTERVAL` (its ``tick``), the stream's ``next()``
  does the same.
* An async call (``unwrap_async``, ``as_resolved_async``) reports from a
  thread of its own, :class:`Ticker`, started and joined by the call: the
  caller's loop may be the loop that drives the call, and a callable that
  blocks there would stall it.

Either way the report is made at most every :data:`INTERVAL` seconds, and
once more at the end -- value, error, timeout or interrupt -- which also
closes the bar. A bar is drawn only for a call that takes longer than
:data:`DELAY`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from unnest._runtime import run_blocking

INTERVAL = 0.1  # seconds between two reports, at least
DELAY = 0.5  # seconds before a bar is drawn at all

Progress = bool | Callable[[int, int], Any]

_EXTRA = (
    "progress=True draws a tqdm progress bar, and tqdm is not installed: "
    "python -m pip install 'unnest[progress]' (or tqdm)"
)


def reporter(progress: Any) -> Reporter | None:
    """The reporter for ``progress=``, or None when it is off.

    Raises at once -- before anything starts -- for a wrong type, and for
    ``True`` without tqdm (an ImportError naming the extra).
    """
    if progress is False:
        return None
    if progress is True:
        return Reporter(_Bar())
    if callable(progress):
        return Reporter(progress)
    raise TypeError(
        f"`progress` must be True, False or a callable(resolved, discovered), got {progress!r}"
    )


class Reporter:
    """Reports one call's counts to ``report(resolved, discovered)``.

    Not thread-safe, and need not be: one thread at a time reports (the
    caller's, or a :class:`Ticker`'s). The graph's counts are written on the
    call's loop and read here: plain ints, read whole.
    """

    def __init__(self, report: Callable[[int, int], Any]):
        self.report = report
        self.graph: Any = None  # the call's graph, set by the call
        self.due = time.monotonic() + INTERVAL
        self.last: tuple[int, int] | None = None
        self.closed = False

    def counts(self) -> tuple[int, int]:
        graph = self.graph
        if graph is None:
            return 0, 0
        return graph.resolved, graph.discovered

    def wait(self) -> float:
        """Seconds until the next report is due."""
        return max(self.due - time.monotonic(), 0.0)

    def tick(self) -> None:
        """Report, if the last report was :data:`INTERVAL` ago or more.

        A callable only hears of a change; a bar is refreshed anyway, for its
        clock.
        """
        now = time.monotonic()
        if now >= self.due and not self.closed:
            self.due = now + INTERVAL
            counts = self.counts()
            if counts != self.last or isinstance(self.report, _Bar):
                self.last = counts
                self.report(*counts)

    # -- the calls' side ------------------------------------------------------

    def blocking(self, coro: Any, loop: asyncio.AbstractEventLoop, graph: Any) -> Any:
        """``run_blocking(coro, loop)``, reporting in this thread while it waits."""
        self.graph = graph
        try:
            return run_blocking(coro, loop, tick=self)
        finally:
            self.close()

    async def awaiting(
        self,
        coro: Any,
        graph: Any,
        end: Callable[[BaseException], None],
        loop: asyncio.AbstractEventLoop | None,
    ) -> Any:
        """``await coro``, reporting from a :class:`Ticker` meanwhile.

        ``end(error)`` ends the call; it is called on ``loop`` (the call's,
        None for the running one) if a report raises.
        """
        self.graph = graph
        ticker = Ticker(self, in_loop(end, loop or asyncio.get_running_loop()))
        try:
            return await coro
        finally:
            await ticker.aclose()

    def finish(self, graph: Any) -> None:
        """The one report of a call that had nothing to wait for."""
        self.graph = graph
        self.close()

    async def afinish(self, graph: Any) -> None:
        """The same for an async call: not in the loop's thread either."""
        self.graph = graph
        await Ticker(self, _ignore).aclose()

    def close(self) -> None:
        """The last report (once), and the bar closed."""
        if self.closed:
            return
        self.closed = True
        report = self.report
        try:
            report(*self.counts())
        finally:
            if isinstance(report, _Bar):
                report.close()


class _Bar:
    """A ``tqdm.auto`` bar of resolved out of discovered, drawn after :data:`DELAY`."""

    def __init__(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:
            raise ImportError(_EXTRA, name="tqdm") from e
        self.tqdm = tqdm
        self.start = time.monotonic()
        self.bar: Any = None

    def __call__(self, resolved: int, discovered: int) -> None:
        bar = self.bar
        if bar is None:
            elapsed = time.monotonic() - self.start
            if elapsed < DELAY:
                return
            bar = self.bar = self.tqdm(
                total=discovered, initial=resolved, desc="unnest", unit="placeholder"
            )
            bar.start_t -= elapsed  # the call's time, not the bar's
        if bar.total != discovered:
            # The total grows as futures reveal more futures; reset() is the
            # way that works for the notebook widget too (its maximum).
            start = bar.start_t
            bar.reset(total=discovered)
            bar.start_t = start
        bar.n = resolved
        bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Ticker:
    """Reports in a thread of its own until :meth:`aclose` (async calls).

    Whatever the report raises stops the reporting and goes to ``on_error``
    (the call's end), from this thread.
    """

    def __init__(self, reporter: Reporter, on_error: Callable[[BaseException], None]):
        self.reporter = reporter
        self.on_error = on_error
        self.stop = threading.Event()
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name="unnest-progress", daemon=True).start()

    def _run(self) -> None:
        reporter = self.reporter
        try:
            try:
                while not self.stop.wait(reporter.wait()):
                    reporter.tick()
            except BaseException as e:  # the user's callable: the call ends with it
                self.error = e
                self.on_error(e)
                self.stop.wait()
            reporter.close()
        except BaseException as e:
            self.error = self.error or e
        finally:
            self.finished.set_result(None)

    def close(self) -> None:
        """Stop reporting (the last report follows in the thread); do not wait."""
        self.stop.set()

    async def aclose(self) -> None:
        """Stop, and await the last report. Raises what a report raised."""
        self.stop.set()
        await asyncio.wrap_future(self.finished)
        error, self.error = self.error, None
        if error is not None:
            try:
                raise error
            finally:
                del error


def _ignore(error: BaseException) -> None:
    pass


def in_loop(func: Callable[[BaseException], None], loop: asyncio.AbstractEventLoop) -> Any:
    """``func(error)`` called on ``loop`` from any thread (dropped if it is closed)."""

    def call(error: BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the call is over
            loop.call_soon_threadsafe(func, error)

    return call
