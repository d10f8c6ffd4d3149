"""``unwrap`` and ``unwrap_async``: resolve placeholders anywhere, to any depth.

Design
------
A call builds one ``_Resolution``. It walks the input with an explicit stack
(``_walk``), using only the registry of :mod:`unnest.traverse`, and sorts every
element into one of three outcomes:

* ``_SAME``: nothing inside to resolve; the object is reused as is;
* a new value: something inside was already resolved, the container was
  rebuilt (only containers on the path to a change are ever copied);
* a ``_Node``: something inside is still pending. A node keeps the list of its
  children's values, a count of pending slots and its parents (a node has
  several when a container or a future is referenced more than once).

Each placeholder (``distributed.Future``, ``concurrent.futures.Future``, a dask
collection) becomes a *pending node* with one slot. When its value arrives the
value is walked again -- so a future whose result holds more futures resolves
completely -- and the outcome fills the slot. A node whose last slot fills
rebuilds its container and fills its parents in turn (``_fill``, a work list,
never recursion), until the root is filled and the call returns.

Waiting is driven by one event loop, never by sleep-polling:

* with a distributed client, the client's loop. A future that is not yet done
  gets one small task awaiting its ``FutureState`` (the same event that
  ``Client.gather`` awaits); futures that are done are collected and fetched
  together by one ``Client._gather`` per loop iteration, so N finished futures
  cost one round trip, not N. Delayed and other collections discovered in one
  walk are submitted together by one ``client.compute`` (shared dependencies
  run once);
* without a client, the calling coroutine's loop (``unwrap_async``) or a
  private loop in a daemon thread (``unwrap``). ``concurrent.futures.Future``
  objects report back through ``add_done_callback`` and
  ``call_soon_threadsafe``; collections are computed with ``dask.compute``
  in an executor thread, one call per wave of discovered collections.

Every placeholder starts waiting the moment it is discovered: a fast deep
branch is never held back by a slow shallow one.

Futures are always waited on through one client, the *primary* client:
``client=``, else the client of the running worker task, else the client of
the first bound future, else the current or default client. Futures that are
unbound (a multi-process cluster deserialises returned futures without a
client) or bound to another live client of the same scheduler are taken over
by key: a new ``Future(key, client)`` registers interest with the client, and
if the client did not know the key, one ``unnest_take_over`` request per batch
asks the scheduler's hand-off plugin (:mod:`unnest.handoff`) to register the
client as wanting each key, and to say which keys are forgotten (an error at
once) or not known yet (a key a task submitted just before returning, whose
``update-graph`` is still on its way: asked again, backing off, within
``unnest.forgotten-key-grace``). We keep our future of the result these keys
came in until the answer arrives. Without the plugin we send
``client-desires-keys`` then ``report-key`` on the client's own stream; the
scheduler handles both in order, so a key it has is held for us and reported
when done, and a key it does not know is answered with ``cancelled-keys``
instead of silence. The user's own futures are never cancelled or released by
us; only ours are dropped.

The sync ``unwrap`` walks the input in the calling thread, so a structure with
nothing to resolve costs no thread hop, then blocks on a
``concurrent.futures.Future`` for the coroutine running on the loop. Inside a
worker task it secedes from the worker's thread pool while it waits and
rejoins after, so a one-thread worker can run the tasks it waits for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from unnest.traverse import CFUTURE, COLLECTION, FUTURE, LEAF, Container, _kinds, kind_of

__all__ = ["ForgottenFutureError", "unwrap", "unwrap_async", "unwrap_or_wait"]

T = TypeVar("T")

_SAME = object()  # outcome: nothing inside to resolve
_MISS = object()  # a type not classified yet
_EXPANDING = object()  # memo marker: container on the walk stack (cycle check)
_ROOT = object()  # the kind of the root node


class ForgottenFutureError(RuntimeError):
    """The scheduler no longer knows a future's key, so its value is gone.

    This is what happens to futures that a task returns when the task did not
    hand them off: the scheduler forgets them as soon as the producing task
    drops its references. Use :func:`unnest.hand_off` in the producer, or
    decorate it with :func:`unnest.resolving` / :func:`unnest.resolves_nested`.
    """

    def __init__(self, key: Any, path: str):
        self.key = key
        self.path = path
        super().__init__(
            f"the scheduler has forgotten key {key!r} (the future at {path}), so its "
            "value is lost. This happens when a task returns futures without handing "
            "them off: the task's own references were the last ones. Call "
            "unnest.hand_off(...) on the value the task returns, or decorate the task "
            "with @unnest.resolving / @unnest.resolves_nested."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.key, self.path)


class _Node:
    """A container, placeholder or root whose value is not known yet."""

    __slots__ = ("future", "kind", "npending", "obj", "parents", "rebuild", "since", "values")

    def __init__(self, obj: Any, kind: Any, rebuild: Any, values: list[Any], npending: int):
        self.obj = obj
        self.kind = kind  # a Container, FUTURE, CFUTURE, COLLECTION or _ROOT
        self.rebuild = rebuild
        self.values = values
        self.npending = npending
        self.parents: list[tuple[_Node, int]] = []
        self.future: Any = None  # the distributed.Future we wait on, if any
        self.since: float | None = None  # when we took `future` over by key


def _label(node: _Node, i: int) -> str:
    kind = node.kind
    if kind is _ROOT:
        return ""
    if kind is FUTURE or kind is CFUTURE:
        return ".result()"
    if kind is COLLECTION:
        return ".compute()"
    return kind.label(node.obj, i)


def _path(node: _Node, i: int) -> str:
    """Where slot ``i`` of ``node`` sits in the user's structure, as Python."""
    parts = []
    seen = set()
    while node.kind is not _ROOT and id(node) not in seen and node.parents:
        seen.add(id(node))
        parts.append(_label(node, i))
        node, i = node.parents[0]
    return "obj" + "".join(reversed(parts))


def _where(node: _Node) -> str:
    """Where a node sits in the user's structure."""
    return _path(*node.parents[0]) if node.parents else "obj"


def _add_note(exc: BaseException, note: str) -> BaseException:
    # The exception object may be shared (a future's stored exception); never
    # add the same note twice across repeated calls.
    notes = getattr(exc, "__notes__", None) or []
    if note not in notes:
        if sys.version_info >= (3, 11):
            exc.add_note(note)
        else:  # PEP 678 by hand: tracebacks on 3.10 do not print it
            with contextlib.suppress(Exception):
                exc.__notes__ = [*notes, note]  # type: ignore[attr-defined]
    return exc


def _rebuild_error(obj: Any, where: str, error: Exception) -> TypeError:
    return TypeError(
        f"cannot rebuild the {type(obj).__name__} at {where} from its resolved contents: {error!r}"
    )


def _describe(node: _Node) -> str:
    if node.kind is FUTURE:
        key = node.future.key if node.future is not None else node.obj.key
        return f"the future {key!r}"
    if node.kind is CFUTURE:
        return "the concurrent.futures.Future"
    return f"the dask collection {_collection_name(node.obj)}"


def _collection_name(obj: Any) -> str:
    key = getattr(type(obj), "key", None)
    if key is not None:
        with contextlib.suppress(Exception):
            return repr(obj.key)
    return type(obj).__name__


# ---------------------------------------------------------------------------
# Clients, loops, workers


def _distributed() -> Any:
    import distributed

    return distributed


_CLOSED = ("closing", "closed")


def _worker_client() -> Any:
    """The client of the worker task we run in, or None."""
    if "distributed" not in sys.modules:
        return None
    distributed = _distributed()
    try:
        distributed.get_worker()
    except ValueError:
        return None
    return distributed.get_client()


def _current_client() -> Any:
    """The worker task's client, else the current/default client, else None."""
    client = _worker_client()
    if client is not None or "distributed" not in sys.modules:
        return client
    try:
        return _distributed().Client.current(allow_global=True)
    except ValueError:
        return None


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_private: tuple[int, asyncio.AbstractEventLoop] | None = None
_private_lock = threading.Lock()


def _private_loop() -> asyncio.AbstractEventLoop:
    """A loop in a daemon thread for ``unwrap`` calls that involve no client."""
    global _private
    with _private_lock:
        if _private is None or _private[0] != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="unnest-loop", daemon=True)
            thread.start()
            _private = (os.getpid(), loop)
        return _private[1]


@contextlib.contextmanager
def _seceded() -> Iterator[None]:
    """Leave the worker's thread pool while we block, if we run in a task."""
    seceded = False
    worker_mod = sys.modules.get("distributed.worker")
    # thread_state.start_time is set only in threads running a worker task.
    if worker_mod is not None and hasattr(worker_mod.thread_state, "start_time"):
        with contextlib.suppress(KeyError):  # KeyError: already seceded
            worker_mod.secede()
            seceded = True
    try:
        yield
    finally:
        if seceded:
            _distributed().rejoin()


# ---------------------------------------------------------------------------
# The resolution


class _Resolution:
    def __init__(self, client: Any, timeout: float | None, return_exceptions: bool):
        self.client = client  # the primary client, decided lazily
        self.client_fixed = client is not None
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.return_exceptions = return_exceptions
        self.memo: dict[int, tuple[Any, Any]] = {}
        self.by_key: dict[Any, _Node] = {}
        self.new: list[_Node] = []  # pending nodes discovered, not started yet
        self.unfinished: set[_Node] = set()  # placeholders still waiting
        self.root = _Node(None, _ROOT, None, [None], 1)
        self.loop: Any = None  # the asyncio loop that run() drives
        self.done: asyncio.Future[Any] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.to_fetch: list[_Node] = []
        self.wave: list[_Node] = []
        self.error: BaseException | None = None
        self.takeovers: list[tuple[_Node, Any]] = []
        self.anchors: list[Any] = []
        self.ready: collections.deque[tuple[_Node, Any]] = collections.deque()
        self.draining = False

    # -- walking -----------------------------------------------------------

    def begin(self, obj: Any) -> Any:
        """Walk the input; return its value, or ``self.root`` if pending."""
        with _no_gc():
            out = self._walk(obj, self.root, 0)
        if out is _SAME:
            return obj
        if not isinstance(out, _Node):
            return out
        out.parents.append((self.root, 0))
        # Decide the primary client now: it decides which loop drives the wait.
        if self.client is None:
            futures = [node.obj for node in self.new if node.kind is FUTURE]
            if futures:
                bound = [f for f in futures if f._client is not None]
                self._primary((bound or futures)[0])
            else:
                collections = [node.obj for node in self.new if node.kind is COLLECTION]
                if collections:
                    self.client = _distributed_scheduler(collections)
        return self.root

    def _walk(self, obj: Any, parent: _Node, pidx: int) -> Any:
        """The outcome of ``obj``: ``_SAME``, a new value or a pending ``_Node``.

        ``parent``/``pidx`` only serve to name places in error messages.

        Memory stays proportional to the path, not to the structure: only
        containers that may be met twice (shared, or part of a cycle) go in
        the memo. A container with a single referrer cannot be met twice, and
        CPython's reference count tells us so cheaply (``_refcount_gate``).
        """
        kinds = _kinds
        try:
            kind = kinds[type(obj)]
        except KeyError:
            kind = kind_of(type(obj))
        if kind is LEAF:
            return _SAME
        if type(kind) is not Container:
            return self._placeholder(obj, kind)

        memo = self.memo
        hit = memo.get(id(obj))
        if hit is not None:
            return self._memo_outcome(hit[1], obj, parent, pidx, [])
        memo[id(obj)] = (obj, _EXPANDING)
        try:
            children, rebuild = kind.flatten(obj)
        except Exception as e:
            raise self._flatten_error(obj, e, parent, pidx, []) from e
        refcount = _refcount_gate()
        # A frame: [obj, kind, children, next index, rebuild, changes,
        #           pending, memoized, part of a cycle]
        stack: list[list[Any]] = [[obj, kind, children, 0, rebuild, None, None, True, False]]
        while True:
            frame = stack[-1]
            children = frame[2]
            i = frame[3]
            n = len(children)
            # References to an unshared child while we look at it: its slot in
            # `children` (plus its slot in the container when `children` is a
            # separate list), the loop variable and getrefcount's argument.
            base = 3 if children is frame[0] else 4
            descend = None
            while i < n:
                child = children[i]
                i += 1
                try:
                    kind = kinds[type(child)]
                except KeyError:
                    kind = kind_of(type(child))
                if kind is LEAF:
                    continue
                if type(kind) is Container:
                    if refcount is not None and refcount(child) <= base:
                        descend, memoize = child, False
                        break
                    hit = memo.get(id(child))
                    if hit is None:
                        descend, memoize = child, True
                        break
                    out = self._memo_outcome(hit[1], child, parent, pidx, stack)
                else:
                    out = self._placeholder(child, kind)
                if out is not _SAME:
                    _record(frame, i - 1, out)
            frame[3] = i
            if descend is not None:
                if memoize:
                    memo[id(descend)] = (descend, _EXPANDING)
                try:
                    children, rebuild = kind.flatten(descend)
                except Exception as e:
                    raise self._flatten_error(descend, e, parent, pidx, [*stack, None]) from e
                stack.append([descend, kind, children, 0, rebuild, None, None, memoize, False])
                continue
            stack.pop()
            if frame[5] is None and frame[6] is None:
                out = _SAME
            else:
                out = self._finish(frame, parent, pidx, stack)
            if frame[7]:
                memo[id(frame[0])] = (frame[0], out)
            if not stack:
                return out
            if out is not _SAME:
                parent_frame = stack[-1]
                _record(parent_frame, parent_frame[3] - 1, out)

    def _memo_outcome(
        self, out: Any, obj: Any, parent: _Node, pidx: int, stack: list[list[Any]]
    ) -> Any:
        if out is _EXPANDING:
            # A reference back to a container we are inside of: a cycle. It is
            # fine while that container turns out to hold nothing to resolve.
            for frame in stack:
                if frame[0] is obj:
                    frame[8] = True
            return _SAME
        if isinstance(out, _Node) and parent is not self.root and _reaches(out, parent):
            raise ValueError(
                f"cycle at {self._frames_path(parent, pidx, [*stack, None])}: a resolved value "
                "contains a container that is waiting for that very value"
            )
        return out

    def _flatten_error(
        self, obj: Any, error: Exception, parent: _Node, pidx: int, stack: list[Any]
    ) -> TypeError:
        where = self._frames_path(parent, pidx, stack)
        return TypeError(f"cannot take apart the {type(obj).__name__} at {where}: {error!r}")

    def _finish(self, frame: list[Any], parent: _Node, pidx: int, stack: list[list[Any]]) -> Any:
        obj, kind, children, _, rebuild, changes, pending = frame[:7]
        if changes is None and pending is None:
            return _SAME
        if frame[8]:
            raise ValueError(
                f"cycle at {self._frames_path(parent, pidx, [*stack, frame])}: this "
                f"{type(obj).__name__} contains itself and holds something to resolve, "
                "so it cannot be rebuilt"
            )
        values = list(children)
        for i, value in changes or ():
            values[i] = value
        if pending is None:
            try:
                return rebuild(values)
            except Exception as e:
                where = self._frames_path(parent, pidx, [*stack, frame])
                raise _rebuild_error(obj, where, e) from e
        node = _Node(obj, kind, rebuild, values, len(pending))
        for i, child in pending:
            child.parents.append((node, i))
        return node

    def _frames_path(self, parent: _Node, pidx: int, stack: list[Any]) -> str:
        """The path of the innermost frame on ``stack``."""
        parts = [_path(parent, pidx)]
        for frame in stack[:-1]:
            parts.append(frame[1].label(frame[0], frame[3] - 1))
        return "".join(parts)

    def _placeholder(self, obj: Any, kind: Any) -> Any:
        if kind is COLLECTION:
            # dask.is_dask_collection, without importing dask for other types.
            try:
                graph = obj.__dask_graph__()
            except Exception:
                graph = None
            if graph is None:
                return _SAME
        if kind is FUTURE:
            node = self.by_key.get(obj.key)
            if node is None:
                node = self.by_key[obj.key] = _Node(obj, kind, None, [None], 1)
                self.new.append(node)
            return node
        hit = self.memo.get(id(obj))
        if hit is not None:
            return hit[1]
        node = _Node(obj, kind, None, [None], 1)
        self.memo[id(obj)] = (obj, node)
        self.new.append(node)
        return node

    # -- completing ----------------------------------------------------------

    def _complete(self, node: _Node, value: Any) -> None:
        """A placeholder produced ``value``: walk it and fill the node's slot."""
        self.unfinished.discard(node)
        anchor, node.future = node.future, None
        if _kinds.get(type(value), _MISS) is LEAF:
            # The common case -- a plain value -- needs no walk.
            try:
                self._fill(node, value)
            except BaseException as e:
                self._abort(e)
            return
        try:
            out = self._walk(value, node, 0)
            if isinstance(out, _Node):
                out.parents.append((node, 0))
            else:
                self._fill(node, value if out is _SAME else out)
            self._start()
        except BaseException as e:
            self._abort(e)
        if self.takeovers and anchor is not None:
            # Futures found in `value` are being taken over: keep the future
            # of `value` until that is confirmed (see _take_over_batch).
            self.anchors.append(anchor)

    def _fill(self, node: _Node, value: Any) -> None:
        """Put ``value`` in slot 0 of ``node``; complete what that completes.

        A work list, not recursion (a chain can be 100,000 nodes long), and
        allocated only where a completed node has several parents.
        """
        i = 0
        work: list[tuple[_Node, int, Any]] | None = None
        memo = self.memo
        while True:
            node.values[i] = value
            node.npending -= 1
            if not node.npending:
                kind = node.kind
                if kind is _ROOT:
                    if self.done is not None and not self.done.done():
                        self.done.set_result(value)
                elif type(kind) is Container:
                    try:
                        value = node.rebuild(node.values)
                    except Exception as e:
                        raise _rebuild_error(node.obj, _where(node), e) from e
                    memo[id(node.obj)] = (node.obj, value)
                else:
                    value = node.values[0]
                parents = node.parents
                if len(parents) == 1:
                    node, i = parents[0]
                    continue
                if parents:
                    if work is None:
                        work = []
                    work.extend((parent, j, value) for parent, j in parents)
            if not work:
                return
            node, i, value = work.pop()

    def _fail(self, node: _Node, exc: BaseException) -> None:
        """A placeholder raised ``exc``."""
        self.unfinished.discard(node)
        node.future = None
        if self.return_exceptions:
            try:
                self._fill(node, exc)
            except BaseException as e:
                self._abort(e)
            return
        where = _where(node)
        self._abort(_add_note(exc, f"raised by {_describe(node)} at {where}"))

    def _abort(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        elif self.error is None:
            self.error = exc

    # -- waiting -------------------------------------------------------------

    def _start(self) -> None:
        """Start waiting on every placeholder discovered since the last call."""
        new, self.new = self.new, []
        for node in new:
            self.unfinished.add(node)
            if node.kind is FUTURE:
                self._start_future(node, node.obj)
            elif node.kind is CFUTURE:
                self._start_concurrent(node)
            else:
                self.wave.append(node)
        if self.wave:
            wave, self.wave = self.wave, []
            self._compute(wave)
        if self.ready and not self.draining:
            # Finished concurrent futures are taken in a loop, not by
            # recursion: a chain of 100,000 of them must not overflow.
            self.draining = True
            try:
                while self.ready:
                    self._concurrent_done(*self.ready.popleft())
            finally:
                self.draining = False

    def _primary(self, future: Any = None) -> Any:
        """The client all futures are waited on through (decided once).

        ``client=``, else the running worker task's client, else the client
        of ``future`` (the first bound future found) if it is open, else the
        current or default client.
        """
        if self.client is None:
            client = _worker_client()
            owner = future._client if future is not None else None
            if client is None and owner is not None and owner.status not in _CLOSED:
                client = owner
            if client is None:
                client = _current_client()
            if client is None:
                raise ValueError(
                    f"cannot resolve the future {future.key!r}: it is not bound to a "
                    "client and no client is active. Pass client=... or create a "
                    "distributed.Client first"
                )
            self.client = client
        return self.client

    def _bind(self, node: _Node, future: Any) -> Any:
        """``future``, or an equivalent one bound to the primary client."""
        client = self._primary(future)
        owner = future._client
        if owner is client and future._state is not None:
            return future
        if owner is not None:
            where = _where(node)
            if owner.status in _CLOSED:
                raise ValueError(f"the future {future.key!r} at {where} belongs to a closed client")
            if owner.scheduler.address != client.scheduler.address:
                raise ValueError(
                    f"the future {future.key!r} at {where} belongs to a client of "
                    f"scheduler {owner.scheduler.address}, but unnest is resolving "
                    f"with a client of {client.scheduler.address}"
                )
        if client.status in _CLOSED:
            raise ValueError(f"cannot resolve the future {future.key!r}: the client is closed")
        key = future.key
        known = key in client.futures
        ours = type(future)(key, client)
        node.since = time.monotonic()
        if not known:
            # Batched: one take-over request per loop iteration.
            if not self.takeovers:
                self.loop.call_soon(self._take_over)
            self.takeovers.append((node, ours))
        return ours

    def _start_future(self, node: _Node, future: Any) -> None:
        try:
            client = self._primary(future)
            if client.loop.asyncio_loop is not self.loop:
                # Found by a resolution that runs without this client (e.g.
                # inside a concurrent future's result): resolve it on the
                # client's loop.
                self._spawn(self._resolve_elsewhere(node, future, client))
                return
            future = node.future = self._bind(node, future)
        except BaseException as e:
            self._abort(e)
            return
        if future._state.done():
            self._future_done(node)
        else:
            self._spawn(self._wait_future(node, future))

    def _take_over(self) -> None:
        batch, self.takeovers = self.takeovers, []
        anchors, self.anchors = self.anchors, []
        self._spawn(self._take_over_batch(batch, anchors))

    async def _take_over_batch(self, batch: list[tuple[_Node, Any]], anchors: list[Any]) -> None:
        """Register interest in keys this client did not know (see handoff).

        ``anchors`` are our futures of the results these keys came in: held
        until the scheduler confirms, so that a hand-off whose carrier is that
        result cannot end in between.
        """
        from unnest import handoff

        client = self.client
        keys = list(dict.fromkeys(future.key for _, future in batch))
        try:
            reply = await handoff.request(client, "unnest_take_over", keys=keys, client=client.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            reply = None  # no plugin: fall back to asking on our own stream
        forgotten = set(reply["forgotten"]) if reply else set()
        unknown = set(reply["unknown"]) if reply else set(keys)
        for node, future in batch:
            if node.future is not future:
                continue
            if future.key in forgotten:
                self._fail(node, ForgottenFutureError(future.key, _where(node)))
            elif future.key in unknown:
                if reply is None:
                    _ask_for(client, future.key)  # answered on our stream
                else:
                    self._spawn(self._ask_again(node, future, 0.0))
        del anchors  # now the carriers may go

    async def _wait_future(self, node: _Node, future: Any) -> None:
        await future._state.wait()
        self._future_done(node)

    def _future_done(self, node: _Node) -> None:
        future = node.future
        status = future._state.status
        if status == "finished":
            if not self.to_fetch:
                self.loop.call_soon(self._fetch)
            self.to_fetch.append(node)
        elif status == "error":
            from distributed.core import clean_exception

            _, exc, tb = clean_exception(future._state.exception, future._state.traceback)
            assert exc is not None
            self._fail(node, exc.with_traceback(tb))
        else:  # cancelled
            exc = future._state.exception
            reason = getattr(exc, "reason", None)
            if future._client.status in _CLOSED:
                error = RuntimeError(
                    f"the client was closed while unwrap waited for the future "
                    f"{future.key!r} at {_where(node)}"
                )
                error.__cause__ = exc
                self._abort(error)
                return
            if node.since is None or reason not in ("unknown", "already forgotten"):
                self._fail(node, exc)
                return
            # The scheduler does not know a key we took over. Either it forgot
            # it, or the task that returned the future submitted it over
            # another connection (its worker's client) whose message has not
            # arrived yet: distributed orders nothing across connections. Ask
            # again, backing off, until the grace period ends -- unless the
            # scheduler's transition log shows the key was forgotten.
            waited = time.monotonic() - node.since
            if reason == "unknown" and waited < _forgotten_grace():
                # Every Future of this key in this client came from a takeover
                # (the client did not know the key), so "pending" is the truth.
                future._state.reset()
                self._spawn(self._ask_again(node, future, waited))
                return
            self._fail(node, ForgottenFutureError(future.key, _where(node)))

    async def _ask_again(self, node: _Node, future: Any, waited: float) -> None:
        """Ask again about a key the scheduler did not know, until the grace ends.

        With the hand-off plugin the question is an ``unnest_take_over``
        request (its answer tells forgotten from not-yet-known); without it,
        the scheduler's transition log first, then desire + report again on
        our stream.
        """
        from unnest import handoff

        client = future._client
        key = future.key
        plugin = handoff.available(client)
        while True:
            if not plugin:
                try:
                    story = await client.scheduler.get_story(keys_or_stimuli=[key])
                except Exception:
                    story = []
                if any(t[0] == key and t[2] == "forgotten" for t in story):
                    break
            grace = _forgotten_grace()
            delay = min(max(2 * waited, 0.01), max(grace - waited, 0))
            await asyncio.sleep(delay)  # a bounded back-off between two questions
            if node.future is not future or node not in self.unfinished:
                return
            if not plugin:
                _ask_for(client, key)
                await self._wait_future(node, future)
                return
            reply = await handoff.request(client, "unnest_take_over", keys=[key], client=client.id)
            if not reply["unknown"] and not reply["forgotten"]:
                return  # known now: the scheduler reports it to our waiter
            waited = time.monotonic() - node.since if node.since is not None else grace
            if reply["forgotten"] or waited >= grace:
                break
        if node.future is future and node in self.unfinished:
            self._fail(node, ForgottenFutureError(key, _where(node)))

    def _fetch(self) -> None:
        batch, self.to_fetch = self.to_fetch, []
        self._spawn(self._gather(batch))

    async def _gather(self, batch: list[_Node]) -> None:
        client = self.client
        futures = {node.future.key: node.future for node in batch}
        try:
            data = await client._gather(futures, errors="skip")
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                raise
            self._abort(e)
            return
        with _no_gc():
            for node in batch:
                future = node.future
                if future is None:
                    continue
                if future._state.status == "finished" and future.key in data:
                    self._complete(node, data[future.key])
                else:
                    self._future_done(node)

    async def _resolve_elsewhere(self, node: _Node, future: Any, client: Any) -> None:
        coro = unwrap_async(future, client=client, return_exceptions=self.return_exceptions)
        try:
            value = await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(coro, client.loop.asyncio_loop)
            )
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._fail(node, e)
        else:
            self._complete(node, value)

    def _start_concurrent(self, node: _Node) -> None:
        if node.obj.done():
            self.ready.append((node, node.obj))
            return
        loop = self.loop

        def done(f: Any) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed: call is over
                loop.call_soon_threadsafe(self._concurrent_done, node, f)

        node.obj.add_done_callback(done)

    def _concurrent_done(self, node: _Node, f: Any) -> None:
        if node not in self.unfinished:
            return
        if f.cancelled():
            import concurrent.futures

            self._fail(node, concurrent.futures.CancelledError())
            return
        exc = f.exception()
        if exc is not None:
            self._fail(node, exc)
        else:
            self._complete(node, f.result())

    def _compute(self, wave: list[_Node]) -> None:
        collections = [node.obj for node in wave]
        client = self.client if self.client_fixed else None
        if client is None:
            client = _distributed_scheduler(collections)
        if client is not None:
            if self.client is None:
                self.client = client
            try:
                futures = self.client.compute(collections)
            except BaseException as e:
                self._abort(e)
                return
            for node, future in zip(wave, futures):
                self._start_future(node, future)
            return
        self._spawn(self._compute_locally(wave, collections))

    async def _compute_locally(self, wave: list[_Node], collections: list[Any]) -> None:
        import dask

        loop = asyncio.get_running_loop()
        try:
            values = await loop.run_in_executor(None, lambda: dask.compute(*collections))
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            if len(wave) == 1:
                self._fail(wave[0], e)
                return
            if not self.return_exceptions:
                places = ", ".join(_where(node) for node in wave)
                self._abort(
                    _add_note(e, f"raised while computing the dask collections at {places}")
                )
                return
            # To put each exception in its place, compute one by one.
            for node in wave:
                self._spawn(self._compute_locally([node], [node.obj]))
            return
        for node, value in zip(wave, values):
            self._complete(node, value)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- running -------------------------------------------------------------

    def target_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop to drive this resolution on, or None for "any"."""
        if self.client is not None:
            return self.client.loop.asyncio_loop
        return None

    async def run(self) -> Any:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        if self.error is not None:
            raise self.error
        try:
            self._start()
            if self.deadline is None:
                return await self.done
            remaining = max(self.deadline - time.monotonic(), 0)
            try:
                return await asyncio.wait_for(self.done, remaining)
            except asyncio.TimeoutError:
                raise TimeoutError(self._timeout_message()) from None
        finally:
            for task in list(self.tasks):
                task.cancel()
            self.unfinished.clear()

    def _timeout_message(self) -> str:
        pending = [node for node in self.unfinished if node.parents]
        msg = f"unwrap did not finish within {self.timeout} s"
        if pending:
            node = pending[0]
            msg += (
                f"; {len(pending)} placeholder(s) still pending, e.g. "
                f"{_describe(node)} at {_where(node)}"
            )
        return msg


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector during a burst of allocations.

    A walk allocates a node per pending container and placeholder; every 700
    allocations start a collection, and the older generations' collections
    scan every object in the process. Measured on 10,000 nested futures: the
    walk took 183-194 ms with the collector on, 58-82 ms with it paused. Only
    re-enabled if it was enabled (a user's gc.disable() is respected).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _ask_for(client: Any, key: Any) -> None:
    """Register interest in a key the client did not know, and ask its state.

    Desire first, then report: the scheduler handles both in order on this
    client's stream, so a key it knows is now held for us and reported when
    done, and a key it does not know is answered with ``cancelled-keys``
    instead of silence.
    """
    client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
    client._send_to_scheduler({"op": "report-key", "key": key})


def _config_seconds(name: str, default: str) -> float:
    """A duration from dask's config (``"2s"``, ``"1h"``, or seconds)."""
    import dask
    from dask.utils import parse_timedelta

    return parse_timedelta(dask.config.get(name, default))


def _forgotten_grace() -> float:
    return _config_seconds("unnest.forgotten-key-grace", "2s")


def _record(frame: list[Any], i: int, out: Any) -> None:
    """Note child ``i``'s outcome: frame[6] collects pending nodes, frame[5] new values."""
    if isinstance(out, _Node):
        if frame[6] is None:
            frame[6] = []
        frame[6].append((i, out))
    else:
        if frame[5] is None:
            frame[5] = []
        frame[5].append((i, out))


_gate: list[Any] = []


def _refcount_gate() -> Callable[[Any], int] | None:
    """``sys.getrefcount`` if it tells unshared containers apart here, else None.

    Checked once, on this interpreter, with the walker itself: a shared child
    and a cycle must land in the memo. Where they would not (another
    implementation, or a CPython that stops counting some references), every
    container is memoized instead: slower and bigger, never wrong.
    """
    if not _gate:
        _gate.append(None)  # while checking, and if the check fails
        getrefcount = getattr(sys, "getrefcount", None)
        if getrefcount is not None:
            _gate[0] = getrefcount
            ok = _memoizes(_shared_pair) and _memoizes(_cycle)
            _gate[0] = getrefcount if ok else None
    return _gate[0]


def _shared_pair() -> tuple[Any, Any]:
    shared = [1]
    return {"a": [shared], "b": (shared,)}, shared


def _cycle() -> tuple[Any, Any]:
    inner: list[Any] = [1]
    inner.append(inner)
    return [[inner]], inner


def _memoizes(make: Callable[[], tuple[Any, Any]]) -> bool:
    obj, target = make()
    target_id = id(target)
    del target  # only the structure refers to it now
    resolution = _Resolution(None, None, False)
    resolution._walk(obj, resolution.root, 0)
    return target_id in resolution.memo


def _reaches(start: _Node, target: _Node) -> bool:
    """Is ``start`` an ancestor of ``target`` (would waiting on it be a cycle)?"""
    seen = set()
    work = [target]
    while work:
        node = work.pop()
        if node is start:
            return True
        if id(node) in seen:
            continue
        seen.add(id(node))
        work.extend(p for p, _ in node.parents)
    return False


def _distributed_scheduler(collections: list[Any]) -> Any:
    """The client dask would compute ``collections`` on, or None if local.

    Mirrors ``dask.base.get_scheduler`` (a ``scheduler`` set in dask's config
    wins, else the worker's or current client) without its fallback to a
    local scheduler when it runs in the client's event loop thread.
    """
    if "distributed" not in sys.modules:
        return None
    import dask

    scheduler = dask.config.get("scheduler", None)
    if scheduler is None or scheduler in ("distributed", "dask.distributed"):
        return _current_client()
    if isinstance(scheduler, _distributed().Client):
        return scheduler
    return None


# ---------------------------------------------------------------------------
# Public API


def _check(client: Any, timeout: Any) -> None:
    if client is not None:
        distributed = _distributed()
        if not isinstance(client, distributed.Client):
            raise TypeError(
                f"`client` must be a distributed.Client or None, got {type(client).__name__}"
            )
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"`timeout` must be a number of seconds or None, got {timeout!r}")
        if math.isnan(timeout) or timeout < 0:
            raise ValueError(f"`timeout` must be non-negative, got {timeout!r}")


def unwrap(
    obj: T,
    *,
    client: Any = None,
    timeout: float | None = None,
    return_exceptions: bool = False,
) -> T:
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
    return_exceptions : bool, default False
        Put the exception of a failed placeholder in its place instead of
        raising it.

    Returns
    -------
    object
        ``obj`` with every placeholder replaced by its fully resolved value.

    Raises
    ------
    Exception
        The exception of a failed placeholder, with a note naming where it
        sat (``obj['a'][2]``); ``FutureCancelledError`` for a cancelled future.
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

    With a cluster, futures whose results hold more futures resolve fully:

    >>> client = distributed.Client()  # doctest: +SKIP
    >>> unwrap({"x": client.submit(lambda: [client.submit(inc, 1)])})  # doctest: +SKIP
    {'x': [2]}
    """
    _check(client, timeout)
    if client is not None and _in_loop_thread(client.loop.asyncio_loop):
        raise _loop_thread_error(client)
    resolution = _Resolution(client, timeout, return_exceptions)
    out = resolution.begin(obj)
    if out is not resolution.root:
        return out
    loop = resolution.target_loop() or _private_loop()
    if _in_loop_thread(loop):
        raise _loop_thread_error(resolution.client)
    with _seceded():
        return asyncio.run_coroutine_threadsafe(resolution.run(), loop).result()


def _loop_thread_error(client: Any) -> RuntimeError:
    return RuntimeError(
        f"unwrap() was called in the event loop thread of {client!r}; blocking "
        "there would deadlock (distributed hands back a coroutine in this "
        "situation). Use `await unnest.unwrap_async(...)` instead."
    )


async def unwrap_async(
    obj: T,
    *,
    client: Any = None,
    timeout: float | None = None,
    return_exceptions: bool = False,
) -> T:
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
    return_exceptions : bool, default False
        Put exceptions in place instead of raising.

    Returns
    -------
    object
        ``obj`` with every placeholder replaced by its fully resolved value.

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
    _check(client, timeout)
    resolution = _Resolution(client, timeout, return_exceptions)
    out = resolution.begin(obj)
    if out is not resolution.root:
        return out
    loop = resolution.target_loop()
    if loop is None or _in_loop_thread(loop):
        return await resolution.run()
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(resolution.run(), loop))


unwrap_or_wait = unwrap
