"""``unwrap`` and ``unwrap_async``: resolve placeholders anywhere, to any depth.

Design
------
A call is one :class:`Call`, a slim coordinator over four parts, each in a
module of its own; imports go one way, downwards::

    resolve  ->  _graph  ->  traverse          (what is inside what)
             ->  _wait_distributed  ->  _protocol  ->  _plugin (scheduler side)
             ->  _wait_local
             ->  _placeholders  ->  _ray       (registered types; Ray's engine)
             ->  _runtime, _exceptions         (used by all; import nothing)

* :mod:`unnest._graph` walks the input with an explicit stack and makes one
  node per pending container and per placeholder identity; filling a node
  rebuilds its container and fills its parents, up to the root.
* :mod:`unnest._wait_distributed` waits on futures and computes collections
  through one distributed client, on its loop; :mod:`unnest._wait_local`
  waits on ``concurrent.futures.Future`` objects and computes collections
  with ``dask.compute`` when no client applies; :mod:`unnest._placeholders`
  turns a registered type's object into a stand-in one of those waits on,
  or hands it to the type's own engine (Ray's, :mod:`unnest._ray`). None
  sleeps to wait: completion callbacks and the client's own events drive
  everything (the one timed retry, bounded, is a key the scheduler has not
  heard of yet).
* :mod:`unnest._runtime` gives the loop, the task group and the boundary
  at which user code runs.

The coordinator walks the input in the calling thread (a structure with
nothing to resolve costs no thread hop), decides the *primary* client
(``client=``, else the running worker task's client, else the client of the
first bound future, else the current client) and so the loop, then runs the
call there: it hands every placeholder the graph discovers to the engine that
waits for its kind, the moment it is discovered -- a fast deep branch is never
held back by a slow shallow one -- and walks every value that comes back.

Invariants
----------
* **Structured**: every coroutine of a call runs in its :class:`TaskGroup`;
  the first failure ends the call with that error; the call's end -- value,
  error, timeout, cancellation, Ctrl-C in the blocked caller -- cancels and
  awaits all of them and releases every future the call took or created.
  Nothing of the user's is cancelled or released.
* **The loop is never the victim**: :meth:`Call.complete`, :meth:`Call.fail`
  and every loop callback catch ``BaseException``; the call's outcome is
  carried back as data, an :class:`~unnest._runtime.Outcome`, and raised in the caller's frame
  only. ``SystemExit`` stored in a concurrent future is raised by that
  call, in the caller's thread, and by nothing else.
* A blocking ``unwrap`` inside a worker task secedes from the worker's thread
  pool while it waits and rejoins after, so a one-thread worker can run the
  tasks it waits for.
* A call with :data:`GC_PAUSE_AT` placeholders or more pauses the cyclic GC
  from its walk to its end (bounded by ``unnest.gc-pause``; see
  :mod:`unnest._runtime`), and ends the pause only once its graph is cleared:
  the graph is never scanned, and a pause never outlives its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from unnest._distributed import owner
from unnest._exceptions import ForgottenFutureError, failure_group, loop_thread_error
from unnest._graph import GROUP, RAISE, SAME, Errors, Graph, Node, describe, excused, where
from unnest._placeholders import PlaceholderWaiter
from unnest._progress import Progress, Reporter, reporter
from unnest._runtime import (
    CLOSED,
    Outcome,
    TaskGroup,
    current_client,
    distributed,
    distributed_scheduler,
    gc_pause_seconds,
    guarded,
    in_loop_thread,
    no_gc,
    pause_gc,
    private_loop,
    resume_gc,
    run_blocking,
    run_elsewhere,
    seceded,
    worker_client,
)
from unnest._wait_distributed import DistributedWaiter
from unnest._wait_local import LocalWaiter
from unnest.traverse import (
    AFUTURE,
    CFUTURE,
    COLLECTION,
    FUTURE,
    Container,
    Placeholder,
    allow_failure,
    register_builtin,
)

if TYPE_CHECKING:  # only: importing unnest imports no distributed
    import concurrent.futures

    from distributed import Client, Future

    from unnest.traverse import quote

__all__ = ["ForgottenFutureError", "unwrap", "unwrap_async", "unwrap_or_wait"]

T = TypeVar("T")

# A call that has discovered this many placeholders pauses the cyclic GC
# until it ends, for at most ``unnest.gc-pause`` (see unnest._runtime): its
# graph then dies with it, never scanned. A smaller one pauses only while it
# walks, as before: its graph costs the collector little.
GC_PAUSE_AT = 1_000

#: What a placeholder's failure does to a call: the ``errors=`` option.
ErrorPolicy = Literal["raise", "return", "group"]


class Call:
    """One call of ``unwrap``/``unwrap_async``: the graph, its engines, its end."""

    name = "unwrap"  # the function named in messages

    # Under errors="group", the call ends with the group of its failures
    # (False for a relay call: its caller keeps them).
    raises_group = True

    # Pauses the GC while it runs, once it is big (False for a stream: the
    # user's own code runs between its items, in the same process).
    pauses_gc = True

    def __init__(
        self,
        client: Any,
        timeout: float | None,
        errors: Errors,
        on_done: Callable[[Node, Any], None] | None = None,
        on_failed: Callable[[Node, BaseException | None], None] | None = None,
    ):
        self.graph = Graph(errors, on_done, on_failed)
        self.client = client  # the primary client, decided lazily
        self.client_fixed = client is not None
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future[None] | None = None
        self.ended = False
        self.error: BaseException | None = None
        self.group = TaskGroup(self.end)
        self.remote: DistributedWaiter | None = None
        self.local = LocalWaiter(self)
        self.placeholders = PlaceholderWaiter(self, self.graph)
        # The loop of the thread a blocking call blocks (unwrap in a coroutine).
        self.blocked_loop: asyncio.AbstractEventLoop | None = None
        self.batching = 0  # inside batch(): completions do not start() each
        # Placeholders of a client whose loop is not the call's, found by the
        # last start(): resolved by one relay call per client and batch.
        self.elsewhere: dict[Any, list[Node]] = {}
        self.gc_pause: object | None = None  # this call's pause of the GC, if any

    # -- before running: the walk of the input -----------------------------------

    def begin(self, obj: Any) -> Any:
        """Walk the input; return its value, or ``self.graph.root`` if pending."""
        with no_gc():
            try:
                out = self.graph.walk_input(obj)
                if out is self.graph.root:
                    self.pause_gc()  # before the walk's pause ends: no collection between
                    self._decide_client()
            except BaseException:
                self.resume_gc()  # the call will not run
                raise
        if out is SAME:
            return obj
        return out

    def _decide_client(self) -> None:
        """Decide the primary client now: it decides which loop drives the wait.

        The first bound future's client, else the first future's rule (see
        :meth:`primary`); for collections alone, the scheduler dask uses.
        """
        if self.client is not None:
            return
        first = None
        for node in self.graph.new:
            if node.kind is FUTURE:
                if owner(node.obj) is not None:
                    first = node.obj
                    break
                if first is None:
                    first = node.obj
        if first is not None:
            self.primary(first)
        elif any(node.kind is COLLECTION for node in self.graph.new):
            self.client = distributed_scheduler()

    def pause_gc(self) -> None:
        """Pause the GC for the rest of the call, once it has many placeholders."""
        if self.pauses_gc and self.gc_pause is None and self.graph.discovered >= GC_PAUSE_AT:
            seconds = gc_pause_seconds()
            if seconds > 0:
                self.gc_pause = pause_gc(seconds)

    def resume_gc(self) -> None:
        """End this call's pause of the GC, if it took one; it takes no other."""
        self.pauses_gc = False
        if self.gc_pause is not None:
            resume_gc(self.gc_pause)
            self.gc_pause = None

    def abandon(self, loop: asyncio.AbstractEventLoop | None, error: BaseException) -> None:
        """Its caller is gone (interrupted): end the call, if it runs, from any thread.

        For a run that started although its caller was interrupted before it
        could cancel it (between scheduling the run and holding its future).
        """
        self.resume_gc()
        if loop is not None and not in_loop_thread(loop):
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(self.guard(self.end), error)

    def check_client(self) -> None:
        """A ValueError if the client this call must run on is closed."""
        client = self.client
        if client is not None and client.status in CLOSED:
            first = next(iter(self.graph.new), None)
            what = describe(first) if first is not None else "the input"
            raise ValueError(f"cannot resolve {what}: its client {client!r} is closed")

    def target_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop to run this call on, or None for "any".

        The primary client's, where the walk of the input decided one. An
        input of concurrent futures only runs on the current client's loop
        if there is one (and the caller does not run in it): distributed
        futures or collections in their values then join that client's
        batches like any other, instead of a relay call per batch (issue 17:
        1,000 futures found in a concurrent future's value took one call
        each, 20 times the time of the same futures passed directly).
        """
        if self.client is not None:
            return self.client.loop.asyncio_loop  # type: ignore[no-any-return]
        # So does an input of registered placeholders: they may stand in as
        # distributed futures (prefect-dask's), found only once it runs.
        if "distributed" in sys.modules and any(
            node.kind is CFUTURE or type(node.kind) is Placeholder for node in self.graph.new
        ):
            client = current_client()
            if client is not None and client.status not in CLOSED:
                loop = client.loop.asyncio_loop
                if not in_loop_thread(loop):
                    return loop  # type: ignore[no-any-return]
        return None

    def primary(self, future: Any = None) -> Any:
        """The client all futures are waited on through (decided once)."""
        if self.client is None:
            client = worker_client()
            bound = owner(future) if future is not None else None
            if client is None and bound is not None and bound.status not in CLOSED:
                client = bound
            if client is None:
                client = current_client()
            if client is None:
                raise ValueError(
                    f"cannot resolve the future {future.key!r}: it is not bound to a "
                    "client and no client is active. Pass client=... or create a "
                    "distributed.Client first"
                )
            self.client = client
        return self.client

    # -- running -------------------------------------------------------------

    async def run(self) -> Outcome:
        """Resolve; return the outcome. Raises only its own cancellation."""
        self.loop = loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        try:
            self.guard(self.start)()
            if not self.ended:
                remaining = None
                if self.deadline is not None:
                    remaining = max(self.deadline - time.monotonic(), 0)
                await asyncio.wait([self.done], timeout=remaining)
                if not self.ended:
                    self.end(TimeoutError(self._timeout_message()))
        finally:
            self.ended = True
            try:
                await self.group.aclose()
                if self.remote is not None:
                    await self.remote.aclose()
                self.local.close()
                await self.placeholders.aclose()
                error, self.error = self.error, None
                graph = self.graph
                if error is None and graph.failures and self.raises_group:
                    error = failure_group(self.name, graph.failures, graph.discovered)
                value = graph.root.value if error is None else None
            finally:  # also when a second cancellation cuts the cleanup short
                # The call and its waiters refer to each other: drop the graph
                # now, so the placeholders it kept (the user's futures among
                # them) go with the user's last reference, not with the next GC.
                self.graph.clear()
                self.resume_gc()  # after the graph is gone: it is never scanned
        return Outcome(value, error)

    @property
    def places_failures(self) -> bool:
        """May a failure leave the call running (``errors`` or an allow_failure)?"""
        return self.graph.errors is not RAISE or self.graph.allowing

    @property
    def running_loop(self) -> asyncio.AbstractEventLoop:
        assert self.loop is not None, "the call is not running"
        return self.loop

    def guard(self, func: Any) -> Any:
        """``func`` as a loop callback: whatever it raises ends the call."""
        return guarded(func, self.end)

    def end(self, error: BaseException | None = None) -> None:
        """End the call, with ``error`` or (if None) the root's value."""
        if self.ended:
            return
        self.ended = True
        self.error = error
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def start(self) -> None:
        """Hand every placeholder discovered since the last call to its engine."""
        self.pause_gc()  # if values revealed many placeholders
        collections = []
        for node in self.graph.take_new():
            kind = node.kind
            if type(kind) is Placeholder:  # registered: wait on its stand-in, if any
                stand_in = self.placeholders.add(node)
                if stand_in is None:
                    continue
                node, kind = stand_in, stand_in.kind
            if kind is FUTURE:
                self._add_future(node, node.obj)
            elif kind is CFUTURE:
                self.local.add_concurrent(node)
            elif kind is AFUTURE:
                self.local.add_asyncio(node)
            else:
                collections.append(node)
        if collections:
            self._compute(collections)
        self.local.drain()
        if self.elsewhere:
            batches, self.elsewhere = self.elsewhere, {}
            for client, nodes in batches.items():
                self.group.spawn(self._resolve_elsewhere(nodes, client))

    def complete(self, node: Node, value: Any) -> list[Node]:
        """A placeholder produced ``value`` (the engines' callback).

        Returns the placeholders discovered in ``value``.
        """
        if self.ended:
            return []
        found: list[Node] = []
        if self.placeholders.then:  # a built-in's stand-in: its value, mapped
            try:
                value = self.placeholders.value(node, value)
            except Exception as e:
                self.fail(node, e)
                return []
        try:
            found = self.graph.complete(node, value)
            if self.graph.finished:
                self.end()
            elif not self.batching:
                self.start()
        except BaseException as e:  # the loop must never see it
            self.end(e)
        return found

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Complete several placeholders, then hand on what they revealed at once.

        The engines complete a fetched chunk of futures (or a computed batch
        of collections) inside one ``batch()``: the placeholders their values
        contain reach the engines together -- a thousand ``Delayed`` that
        return ``Delayed`` are submitted as one computation, not a thousand.
        """
        self.batching += 1
        try:
            yield
        finally:
            self.batching -= 1
            if not self.batching and not self.ended:
                self.guard(self.start)()

    def fail(self, node: Node, exc: BaseException, noted: bool = False) -> None:
        """A placeholder raised ``exc`` (the engines' callback)."""
        if self.ended:
            return
        try:
            error = self.graph.fail(node, exc, noted)
            if error is not None:
                self.end(error)
            elif self.graph.finished:
                self.end()
        except BaseException as e:  # the loop must never see it
            self.end(e)

    # -- dispatching -----------------------------------------------------------

    def _add_future(self, node: Node, future: Any) -> None:
        client = self.primary(future)
        if client.loop.asyncio_loop is not self.loop:
            # Found by a call that runs without this client (inside a
            # concurrent future's result, say): resolved on the client's loop.
            self.elsewhere.setdefault(client, []).append(node)
            return
        self._remote(client).add_future(node, future)

    def _remote(self, client: Any) -> DistributedWaiter:
        if self.remote is None:
            self.remote = DistributedWaiter(self, client)
        return self.remote

    def _compute(self, nodes: list[Node]) -> None:
        client = self.client if self.client_fixed else distributed_scheduler()
        if client is None:
            self.local.compute(nodes)
            return
        if self.client is None:
            self.client = client
        if self.client.loop.asyncio_loop is not self.loop:
            self.elsewhere.setdefault(self.client, []).extend(nodes)
            return
        self._remote(self.client).compute(nodes)

    async def _resolve_elsewhere(self, nodes: list[Node], client: Any) -> None:
        """Resolve the placeholders of ``nodes`` by one call on ``client``'s loop.

        The relay call walks a :class:`_Batch` of them, so its fetches and
        submissions are batched as this call's would be, and names every
        place in this call's terms (one note, the right place). Each
        placeholder's value comes back as soon as it is resolved (its node is
        filled), not with the batch's slowest one. The relay's error -- the
        first failure, its note already right -- ends this call as it is.
        """
        loop = self.loop
        assert loop is not None
        targets: dict[Node, list[Node]] = {}  # the relay's nodes -> ours
        tainted: set[Node] = set()  # ours whose values hold failures kept

        def done(relayed: Node, value: Any) -> None:  # on the relay's loop
            mine = targets.get(relayed)
            if mine:
                # A failure the relay excused (ours are excused: see items) is
                # a failure here too, excused where ours is, and only there.
                act = self._relay_excused if relayed in call.graph.excused else self._relayed
                with contextlib.suppress(RuntimeError):  # our loop is closed: we ended
                    loop.call_soon_threadsafe(self.guard(act), mine, value)

        def failed(relayed: Node, exc: BaseException | None) -> None:  # errors="group"
            mine = targets.get(relayed, [])
            if exc is None:  # its value holds failures: it comes with the outcome
                tainted.update(mine)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.guard(self._relay_failed), mine, exc)

        call = Call(client, None, self.graph.errors, on_done=done, on_failed=failed)
        call.raises_group = False
        # The relay names places in our terms, and excuses what we excuse.
        items = [
            allow_failure(node.obj) if self.graph.allowing and excused(node) else node.obj
            for node in nodes
        ]
        batch = _Batch(items, [where(node) for node in nodes])
        out = open_call(call, batch)
        if out is not call.graph.root:
            values = batch.items if out is SAME else out
        else:
            for relayed in call.graph.new:
                targets[relayed] = [node for node in nodes if node.obj is relayed.obj]
            try:
                outcome = await run_elsewhere(call.run(), client.loop.asyncio_loop)
            except BaseException as e:
                call.abandon(client.loop.asyncio_loop, e)
                raise
            if outcome.error is not None:
                self.end(outcome.error)
                return
            values = outcome.value
        for node, value in zip(nodes, values):
            if node in tainted:
                self.graph.tainted.add(id(value))
            self.complete(node, value)  # any not filled by now (a node is filled once)

    def _relayed(self, nodes: list[Node], value: Any) -> None:
        for node in nodes:
            self.complete(node, value)

    def _relay_excused(self, nodes: list[Node], exc: BaseException) -> None:
        """A relay call excused a failure at ``nodes`` (as is: no note yet)."""
        for node in nodes:
            self.fail(node, exc)

    def _relay_failed(self, nodes: list[Node], exc: BaseException) -> None:
        """A relay call kept a failure (noted in our terms) at ``nodes`` or inside."""
        if not nodes:
            self.graph.failures.append(exc)
        for node in nodes:
            self.fail(node, exc, noted=True)

    def _timeout_message(self) -> str:
        msg = f"{self.name} did not finish within {self.timeout} s"
        pending = self.graph.pending_placeholders()
        if pending:
            msg += f"; {len(pending)} placeholder(s) still pending"
            # The place is named through the user's own labels and keys, and
            # the loop must never see what they raise.
            with contextlib.suppress(BaseException):
                msg += f", e.g. {describe(pending[0])} at {where(pending[0])}"
        return msg


class _Batch:
    """Placeholders a relay call resolves, with their places in the calling call.

    Walked as a container whose children are named by those places, so an
    error the relay raises names the place in the user's structure.
    """

    __slots__ = ("items", "places")

    def __init__(self, items: list[Any], places: list[str]):
        self.items = items
        self.places = places


register_builtin(
    _Batch,
    Container(lambda batch: (batch.items, list), lambda batch, i: batch.places[i][len("obj") :]),
)


# ---------------------------------------------------------------------------
# Public API


def prologue(client: Any, timeout: Any, progress: Progress) -> Reporter | None:
    """What every front door does first: check the arguments, make the reporter.

    ``unwrap``, ``unwrap_async``, ``as_resolved`` and ``as_resolved_async``.
    """
    check_arguments(client, timeout)
    return reporter(progress)


def open_call(call: Call, obj: Any) -> Any:
    """Walk ``obj`` for ``call``: its value if nothing waits, else the graph's root.

    A call with something to wait for has its client checked (not closed).
    """
    out = call.begin(obj)
    if out is call.graph.root:
        try:
            call.check_client()
        except BaseException:
            call.resume_gc()
            raise
    else:
        # Settled by the walk (a quote unwrapped, finished concurrent
        # futures): the call never runs, so run()'s end never clears its
        # graph, and the call and its engines refer to each other -- the
        # graph would keep the input's parts (futures in a quote among
        # them) until the garbage collector ran (issue 17).
        call.graph.clear()
    return out


def error_policy(errors: Any, return_exceptions: Any) -> Errors:
    """The policy ``errors=`` and ``return_exceptions=`` ask for (checked).

    ``return_exceptions=True`` is ``errors="return"``, as it always was.
    """
    try:
        policy = Errors(errors)
    except (ValueError, TypeError):
        raise ValueError(f"`errors` must be 'raise', 'return' or 'group', got {errors!r}") from None
    if not isinstance(return_exceptions, bool):
        raise TypeError(f"`return_exceptions` must be True or False, got {return_exceptions!r}")
    if return_exceptions:
        if policy is GROUP:
            raise ValueError(
                "`return_exceptions=True` is `errors='return'`; it cannot go with `errors='group'`"
            )
        return Errors.RETURN
    return policy


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def check_arguments(client: Any, timeout: Any) -> None:
    """A TypeError or ValueError naming a bad ``client`` or ``timeout``."""
    if client is not None and not isinstance(client, distributed().Client):
        raise TypeError(
            f"`client` must be a distributed.Client or None, got {type(client).__name__}"
        )
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"`timeout` must be a number of seconds or None, got {timeout!r}")
        if math.isnan(timeout) or timeout < 0:
            raise ValueError(f"`timeout` must be non-negative, got {timeout!r}")


# The overloads say what a type checker can know: the value of a future's
# result type, and of a quote's contents. Anything else -- containers,
# dask collections -- resolves to values whose types the checker cannot
# follow (a future's result may itself hold futures), hence Any. Issue 18.
@overload
def unwrap(
    obj: quote[T],
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: ErrorPolicy = ...,
    return_exceptions: bool = ...,
    progress: Progress = ...,
) -> T: ...
@overload
def unwrap(
    obj: Future[T] | concurrent.futures.Future[T],
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: Literal["raise", "group"] = ...,
    return_exceptions: Literal[False] = ...,
    progress: Progress = ...,
) -> T: ...
@overload
def unwrap(
    obj: Future[T] | concurrent.futures.Future[T],
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: ErrorPolicy = ...,
    return_exceptions: bool = ...,
    progress: Progress = ...,
) -> T | BaseException: ...
@overload
def unwrap(
    obj: Any,
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: ErrorPolicy = ...,
    return_exceptions: bool = ...,
    progress: Progress = ...,
) -> Any: ...
def unwrap(
    obj: Any,
    *,
    client: Any = None,  # checked at run time, for untyped callers
    timeout: float | None = None,
    errors: ErrorPolicy = "raise",
    return_exceptions: bool = False,
    progress: Progress = False,
) -> Any:
    """Replace every placeholder in ``obj`` by its value, to any depth.

    Walks lists, tuples, namedtuples, dicts (and subclasses), sets,
    frozensets, deques, dataclasses and registered containers (see
    :func:`unnest.register_container`). Resolves ``distributed.Future``,
    ``concurrent.futures.Future``, ``Delayed`` and any other dask collection,
    then resolves again whatever those resolve to. Everything else is returned
    as the very same object; so is every part of ``obj`` with nothing to
    resolve. ``obj`` is never modified.

    Parameters
    ----------
    obj : object
        Any structure.
    client : distributed.Client, optional
        The client to wait and compute through. Defaults to the client of the
        running worker task, else the client of the first bound future found,
        else the current client. Without any, dask collections are computed with
        ``dask.compute`` on the configured scheduler.
    timeout : float, optional
        Seconds for the whole call; ``TimeoutError`` when they pass. Nothing of
        the user's is cancelled on timeout.
    errors : {"raise", "return", "group"}, default "raise"
        What a failed placeholder does. ``"raise"``: its exception ends the
        call (the rest is cancelled, nothing of yours). ``"return"``: the
        exception takes the placeholder's place. ``"group"``: everything
        that can be resolved is, then an ``ExceptionGroup`` of every failure
        is raised, each with its note naming its place (failures of
        ``BaseException`` kind make it a ``BaseExceptionGroup``). A timeout,
        or an error of the walk itself, ends the call at once whatever the
        policy. Inside an :func:`unnest.allow_failure`, failures take their
        place whatever the policy.
    return_exceptions : bool, default False
        ``True`` is ``errors="return"``.
    progress : bool or callable, default False
        ``True``: a ``tqdm.auto`` bar (a widget in a notebook) of the
        placeholders resolved out of those discovered so far -- the total
        grows as futures reveal more futures; drawn only for calls that take
        longer than 0.5 s, closed on error, timeout and interrupt. Needs
        tqdm (``pip install 'unnest[progress]'``). A callable is called as
        ``progress(resolved, discovered)`` at most every 0.1 s and once at
        the end, always in the caller's thread (never an event loop's);
        what it raises ends the call and is raised.

    Returns
    -------
    object
        ``obj`` with every placeholder replaced by its fully resolved value.
        To a type checker: ``T`` for a ``Future[T]`` (distributed's or
        ``concurrent.futures``'), ``T | BaseException`` with
        ``errors="return"``; the ``T`` of a ``quote[T]``; ``Any``
        for anything else. A ``T`` that holds placeholders itself (the
        result of a task that returns futures) is seen unresolved: use
        ``typing.cast`` there.

    Raises
    ------
    Exception
        The exception of a failed placeholder, with a note naming where it
        sat (``obj['a'][2]``); ``FutureCancelledError`` for a cancelled future.
    ExceptionGroup
        Under ``errors="group"``: every failure, each with its note.
    ForgottenFutureError
        A future's key is gone from the scheduler (a task returned futures
        without handing them off).
    TimeoutError
        ``timeout`` seconds passed.
    ValueError
        A self-referencing container holds something to resolve.
    RuntimeError
        Called from the event loop thread of the client it needs: use
        :func:`unwrap_async` there.
    ImportError
        ``progress=True`` without tqdm installed.

    Examples
    --------
    >>> import dask
    >>> from unnest import unwrap
    >>> @dask.delayed
    ... def return_delayed(n):
    ...     return [dask.delayed(x + 1) for x in range(n)]
    >>> unwrap(return_delayed(3))
    [1, 2, 3]
    >>> plain = {"a": [1, 2], "b": "text"}
    >>> unwrap(plain) is plain
    True

    Every failure at once, each naming its place:

    >>> @dask.delayed
    ... def parse(text):
    ...     return int(text)
    >>> try:
    ...     unwrap({"a": parse("1"), "b": [parse("x"), parse("y")]}, errors="group")
    ... except ExceptionGroup as group:
    ...     places = [error.__notes__[0].rpartition(" at ")[2] for error in group.exceptions]
    ...     print(group, sorted(places))
    unwrap: 2 of 3 placeholders failed (2 sub-exceptions) ["obj['b'][0]", "obj['b'][1]"]

    With a cluster, futures whose results hold more futures resolve fully. The
    task asks for its worker's client (a task must not capture yours) and
    hands off the futures it returns:

    >>> from distributed import Client, get_client
    >>> from unnest import hand_off
    >>> def producer(n):
    ...     client = get_client()
    ...     return hand_off([client.submit(pow, 2, i) for i in range(n)])
    >>> client = Client()  # doctest: +SKIP
    >>> unwrap({"x": client.submit(producer, 3)})  # doctest: +SKIP
    {'x': [1, 2, 4]}
    """
    report = prologue(client, timeout, progress)
    policy = error_policy(errors, return_exceptions)
    if client is not None and in_loop_thread(client.loop.asyncio_loop):
        raise loop_thread_error(client)
    call = Call(client, timeout, policy)
    call.blocked_loop = running_loop()
    out = open_call(call, obj)
    if out is not call.graph.root:
        if report is not None:
            report.finish(call.graph)
        return out
    loop = None
    try:
        loop = call.target_loop() or private_loop()
        if in_loop_thread(loop):
            raise loop_thread_error(call.client)
        with seceded():
            if report is None:
                outcome = run_blocking(call.run(), loop)
            else:
                outcome = report.blocking(call.run(), loop, call.graph)
    except BaseException as e:
        call.abandon(loop, e)
        raise
    return outcome.unwrap()


@overload
async def unwrap_async(
    obj: quote[T],
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: ErrorPolicy = ...,
    return_exceptions: bool = ...,
    progress: Progress = ...,
) -> T: ...
@overload
async def unwrap_async(
    obj: Future[T] | concurrent.futures.Future[T],
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: Literal["raise", "group"] = ...,
    return_exceptions: Literal[False] = ...,
    progress: Progress = ...,
) -> T: ...
@overload
async def unwrap_async(
    obj: Future[T] | concurrent.futures.Future[T],
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: ErrorPolicy = ...,
    return_exceptions: bool = ...,
    progress: Progress = ...,
) -> T | BaseException: ...
@overload
async def unwrap_async(
    obj: Any,
    *,
    client: Client | None = ...,
    timeout: float | None = ...,
    errors: ErrorPolicy = ...,
    return_exceptions: bool = ...,
    progress: Progress = ...,
) -> Any: ...
async def unwrap_async(
    obj: Any,
    *,
    client: Any = None,  # checked at run time, for untyped callers
    timeout: float | None = None,
    errors: ErrorPolicy = "raise",
    return_exceptions: bool = False,
    progress: Progress = False,
) -> Any:
    """Replace every placeholder in ``obj`` by its value, without blocking.

    The same as :func:`unwrap`, for coroutines: works with asynchronous
    clients (``Client(asynchronous=True)``) and never blocks the running
    event loop.

    Parameters
    ----------
    obj : object
        Any structure.
    client : distributed.Client, optional
        As for :func:`unwrap`.
    timeout : float, optional
        Seconds for the whole call.
    errors : {"raise", "return", "group"}, default "raise"
        As for :func:`unwrap`.
    return_exceptions : bool, default False
        ``True`` is ``errors="return"``.
    progress : bool or callable, default False
        As for :func:`unwrap`, except for the thread: a callable is called
        from a thread that the call starts for it (``unnest-progress``),
        never from the running event loop's, where a callable that blocks
        would stall everything; one report at a time, the last one before
        ``unwrap_async`` returns or raises.

    Returns
    -------
    object
        ``obj`` with every placeholder replaced by its fully resolved value;
        to a type checker, as for :func:`unwrap`.

    Examples
    --------
    >>> import asyncio
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from unnest import unwrap_async
    >>> with ThreadPoolExecutor() as pool:
    ...     nested = pool.submit(lambda: [pool.submit(pow, 2, 10)])
    ...     asyncio.run(unwrap_async({"n": nested}))
    {'n': [1024]}
    """
    report = prologue(client, timeout, progress)
    call = Call(client, timeout, error_policy(errors, return_exceptions))
    out = open_call(call, obj)
    if out is not call.graph.root:
        if report is not None:
            await report.afinish(call.graph)
        return out
    loop = None
    try:
        loop = call.target_loop()
        if loop is not None and in_loop_thread(loop):
            loop = None
        run = call.run() if loop is None else run_elsewhere(call.run(), loop)
        if report is None:
            outcome = await run
        else:
            outcome = await report.awaiting(run, call.graph, call.end, loop)
    except BaseException as e:
        call.abandon(loop, e)
        raise
    return outcome.unwrap()


unwrap_or_wait = unwrap
