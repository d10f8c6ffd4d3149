"""``as_resolved``, ``as_resolved_async``: each placeholder of the input, as it resolves.

Design
------
One engine: a stream runs the :class:`unnest.resolve.Call` that ``unwrap``
runs, and its graph tells the stream (``Graph.on_done``, on the call's loop)
each time a placeholder node is done -- filled with its fully resolved value,
or with its exception where a failure takes its place (``errors="return"``,
inside an ``allow_failure``). The nodes of the placeholders found in the
*input* are watched: the hook puts ``(place, value)`` on a queue that the
iterator reads in the consumer's thread (:func:`as_resolved`) or loop
(:func:`as_resolved_async`), and the call's outcome follows the last of them
on the same queue. The order is the order in which the engine filled the
nodes: completion order; with ``ordered=True``, the feed holds a done pair
back until every watched node before it in the walk's order is done (a
failure kept for ``errors="group"`` counts as done, and is not yielded: the
group is the call's outcome).

Paths are read off the input's nodes once, before the call starts, in the
consumer's thread (:mod:`unnest._paths`). A placeholder met at several
places in the input (twice in a list, or inside a container the input holds
twice) has several paths, enumerated when it is done, one pair each.

Invariants
----------
* Nothing on a loop refers to the iterator (the loop side holds the queue and
  the watched nodes only), so an iterator that is dropped is collected, and
  its ``__del__`` ends the call.
* However the iteration ends -- exhausted, an error, ``break``, ``close()``,
  ``aclose()``, the iterator collected, Ctrl-C or a cancellation while it
  waits, a ``progress`` callable that raises -- the call ends as ``unwrap``'s
  does: every coroutine of it cancelled and awaited, every future it took
  over or submitted released, nothing of the user's cancelled. Closing waits
  for that (up to :data:`unnest._runtime.CLEANUP_WAIT`), except in the call's
  own loop thread, where the cleanup cannot run while we wait.
* The blocking iterator leaves a worker's thread pool (secedes) only while it
  waits for the next item, and rejoins before it hands the item on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import queue
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from unnest._exceptions import loop_thread_error
from unnest._graph import Errors, Node
from unnest._paths import Path, Place, paths, places
from unnest._progress import Progress, Reporter, Ticker, in_loop
from unnest._runtime import (
    CLEANUP_WAIT,
    Outcome,
    in_loop_thread,
    private_loop,
    seceded,
    submit,
)
from unnest.resolve import (
    Call,
    ErrorPolicy,
    error_policy,
    open_call,
    prologue,
    running_loop,
)
from unnest.traverse import Key

if TYPE_CHECKING:  # only: importing unnest imports no distributed
    from distributed import Client

__all__ = ["AsResolved", "AsResolvedAsync", "Key", "as_resolved", "as_resolved_async"]


class _Phase(enum.Enum):
    """Where an iterator is: not started, its call running, or over."""

    NEW = "new"
    RUNNING = "running"
    ENDED = "ended"


NEW, RUNNING, ENDED = _Phase


class _StreamCall(Call):
    name = "as_resolved"
    pauses_gc = False  # the user's code runs between the items


class _Closed(Exception):
    """Ends the call of a stream closed early (never raised to the user)."""


# Put on a stream's queue by close()/aclose(), from wherever they are called:
# an iteration waiting for its next item ends at once (StopIteration), not
# when the call's cleanup is done -- and never with the call's _Closed.
_CLOSED = object()


def _is_end(item: Any) -> bool:
    """Does ``item`` end the iteration: the close marker, or the call's outcome?"""
    return item is _CLOSED or type(item) is Outcome


# ---------------------------------------------------------------------------
# The loop's side


class _Feed:
    """What the call's loop holds of a stream: the watched nodes, the queue's ``put``."""

    __slots__ = ("next", "order", "put", "ready", "watched")

    def __init__(self, ordered: bool) -> None:
        # Both set before the call runs: the watched nodes once the input is
        # walked, ``put`` once the iterator has its queue.
        self.watched: dict[Node, Place] = {}
        self.put: Callable[[Any], None] = _unset
        # ordered=True: each watched node's rank in the walk's order, the
        # pairs done ahead of their turn (None: nothing to yield), the next
        # rank to hand on.
        self.order: dict[Node, int] | None = {} if ordered else None
        self.ready: dict[int, Any] = {}
        self.next = 0

    def watch(self, watched: dict[Node, Place]) -> None:
        self.watched = watched
        if self.order is not None:
            self.order = {node: rank for rank, node in enumerate(watched)}

    def done(self, node: Node, value: Any) -> None:
        """``Graph.on_done``: a placeholder node is done; pass on the watched ones."""
        place = self.watched.get(node)
        if place is not None:
            if self.order is None:
                self.put((place, value))
            else:
                self._in_turn(node, (place, value))

    def failed(self, node: Node, exc: BaseException | None) -> None:
        """``Graph.on_failed``: a failure kept for the group; nothing to yield."""
        if self.order is not None and node in self.watched:
            self._in_turn(node, None)

    def _in_turn(self, node: Node, item: Any) -> None:
        assert self.order is not None
        ready = self.ready
        ready[self.order[node]] = item
        while self.next in ready:
            item = ready.pop(self.next)
            self.next += 1
            if item is not None:
                self.put(item)


def _unset(item: Any) -> None:  # pragma: no cover  (a bug of ours if called)
    raise AssertionError("a stream's feed was used before it had its queue")


async def _drive(call: Call, feed: _Feed) -> None:
    """Run the call; its outcome goes on the queue last."""
    outcome = await call.run()
    # The call and its feed refer to each other: what keeps nodes (and so
    # the user's placeholders) goes now, not with the next collection.
    feed.watched = {}
    feed.order = None
    feed.ready.clear()
    outcome.value = None  # the rebuilt structure: the stream hands on its parts only
    feed.put(outcome)


def _put_from_elsewhere(loop: asyncio.AbstractEventLoop, q: asyncio.Queue[Any]) -> Any:
    """``q.put_nowait`` for a caller in another thread than ``loop``'s."""

    def put(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the consumer's loop is closed
            loop.call_soon_threadsafe(q.put_nowait, item)

    return put


# ---------------------------------------------------------------------------
# The iterators


class _Stream:
    """What both iterators share: the arguments, the walk, the current item."""

    _state = ENDED  # until __init__ has checked the arguments (for __del__)
    _queue: Any = None  # the items, once started: each iterator's own kind of queue

    def __init__(
        self,
        obj: Any,
        client: Any,
        timeout: float | None,
        errors: Errors,
        ordered: bool,
        progress: Progress,
    ):
        self._report: Reporter | None = prologue(client, timeout, progress)
        self._args: tuple[Any, ...] | None = (obj, client, timeout, errors, ordered)
        self._call: Call | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: concurrent.futures.Future[None] | None = None
        self._paths: Iterator[Path] | None = None
        self._value: Any = None
        self._state = NEW

    def _begin(self) -> tuple[Call, _Feed] | None:
        """Walk the input: the call and its feed, or None if nothing waits."""
        assert self._args is not None
        obj, client, timeout, errors, ordered = self._args
        self._args = None
        self._state = ENDED  # unless the call starts
        feed = _Feed(ordered)
        call = _StreamCall(client, timeout, errors, on_done=feed.done, on_failed=feed.failed)
        if self._report is not None:
            self._report.graph = call.graph
        if open_call(call, obj) is not call.graph.root:
            return None
        feed.watch(places(call.graph.new))
        return call, feed

    def _again(self) -> tuple[Path, Any] | None:
        """The next path of the current item, if it has one more."""
        if self._paths is not None:
            path = next(self._paths, None)
            if path is not None:
                return path, self._value
            self._paths = self._value = None
        return None

    def _item(self, item: Any) -> tuple[Path, Any]:
        place, value = item
        self._paths = paths(place)
        self._value = value
        return next(self._paths), value

    def _request_end(self) -> None:
        """End the running call, from any thread; do not wait."""
        self._state = ENDED
        self._paths = self._value = None
        call, loop = self._call, self._loop
        self._call = None
        if call is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the call is over
                loop.call_soon_threadsafe(call.end, _Closed())
        self._wake()

    def _wake(self) -> None:
        """Put the close marker on the queue, for an iteration waiting on it."""
        raise NotImplementedError

    def _end(self, item: Any) -> None:
        """The iteration's end: ``item`` is the close marker or the call's outcome.

        Raises the call's error, if it ended with one that is not a close.
        """
        self._ended()
        if item is _CLOSED:
            return
        if isinstance(item.error, _Closed):
            item.error = None
        item.unwrap()

    def _ended(self) -> None:
        """The call has ended by itself (its outcome is on hand): drop it."""
        self._state = ENDED
        self._call = None


class AsResolved(_Stream):
    """The iterator :func:`as_resolved` returns; also a context manager."""

    _closing = False  # close() was called (from any thread)

    def __iter__(self) -> AsResolved:
        return self

    def __next__(self) -> tuple[Path, Any]:
        again = self._again()
        if again is not None:
            return again
        if self._state is NEW:
            self._start()
        if self._state is not RUNNING:
            raise StopIteration
        item = self._get()
        if _is_end(item):
            if self._report is not None:
                self._report.close()
            self._end(item)
            raise StopIteration
        return self._item(item)

    def _wake(self) -> None:
        if self._queue is not None:
            self._queue.put(_CLOSED)

    def _start(self) -> None:
        assert self._args is not None
        client = self._args[1]
        if client is not None and in_loop_thread(client.loop.asyncio_loop):
            self._state = ENDED
            raise _loop_error(client)
        begun = self._begin()
        if begun is None:
            if self._report is not None:
                self._report.close()
            return
        call, feed = begun
        call.blocked_loop = running_loop()  # the consumer's, blocked in next()
        loop = call.target_loop() or private_loop()
        if in_loop_thread(loop):
            raise _loop_error(call.client)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        feed.put = self._queue.put
        self._call, self._loop = call, loop
        _, self._finished = submit(_drive(call, feed), loop)
        self._state = RUNNING
        if self._closing:
            # close() came from another thread while this start walked the
            # input: it saw no call to end, so this start ends it.
            self._close(final=True)

    def _get(self) -> Any:
        """The next item off the queue, waiting (seceded) if there is none yet."""
        report = self._report
        try:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                with seceded():
                    while True:
                        try:
                            wait = None if report is None else report.wait()
                            item = self._queue.get(timeout=wait)
                            break
                        except queue.Empty:
                            assert report is not None
                            report.tick()
            if report is not None and not _is_end(item):
                report.tick()
        except BaseException:
            # Ctrl-C while waiting, or a progress callable that raised.
            self.close()
            raise
        return item

    def close(self) -> None:
        """End the iteration now: the call ends and releases what it took.

        Waits (up to 10 s) for that, except in the call's own loop thread. The
        user's own futures are not cancelled. Called when the iterator is
        collected and on leaving a ``with`` block.
        """
        self._closing = True  # seen by a first next() starting meanwhile
        self._close(final=True)

    def _close(self, final: bool) -> None:
        if self._state is RUNNING:
            loop, finished = self._loop, self._finished
            self._request_end()
            if loop is not None and finished is not None and not in_loop_thread(loop):
                if not sys.is_finalizing():
                    concurrent.futures.wait([finished], CLEANUP_WAIT)
            elif final:
                final = False  # not a progress callable in a loop's thread
        self._state = ENDED
        self._args = None
        self._paths = self._value = None
        if final and self._report is not None:
            self._report.close()

    def __enter__(self) -> AsResolved:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if self._state is RUNNING:
            self._close(final=True)


class AsResolvedAsync(_Stream):
    """The asynchronous iterator :func:`as_resolved_async` returns; also an
    asynchronous context manager."""

    _task: asyncio.Task[None] | None = None
    _ticker: Ticker | None = None

    def __aiter__(self) -> AsResolvedAsync:
        return self

    async def __anext__(self) -> tuple[Path, Any]:
        again = self._again()
        if again is not None:
            return again
        if self._state is NEW:
            await self._start()
        if self._state is not RUNNING:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except BaseException:  # cancelled while waiting: the iteration ends
            await self.aclose()
            raise
        if _is_end(item):
            await self._close_ticker()
            self._end(item)
            raise StopAsyncIteration
        return self._item(item)

    _here: asyncio.AbstractEventLoop | None = None  # the consumer's loop

    def _wake(self) -> None:
        q, here = self._queue, self._here
        if q is None or here is None:
            return
        if in_loop_thread(here):
            q.put_nowait(_CLOSED)
        else:  # collected in another thread
            _put_from_elsewhere(here, q)(_CLOSED)

    async def _start(self) -> None:
        begun = self._begin()
        if begun is None:
            if self._report is not None:
                await self._report.afinish(self._report.graph)
            return
        call, feed = begun
        here = self._here = asyncio.get_running_loop()
        loop = call.target_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        if loop is None or loop is here:
            feed.put = self._queue.put_nowait
            self._task = here.create_task(_drive(call, feed))
            loop = here
        else:
            feed.put = _put_from_elsewhere(here, self._queue)
            _, self._finished = submit(_drive(call, feed), loop)
        self._call, self._loop = call, loop
        if self._report is not None:
            self._ticker = Ticker(self._report, in_loop(call.end, loop))
        self._state = RUNNING

    async def aclose(self) -> None:
        """End the iteration now: the call ends and releases what it took.

        Awaits that (up to 10 s), then the last progress report. The user's
        own futures are not cancelled. Called on leaving an ``async with``
        block.
        """
        if self._state is RUNNING:
            task, finished = self._task, self._finished
            self._request_end()
            self._task = None
            # asyncio.wait: a cancellation of ours must not reach the call's
            # cleanup, which releases what it took.
            if task is not None:
                await asyncio.wait([task], timeout=CLEANUP_WAIT)
            elif finished is not None:
                await asyncio.wait([asyncio.wrap_future(finished)], timeout=CLEANUP_WAIT)
        self._state = ENDED
        self._args = None
        await self._close_ticker()
        if self._ticker is None and self._report is not None and not self._report.closed:
            await self._report.afinish(self._report.graph)

    async def _close_ticker(self) -> None:
        self._task = None
        ticker = self._ticker
        if ticker is not None:
            await ticker.aclose()

    async def __aenter__(self) -> AsResolvedAsync:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._state is RUNNING:
            self._request_end()
            if self._ticker is not None:
                self._ticker.close()  # its last report follows in its own thread


def _checked_order(ordered: Any) -> bool:
    if not isinstance(ordered, bool):
        raise TypeError(f"`ordered` must be True or False, got {ordered!r}")
    return ordered


def _loop_error(client: Any) -> RuntimeError:
    return loop_thread_error(
        client, "as_resolved", "async for ... in unnest.as_resolved_async(...)"
    )


# ---------------------------------------------------------------------------
# Public API


def as_resolved(
    obj: Any,
    *,
    client: Client | None = None,
    timeout: float | None = None,
    errors: ErrorPolicy = "raise",
    return_exceptions: bool = False,
    ordered: bool = False,
    progress: Progress = False,
) -> AsResolved:
    """Yield ``(path, value)`` for each placeholder in ``obj``, as each resolves.

    The same engine as :func:`unnest.unwrap`, consumed as the placeholders
    complete: one pair for each placeholder found in ``obj``, in the order
    they finish, each ``value`` fully resolved (whatever the placeholder
    resolved to was resolved too, to any depth). A fast deep branch comes
    before a slow shallow one. Placeholders that only turn up inside
    resolved values are not yielded on their own: they are part of the
    value of the input's placeholder they came from.

    ``path`` is the tuple of keys and indices that leads from ``obj`` to
    the placeholder: ``("a", 2)`` for ``obj["a"][2]``, ``()`` when ``obj``
    is itself a placeholder. Each step is

    * an index for lists, tuples (namedtuples too) and deques;
    * the key for a dict's value; :class:`unnest.Key` ``(key)`` for the key
      itself, when the placeholder is (or is inside) a dict key;
    * the member itself for sets and frozensets (a set has no index: its
      members are their own keys);
    * the field's name (a str) for dataclasses, attrs classes and pydantic
      models (a pydantic model's extra values: their key);
    * for a type taught with :func:`unnest.register_container`: the index
      of the child in what its ``flatten`` returns.

    A placeholder that sits at several places (twice in a list, or in a
    container that ``obj`` holds twice) is yielded once for each place,
    with each path. Nothing is yielded for an ``obj`` with nothing to
    resolve. The paths name places in ``obj``, which is never modified.

    The work starts at the first ``next()``; ``timeout`` counts from there,
    for the whole iteration. Stopping early -- ``break``, ``close()``,
    leaving a ``with`` block, dropping the iterator, Ctrl-C while it waits
    -- ends the call: what unnest started is cancelled and awaited, what it
    took is released; your own futures are never cancelled. In a worker
    task it secedes from the worker's thread pool while it waits, like
    ``unwrap``.

    Parameters
    ----------
    obj : object
        Any structure.
    client : distributed.Client, optional
        As for :func:`unnest.unwrap`.
    timeout : float, optional
        Seconds for the whole iteration; ``TimeoutError`` is raised by the
        ``next()`` at which they pass, after the pairs that were ready.
    errors : {"raise", "return", "group"}, default "raise"
        ``"raise"``: a failure is raised by the ``next()`` at which it
        happens, and ends the iteration. ``"return"``: the exception is
        yielded as the placeholder's value. ``"group"``: the pairs whose
        values hold no failure are yielded, then the ``ExceptionGroup`` of
        every failure is raised (see :func:`unnest.unwrap`).
    return_exceptions : bool, default False
        ``True`` is ``errors="return"``.
    ordered : bool, default False
        Yield the pairs in the order of the placeholders in ``obj`` (the
        order in which ``unwrap`` walks it), each as soon as it and every
        placeholder before it are done, instead of in completion order. A
        placeholder at several places comes at the turn of its first place,
        with each of its paths. Under ``errors="group"`` a failure takes its
        turn and yields nothing.
    progress : bool or callable, default False
        As for :func:`unnest.unwrap`: a bar, or ``progress(resolved,
        discovered)`` called in the thread that iterates, while it waits in
        ``next()`` (at most every 0.1 s), and once when the iteration ends or
        is closed.

    Returns
    -------
    AsResolved
        An iterator of ``(path, value)`` pairs, with ``close()``; also a
        context manager that closes it.

    Raises
    ------
    Exception
        At the ``next()`` where it happened: the exception of a failed
        placeholder, with the same note naming its place as ``unwrap``
        gives (``obj['a'][2]``), after the pairs that were ready before it;
        the iteration is over after it.
    ExceptionGroup
        Under ``errors="group"``, after the good pairs: every failure.
    TimeoutError, ForgottenFutureError, ValueError, RuntimeError, ImportError
        As for :func:`unnest.unwrap`.

    Examples
    --------
    >>> import threading
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> import unnest
    >>> release = threading.Event()
    >>> with ThreadPoolExecutor() as pool:
    ...     slow = pool.submit(release.wait)
    ...     deep = pool.submit(lambda: [pool.submit(pow, 2, 10)])
    ...     for path, value in unnest.as_resolved({"slow": slow, "deep": [deep]}):
    ...         print(path, value)
    ...         release.set()
    ('deep', 0) [1024]
    ('slow',) True

    With a cluster, each branch as soon as it is done:

    >>> from distributed import Client, get_client
    >>> def producer(n):
    ...     return unnest.hand_off({"xs": [get_client().submit(pow, 2, i) for i in range(n)]})
    >>> client = Client()  # doctest: +SKIP
    >>> for path, value in unnest.as_resolved({"a": client.submit(producer, 3)}):  # doctest: +SKIP
    ...     print(path, value)
    ('a',) {'xs': [1, 2, 4]}
    """
    policy = error_policy(errors, return_exceptions)
    return AsResolved(obj, client, timeout, policy, _checked_order(ordered), progress)


def as_resolved_async(
    obj: Any,
    *,
    client: Client | None = None,
    timeout: float | None = None,
    errors: ErrorPolicy = "raise",
    return_exceptions: bool = False,
    ordered: bool = False,
    progress: Progress = False,
) -> AsResolvedAsync:
    """:func:`as_resolved` for coroutines: ``async for path, value in ...``.

    Works with asynchronous clients and never blocks the running event loop.
    Stopping early -- ``break`` then ``aclose()``, leaving an ``async with``
    block, the iterating task cancelled while it waits -- ends the call as
    for :func:`as_resolved`. An iterator dropped without ``aclose()`` ends
    the call too, without waiting for its cleanup. (Python does not close an
    asynchronous iterator that a ``break`` leaves: use ``async with`` or
    ``aclose()`` to wait for the end.)

    Parameters
    ----------
    obj : object
        Any structure.
    client : distributed.Client, optional
        As for :func:`unnest.unwrap`.
    timeout : float, optional
        Seconds for the whole iteration.
    errors : {"raise", "return", "group"}, default "raise"
        As for :func:`as_resolved`.
    return_exceptions : bool, default False
        ``True`` is ``errors="return"``.
    ordered : bool, default False
        As for :func:`as_resolved`.
    progress : bool or callable, default False
        As for :func:`unnest.unwrap_async`: a callable is called from a
        thread the iteration starts for it (``unnest-progress``), never from
        an event loop's, and once more when the iteration ends or is closed.

    Returns
    -------
    AsResolvedAsync
        An asynchronous iterator of ``(path, value)`` pairs, with
        ``aclose()``; also an asynchronous context manager that closes it.

    Examples
    --------
    >>> import asyncio
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> import unnest
    >>> async def main(pool):
    ...     nested = {"n": pool.submit(lambda: [pool.submit(pow, 2, 10)])}
    ...     async with unnest.as_resolved_async(nested) as stream:
    ...         return [pair async for pair in stream]
    >>> with ThreadPoolExecutor() as pool:
    ...     asyncio.run(main(pool))
    [(('n',), [1024])]
    """
    policy = error_policy(errors, return_exceptions)
    return AsResolvedAsync(obj, client, timeout, policy, _checked_order(ordered), progress)
