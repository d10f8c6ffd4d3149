"""Waiting through a distributed client, on that client's event loop.

* A future that is not done yet gets one small task (in the call's task
  group) awaiting its ``FutureState`` -- the event ``Client.gather`` awaits.
  Futures that are done are queued and fetched together: at most
  :data:`FETCH_PARALLEL` scheduler ``gather`` requests are in flight (as
  ``Client._gather`` makes them; see :meth:`DistributedWaiter._values`),
  each takes up to :data:`FETCH_CHUNK` of the queued keys. N finished
  futures cost N / FETCH_CHUNK round trips, not N; the fetch's transient
  memory stays that of a chunk; the values of one chunk are walked while the
  next one travels; and futures that
  finish one by one while fetches are in flight queue up and go together
  (so do the placeholders their values hold: see ``Call.batch``), the
  batching adapting to the load, with no timer.
* Collections are submitted with ``client.compute``, one call per batch that
  :func:`unnest._wait_local.batches` deems safe (shared dependencies run once);
  a batch of ``Delayed`` as one culled graph with ``Client.get``, which is
  what ``client.compute`` sends for them at a third of its cost.
* Futures that are unbound (a multi-process cluster deserialises returned
  futures without a client) or bound to another live client of the same
  scheduler are *taken over* by key: a new ``Future(key, client)`` registers
  interest with the client and, when the client did not know the key, one
  :func:`unnest._protocol.take_over` request per batch asks the scheduler's
  hand-off plugin to make the client want each key and to say which keys are
  forgotten (an error at once) or not known yet (a key a task submitted just
  before returning, whose ``update-graph`` is still on its way: asked again,
  backing off, within ``unnest.forgotten-key-grace``). The future of the
  result these keys came in (the hand-off's *carrier*) is kept until the
  answer arrives. Without the plugin the waiter asks on the client's own
  stream (:func:`unnest._protocol.ask_on_stream`).

Invariants
----------
* The futures this waiter creates (take-overs and computations) are *ours*;
  the user's own futures are used as they are and never cancelled or
  released. Ours are dropped as soon as their node completes, and every one
  still held is released when the call ends -- value, error, timeout or
  interrupt -- so a call leaves no key pinned and no state in
  ``client.futures`` behind it.
* Every coroutine runs in the call's task group; every exception reaches the
  call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from unnest import _distributed, _protocol
from unnest._caller import Caller
from unnest._exceptions import ForgottenFutureError, HandOffUnavailable, detached
from unnest._graph import PENDING, Node, where
from unnest._runtime import CLOSED, forgotten_grace, no_gc
from unnest._wait_local import batches

# Keys per gather request, and how many of those run at once. One gather of
# all keys at once peaked above a flat client.gather's memory; in chunks it
# stays well below (benchmarks/scaling.py, its memory column). Two in
# flight: the values of one chunk are walked while the next one travels.
FETCH_CHUNK = 2_000
FETCH_PARALLEL = 2


def check_owner(future: Any, client: Any, place: str) -> None:
    """Raise a ValueError if ``future`` cannot be resolved through ``client``."""
    owner = _distributed.owner(future)
    if owner is not None and owner is not client:
        if owner.status in CLOSED:
            raise ValueError(f"the future {future.key!r} at {place} belongs to a closed client")
        if owner.scheduler.address != client.scheduler.address:
            raise ValueError(
                f"the future {future.key!r} at {place} belongs to a client of "
                f"scheduler {owner.scheduler.address}, but unnest is resolving "
                f"with a client of {client.scheduler.address}"
            )
    if client.status in CLOSED:
        raise ValueError(f"cannot resolve the future {future.key!r}: the client is closed")


class DistributedWaiter:
    """Futures and collections of one call, waited on through one client."""

    def __init__(self, call: Caller, client: Any):
        self.call = call
        self.client = client
        # What this engine knows of the nodes it waits for: the future waited
        # on for each (the user's own, or one of ours: a take-over or a
        # computation), since when a taken-over key is asked about, and the
        # key of the result a placeholder was found in (its carrier).
        self.futures: dict[Node, Any] = {}
        self.since: dict[Node, float] = {}
        self.carriers: dict[Node, Any] = {}
        self.to_fetch: list[Node] = []
        self.fetchers = 0  # coroutines fetching from to_fetch
        # Fetch requests on their way, with their keys: they outlive a call
        # that ends meanwhile (see _request), and our futures of their keys
        # are released only once they are answered.
        self.requests: dict[asyncio.Task[Any], list[Any]] = {}
        self.takeovers: list[tuple[Node, Any]] = []
        self.anchors: list[Any] = []  # carriers kept until take-overs are confirmed
        self.plugin: bool | None = None  # the take-over request works
        self.direct: bool | None = None  # the client gathers from workers directly

    # -- futures ---------------------------------------------------------------

    def add_future(self, node: Node, future: Any) -> None:
        """Wait on ``future`` (the user's, or a collection's) for ``node``."""
        future = self.futures[node] = self._bind(node, future)
        if _distributed.is_done(future):
            self._state_done(node)
        else:
            self.call.group.spawn(self._wait(node, future))

    def _bind(self, node: Node, future: Any) -> Any:
        """``future``, or an equivalent one of ours bound to the client."""
        client = self.client
        if _distributed.owner(future) is client:
            return future
        check_owner(future, client, where(node))
        key = future.key
        known = _distributed.knows(client, key)
        ours = _distributed.new_future(key, client, future)
        self.since[node] = time.monotonic()
        if not known:
            # Batched: one take-over request per loop iteration.
            if not self.takeovers:
                self.call.running_loop.call_soon(self.call.guard(self._take_over))
            self.takeovers.append((node, ours))
        return ours

    async def _wait(self, node: Node, future: Any) -> None:
        await _distributed.wait_done(future)
        if self.futures.get(node) is future:
            self._state_done(node)

    def _state_done(self, node: Node) -> None:
        future = self.futures[node]
        status = _distributed.status(future)
        if status == "finished":
            if not self.to_fetch:
                self.call.running_loop.call_soon(self.call.guard(self._fetch))
            self.to_fetch.append(node)
        elif status in ("pending", "lost"):
            # Lost between its report and our fetch (a worker died): it runs
            # again, and reports again.
            self.call.group.spawn(self._wait(node, future))
        else:  # erred or cancelled
            failure = _distributed.stored_failure(future)
            if failure is None:
                self.call.group.spawn(self._fetch_failure(node, future, status))
            else:
                self._failed(node, future, status, *failure)

    async def _fetch_failure(self, node: Node, future: Any, status: str) -> None:
        failure = await _distributed.fetch_failure(self.client, future)
        if self.futures.get(node) is future:
            self._failed(node, future, status, *failure)

    def _failed(self, node: Node, future: Any, status: str, exc: BaseException, tb: Any) -> None:
        if status == "error":
            self._fail(node, detached(exc).with_traceback(tb))
        else:
            self._cancelled(node, future, exc)

    def _cancelled(self, node: Node, future: Any, stored: BaseException) -> None:
        from distributed.client import FutureCancelledError

        reason = getattr(stored, "reason", None)
        # A fresh error, not the one the client's state keeps: raising that one
        # would tie the state to our frames (and the user's futures in them)
        # through its traceback, until the garbage collector runs.
        exc = FutureCancelledError(future.key, reason, getattr(stored, "msg", None))
        client = self.client
        if client.status in CLOSED:
            error = RuntimeError(
                f"the client was closed while unwrap waited for the future "
                f"{future.key!r} at {where(node)}"
            )
            error.__cause__ = exc
            self.call.end(error)
            return
        since = self.since.get(node)
        if since is None or reason not in ("unknown", "already forgotten"):
            self._fail(node, exc)  # the user's own future, or a reason that says it all
            return
        if not _distributed.state_is_clients(client, future):
            # The client dropped the state itself: Client.cancel (whose default
            # reason is also "unknown") or a release. The user cancelled it.
            self._fail(node, exc)
            return
        # The scheduler does not know a key we took over. Either it forgot
        # it, or the task that returned the future submitted it over another
        # connection (its worker's client) whose message has not arrived yet:
        # distributed orders nothing across connections. Ask again, backing
        # off, until the grace period ends.
        waited = time.monotonic() - since
        if reason == "unknown" and waited < forgotten_grace():
            self.call.group.spawn(self._renew(node, future, waited))
            return
        self._fail(node, ForgottenFutureError(future.key, where(node)))

    async def _renew(self, node: Node, future: Any, waited: float) -> None:
        # Every Future of this key in this client came from a take-over (the
        # client did not know the key), so "pending" is the truth.
        renewed = await _distributed.renew(self.client, future)
        if self.futures.get(node) is not future:
            if renewed is not future:
                renewed.release()
            return
        self.futures[node] = renewed
        await self._ask_again(node, renewed, waited, rewait=True)

    def _fail(self, node: Node, exc: BaseException) -> None:
        self._drop(node)
        self.call.fail(node, exc)

    def _drop(self, node: Node) -> None:
        """The node is done with its future: one of ours is released now, not
        whenever the last reference to it goes (a frame or a traceback may
        hold it until the garbage collector runs)."""
        future = self.futures.pop(node, None)
        self.since.pop(node, None)
        self.carriers.pop(node, None)
        if future is not None and future is not node.obj:
            future.release()

    # -- fetching --------------------------------------------------------------

    def _fetch(self) -> None:
        """Start fetchers for the queued futures, as many as may run."""
        chunks = -(-len(self.to_fetch) // FETCH_CHUNK)
        while self.fetchers < min(FETCH_PARALLEL, chunks):
            self.fetchers += 1
            self.call.group.spawn(self._fetcher())

    async def _fetcher(self) -> None:
        try:
            while self.to_fetch and not self.call.ended:
                batch = self.to_fetch[:FETCH_CHUNK]
                del self.to_fetch[:FETCH_CHUNK]
                await self._gather(batch)
        finally:
            self.fetchers -= 1

    async def _gather(self, batch: list[Node]) -> None:
        mine = self.futures
        futures = {f.key: f for f in (mine.get(node) for node in batch) if f is not None}
        failure: BaseException | None = None
        try:
            data = await self._request(futures)
        except OSError:
            raise  # the connection (CommClosedError is one): the whole call
        except Exception as e:
            # A value that cannot be serialized on its worker, or unpickled
            # here, fails the whole request (the scheduler's gather raises).
            # It belongs to its key alone: halve the batch until it is found,
            # and deliver the others (issue 17: one bad result failed its
            # chunk, without a place). Handled out of this block, and without
            # the traceback through our frames (which hold the batch's
            # futures): a placed error must not pin them.
            e.__context__ = None
            failure = e.with_traceback(None)
        if failure is not None:
            del futures
            if len(batch) > 1:
                failure = None
                half = len(batch) // 2
                await self._gather(batch[:half])
                await self._gather(batch[half:])
                return
            node = batch[0]
            if node in self.futures and node.state is PENDING:
                self._fail(node, failure)
            return
        carriers = []
        with no_gc(), self.call.batch():
            for node in batch:
                future = mine.get(node)
                if future is None or node.state is not PENDING:
                    continue
                if _distributed.status(future) == "finished" and future.key in data:
                    self._drop(node)
                    found = self.call.complete(node, data[future.key])
                    if found:
                        # The value held placeholders: say which result they
                        # came in, for the take-over, and keep its future.
                        for child in found:
                            self.carriers[child] = future.key
                        carriers.append(future)
                    if self.call.ended:
                        return
                else:
                    self._state_done(node)
        if self.takeovers:
            # Futures found in these values are being taken over: keep the
            # futures of the values until that is confirmed.
            self.anchors += carriers

    async def _request(self, futures: dict[Any, Any]) -> dict[Any, Any]:
        """:meth:`_values`, in a task that finishes even if the call ends first.

        The scheduler goes on gathering a request whose sender stopped
        waiting; had the call's end released its keys meanwhile, the
        scheduler would log an ERROR ("Couldn't gather keys ... forgotten")
        in the user's logs for a clean early exit (issue 17). So the request
        is shielded from the call's cancellation, and :meth:`aclose` releases
        its keys once it is answered.
        """
        task = asyncio.ensure_future(self._values(futures))
        self.requests[task] = list(futures)
        task.add_done_callback(self._answered)
        return await asyncio.shield(task)

    def _answered(self, task: asyncio.Task[Any]) -> None:
        del self.requests[task]
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaited it has it, or has ended

    async def _values(self, futures: dict[Any, Any]) -> dict[Any, Any]:
        """The values of ``futures`` (reported finished), by key: one request
        (:func:`unnest._distributed.fetch`); keys it could not bring are
        waited for again by the caller."""
        return await _distributed.fetch(self.client, futures, self._direct())

    def _direct(self) -> bool:
        """Does the client gather from the workers directly (``Client._gather``'s rule)?"""
        if self.direct is None:
            direct = self.client.direct_to_workers
            if direct is None:
                from distributed import get_worker

                try:
                    worker = get_worker()
                except ValueError:
                    direct = False
                else:
                    direct = worker.scheduler.address == self.client.scheduler.address
            self.direct = bool(direct)
        return self.direct

    # -- taking over -------------------------------------------------------------

    def _take_over(self) -> None:
        batch, self.takeovers = self.takeovers, []
        anchors, self.anchors = self.anchors, []
        self.call.group.spawn(self._take_over_batch(batch, anchors))

    async def _take_over_batch(self, batch: list[tuple[Node, Any]], anchors: list[Any]) -> None:
        """Make the client want keys it did not know (see the hand-off).

        ``anchors`` are the futures of the results these keys came in: held
        until the scheduler confirms, so that a hand-off whose carrier is
        that result cannot end in between.
        """
        client = self.client
        keys = list(dict.fromkeys(future.key for _, future in batch))
        carriers = {f.key: self.carriers[node] for node, f in batch if node in self.carriers}
        reply = None
        if self.plugin is not False:
            try:
                reply = await _protocol.take_over(client, keys, carriers)
                self.plugin = True
            except HandOffUnavailable:
                self.plugin = False  # ask on our own stream instead
        why = reply.get("why", {}) if reply else {}
        hints = reply.get("hints", {}) if reply else {}
        forgotten = set(reply["forgotten"]) if reply else set()
        unknown = set(reply["unknown"]) if reply else set(keys)
        for node, future in batch:
            key = future.key
            if future is not self.futures.get(node):
                continue
            if key in forgotten:
                self._fail(node, _protocol.gone_error(key, where(node), why.get(key)))
            elif key in unknown:
                if reply is None:
                    if not _protocol.ask_on_stream(client, key):  # answered on our stream
                        self._fail(node, _protocol.cannot_ask(key, where(node)))
                else:
                    self.call.group.spawn(self._ask_again(node, future, 0.0, hint=hints.get(key)))
        del anchors  # now the carriers may go

    async def _ask_again(
        self,
        node: Node,
        future: Any,
        waited: float,
        rewait: bool = False,
        hint: str | None = None,
    ) -> None:
        """Ask again about a key the scheduler did not know, until the grace ends.

        With the hand-off plugin the question is a take-over request (its
        answer tells forgotten from not-yet-known); without it, the
        scheduler's transition log first, then desire + report again on our
        stream. ``hint``: why an older incarnation of the key went, for the
        error if the grace ends with the key still unknown.
        """
        client = self.client
        key = future.key
        while True:
            if not self.plugin:
                story = await _distributed.story(client, key)
                if any(t[0] == key and t[2] == "forgotten" for t in story):
                    break
            grace = forgotten_grace()
            delay = min(max(2 * waited, 0.01), max(grace - waited, 0))
            await asyncio.sleep(delay)  # a bounded back-off between two questions
            if self.futures.get(node) is not future:
                return
            if not self.plugin:
                _protocol.ask_on_stream(client, key)
                await self._wait(node, future)
                return
            carrier = self.carriers.get(node)
            carriers = {key: carrier} if carrier is not None else None
            reply = await _protocol.take_over(client, [key], carriers)
            if not reply["unknown"] and not reply["forgotten"]:
                # Known now: the scheduler reports it. After a reset nobody
                # waits on the state any more: wait here.
                if rewait:
                    await self._wait(node, future)
                return
            since = self.since.get(node)
            waited = time.monotonic() - since if since is not None else grace
            hint = reply.get("hints", {}).get(key, hint)
            if reply["forgotten"]:
                if self.futures.get(node) is future:
                    why = reply.get("why", {}).get(key)
                    self._fail(node, _protocol.gone_error(key, where(node), why))
                return
            if waited >= grace:
                break
        if self.futures.get(node) is future:
            self._fail(node, _protocol.gone_error(key, where(node), hint))

    # -- collections -------------------------------------------------------------

    def compute(self, nodes: list[Node]) -> None:
        import dask
        from dask.delayed import Delayed

        for batch in batches(nodes):
            objs = [node.obj for node in batch]
            if isinstance(objs[0], Delayed) and not dask.config.get("optimization.fuse.delayed"):
                futures = self._submit_delayed(objs)
            else:
                futures = self.client.compute(objs)
            for node, future in zip(batch, futures):
                self.add_future(node, future)

    def _submit_delayed(self, objs: list[Any]) -> list[Any]:
        """``Delayed`` objects submitted as one culled graph: ``client.compute``'s work, cheaper.

        A ``Delayed`` is one key of its graph, with no finalize step, and
        dask optimizes its graph by a cull alone (unless fusing is
        configured: then ``client.compute`` is used). ``client.compute``
        builds and simplifies an expression per collection, here on the
        client's loop, which one merged graph through ``Client.get`` does
        not (benchmarks/run.py, the Delayed rows). Its layers keep their
        annotations.
        """
        from dask.highlevelgraph import HighLevelGraph

        keys = [obj.key for obj in objs]
        graph = HighLevelGraph.merge(*(obj.__dask_graph__() for obj in objs))
        futures: list[Any] = self.client.get(graph.cull(set(keys)), keys, sync=False)
        return futures

    # -- the end -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Release every future of ours still held (the call has ended).

        Those whose keys a fetch request still gathers go once it is answered.
        """
        asked = {key for keys in self.requests.values() for key in keys}
        later = []
        for node, future in self.futures.items():
            if future is not node.obj:
                if future.key in asked:
                    later.append(future)
                else:
                    future.release()
        if later:
            _release_when_answered(list(self.requests), later)
        self.futures.clear()
        self.since.clear()
        self.carriers.clear()
        self.to_fetch.clear()
        self.takeovers.clear()
        self.anchors.clear()
        # Future.release() schedules the client's _dec_ref on this loop: let it
        # run before the call returns, so the next call sees a clean client.
        await asyncio.sleep(0)


def _release_when_answered(requests: list[asyncio.Task[Any]], futures: list[Any]) -> None:
    """Release ``futures`` once every one of ``requests`` is answered."""
    left = [len(requests)]

    def answered(_: Any) -> None:
        left[0] -= 1
        if not left[0]:
            for future in futures:
                future.release()

    for request in requests:
        request.add_done_callback(answered)
