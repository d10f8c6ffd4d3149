"""The one door to what is private in dask and distributed.

Every use in unnest of a name that dask or distributed keep private (a leading
underscore, or a scheduler request that is not part of ``Client``'s API) is
here, and nowhere else (``tests/test_distributed.py`` checks the package by
its syntax tree). Each has

* the reason it is used (what it buys over the public API),
* the versions it was checked on: dask/distributed 2025.7.0 to 2026.8.0,
  the range ``noxfile.py`` tests,
* a fallback to the public API, chosen by a feature check at first use
  (:func:`fast`). A release of distributed that changes one of them costs
  speed, never correctness.

``UNNEST_PUBLIC_ONLY=1`` in the environment (read at first use) or
:func:`use_public_only` switches every fast path off: the suite runs that
way too (``nox -s tests-public``), and must give the same results.

What the public fallbacks cost, against the fast paths:

* futures are waited on through ``Future.add_done_callback`` (a thread hop
  per future) instead of their ``FutureState``'s event;
* finished futures are fetched with ``Client.gather(..., errors="skip")``
  instead of the scheduler's ``gather`` request (a coroutine per key first);
* a future bound to another client of the same scheduler is taken over by
  key (one take-over request per batch), as the client's own futures are
  not told apart from new ones;
* an erred or cancelled future's exception is fetched by a gather of its
  own;
* a key the scheduler does not know cannot be asked about without the hand-off
  plugin: unnest waits the grace and reports it forgotten;
* futures of one key are told apart by object, not by their client's state
  of the key: a key met twice is fetched twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

__all__ = [
    "count_gathers",
    "fast",
    "fetch",
    "fetch_failure",
    "is_done",
    "is_worker_client",
    "knows",
    "new_future",
    "owner",
    "renew",
    "same_future",
    "seceded_in_task",
    "send_desire_and_report",
    "state_is_clients",
    "status",
    "stored_failure",
    "story",
    "use_public_only",
    "wait_done",
]

_fast: list[bool] = []  # decided once, by fast()


def fast() -> bool:
    """Whether the fast paths are usable here: checked once, at first use.

    The check is on distributed's classes and on a future of no client:
    ``Future`` keeps ``_client`` and ``_state``, ``FutureState`` has ``wait``,
    ``reset``, ``done``, ``exception`` and ``traceback``, ``Client`` has
    ``_send_to_scheduler`` and a ``futures`` dict, and ``Worker`` keeps its
    ``_instances``. Any of them missing: every fast path is off.
    """
    if not _fast:
        _fast.append(os.environ.get("UNNEST_PUBLIC_ONLY", "") in ("", "0") and _check())
    return _fast[0]


def use_public_only(on: bool = True) -> None:
    """Switch every fast path off (or back to the feature check): for tests."""
    _fast.clear()
    if on:
        _fast.append(False)


def _check() -> bool:
    try:
        from distributed import Client, Future, Worker
        from distributed.client import FutureState
        from distributed.core import clean_exception  # noqa: F401
        from distributed.worker import thread_state  # noqa: F401
    except ImportError:
        return False
    try:
        # A future of no client binds nothing and tells the scheduler nothing;
        # it shows the attributes the fast paths read.
        probe: Any = Future("unnest-feature-check")
        attributes = hasattr(probe, "_client") and hasattr(probe, "_state")
    except Exception:
        return False
    return (
        attributes
        and all(hasattr(FutureState, name) for name in ("wait", "reset", "done", "exception"))
        and callable(getattr(Client, "_send_to_scheduler", None))
        and hasattr(Worker, "_instances")
    )


# -- futures ----------------------------------------------------------------------
#
# Future._client and Future._state: a future's client without binding it (the
# public Future.client binds an unbound future to the current client), and
# the FutureState its client shares among futures of one key, whose asyncio
# event Client.gather awaits. Waiting on that event costs a task; the public
# add_done_callback costs a thread hop per future.


def owner(future: Any) -> Any:
    """The client ``future`` is bound to, None if unbound.

    ``Future.client`` gives the same without the fast path: it binds a future
    late only to a client it was given.
    """
    if fast():
        return future._client
    return future.client


def same_future(a: Any, b: Any) -> bool:
    """Do ``a`` and ``b`` (futures of one key) stand for one incarnation of it?

    A stale future of a key that was cancelled and submitted again keeps the
    old state; the public API cannot tell it from a new one, so without the
    fast path only the very same object counts.
    """
    if fast():
        return a._state is b._state
    return a is b


def is_done(future: Any) -> bool:
    """Finished, erred or cancelled (the state's event is set)."""
    if fast():
        state = future._state
        return state is not None and state.done()
    return future.done()  # type: ignore[no-any-return]


def status(future: Any) -> str:
    """``"pending"``, ``"finished"``, ``"error"``, ``"cancelled"`` or ``"lost"``."""
    return future.status  # type: ignore[no-any-return]  # public: the state's status


async def wait_done(future: Any) -> None:
    """Wait, on the future's client's loop, until ``future`` is done."""
    if fast():
        await future._state.wait()
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def set_done() -> None:
        if not done.done():
            done.set_result(None)

    def settle(_: Any) -> None:  # in distributed's callback thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(set_done)

    future.add_done_callback(settle)
    await done


def stored_failure(future: Any) -> tuple[BaseException, Any] | None:
    """``(exception, traceback)`` of an erred or cancelled future, if at hand.

    The fast path reads them from the client's state (the exception is the
    one the client keeps: copy it before raising it, see
    ``unnest._wait_distributed.detached``); the public path returns None and
    the caller fetches them with :func:`fetch_failure`.
    """
    if not fast():
        return None
    state = future._state
    if state.status == "error":
        from distributed.core import clean_exception

        _, exc, tb = clean_exception(state.exception, state.traceback)
        assert exc is not None
        return exc, tb
    from distributed.client import FutureCancelledError

    stored = state.exception
    reason, msg = getattr(stored, "reason", None), getattr(stored, "msg", None)
    return FutureCancelledError(future.key, reason, msg), None


async def fetch_failure(client: Any, future: Any) -> tuple[BaseException, Any]:
    """``(exception, traceback)`` of an erred or cancelled future, by the public API.

    An erred one's through ``Future.exception``/``Future.traceback``, which
    hand them over without raising (a raise through ``Client.gather`` leaves
    its frames, which hold the future, on the exception). A cancelled one's
    through ``Client.gather``, which raises the cancellation with its reason.
    """
    if future.status == "error":
        exc = await future.exception(asynchronous=True)
        if exc is not None:
            return exc, await future.traceback(asynchronous=True)
    try:
        await client.gather(future, asynchronous=True)
    except BaseException as e:  # what the future raised, or its cancellation
        if isinstance(e, asyncio.CancelledError) and not _is_future_cancelled(e):
            raise  # ours: the call is ending
        # The frames it passed through (distributed's and ours) hold the
        # future, its state and this client: not on the kept exception, and
        # with their locals cleared on the copy's traceback.
        tb, e.__traceback__ = e.__traceback__, None
        traceback.clear_frames(tb)
        return e, tb
    raise RuntimeError(f"the future {future.key!r} was reported failed, but gave a value")


def _is_future_cancelled(exc: BaseException) -> bool:
    from distributed.client import FutureCancelledError

    return isinstance(exc, FutureCancelledError)


def knows(client: Any, key: Any) -> bool:
    """Does ``client`` hold a state of ``key`` (some future of it is alive here)?

    ``Client.futures`` is undocumented. Not known (public path): the key is
    taken over with a request, which is right whether or not it was known.
    """
    if fast():
        return key in client.futures
    return False


def state_is_clients(client: Any, future: Any) -> bool:
    """Is ``future``'s state the one ``client`` holds for its key?

    False when the client dropped it itself (``Client.cancel``, a release):
    the user cancelled the future. The public path asks a new future of the
    key: it shares the client's state of the key if the client still holds
    one, and gets a new, pending one if the client dropped it.
    """
    if fast():
        return client.futures.get(future.key) is future._state
    probe = new_future(future.key, client, future)
    try:
        return probe.status == future.status  # type: ignore[no-any-return]
    finally:
        probe.release()


def new_future(key: Any, client: Any, like: Any = None) -> Any:
    """A future of ``key`` bound to ``client`` (of ``like``'s type, if given)."""
    from distributed import Future

    return (type(like) if like is not None else Future)(key, client)


async def renew(client: Any, future: Any) -> Any:
    """``future`` made pending again after the scheduler said it does not know it.

    Fast: the state is reset (every future of the key in this client came
    from a take-over, so "pending" is the truth). Public: released, and a
    new future made once the client has dropped the old state.
    """
    if fast():
        future._state.reset()
        return future
    key = future.key
    future.release()
    await asyncio.sleep(0)  # Future.release schedules the client's own release
    return new_future(key, client, future)


# -- fetching -------------------------------------------------------------------
#
# The scheduler's `gather` request: what Client._gather sends once every
# future it is given is done, without its wait on each future first (a
# coroutine per key through distributed.utils.All): 10,000 finished futures
# come faster this way (benchmarks/run.py, finished_futures).


async def fetch(client: Any, futures: dict[Any, Any], direct: bool) -> dict[Any, Any]:
    """The values of finished ``futures`` (a dict by key), by key.

    Only keys whose future's status is ``"finished"`` afterwards hold a value
    (a skipped key may be missing, or None); the others (lost since their
    report, erred, or cancelled) are for the caller to wait on again. ``direct``: the client
    gathers from the workers itself (``Client.gather``'s own rule), which
    the scheduler's request would bypass.
    """
    if fast() and not direct:
        for counter in _counters:
            counter[0] += 1
        response = await client.scheduler.gather(keys=list(futures))
        if response["status"] == "OK":
            return response["data"]  # type: ignore[no-any-return]
    # A skipped key comes back as None: the caller checks each future's status.
    return await client.gather(futures, errors="skip", asynchronous=True)  # type: ignore[no-any-return]


async def story(client: Any, key: Any) -> list[Any]:
    """The scheduler's transitions of ``key`` (empty on the public path)."""
    if not fast():
        return []
    try:
        return await client.scheduler.get_story(keys_or_stimuli=[key])  # type: ignore[no-any-return]
    except Exception:
        return []


def send_desire_and_report(client: Any, key: Any) -> bool:
    """Ask on the client's own stream for ``key``: want it, and report its state.

    Desire first, then report: the scheduler handles both in order on this
    client's stream, so a key it knows is now held for us and reported when
    done, and a key it does not know is answered with ``cancelled-keys``
    instead of silence. There is no public way: False on the public path.
    """
    if not fast():
        return False
    client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
    client._send_to_scheduler({"op": "report-key", "key": key})
    return True


# -- workers ---------------------------------------------------------------------


def is_worker_client(client: Any) -> bool:
    """Is ``client`` the client of a worker (of this process)?

    A future bound to a worker's client outside a task (a thread a task
    started, an ``async def`` task) needs a hold to outlive the task. The
    fast path compares with the clients of the workers in this process;
    the public path reads the client's id, which distributed makes
    ``Client-worker-<uuid>`` for a worker's client (on every version
    checked; a format it no longer matches holds futures it need not).
    """
    if fast():
        worker = sys.modules.get("distributed.worker")
        if worker is None:
            return False
        return any(w._client is client for w in list(worker.Worker._instances))
    return str(getattr(client, "id", "")).startswith(f"{type(client).__name__}-worker-")


@contextlib.contextmanager
def seceded_in_task() -> Iterator[None]:
    """Leave the worker's thread pool while we block, if we run in a task.

    ``thread_state.start_time`` is set only in threads that run a worker
    task; ``secede`` elsewhere (an ``async def`` task's loop thread) would
    fail half way. The public path tries ``secede`` wherever a worker is
    found, and carries on where it fails.
    """
    worker_mod = sys.modules.get("distributed.worker")
    seceded = False
    if worker_mod is not None:
        if fast():
            if hasattr(worker_mod.thread_state, "start_time"):
                with contextlib.suppress(KeyError):  # KeyError: already seceded
                    worker_mod.secede()
                    seceded = True
        else:
            with contextlib.suppress(Exception):
                worker_mod.get_worker()
                worker_mod.secede()
                seceded = True
    try:
        yield
    finally:
        if seceded:
            import distributed

            distributed.rejoin()


# -- counting, for the demo -------------------------------------------------------


_counters: list[list[int]] = []  # count_gathers() in progress


@contextlib.contextmanager
def count_gathers() -> Iterator[list[int]]:
    """Count fetches of results: unnest's, and ``Client.gather``'s of every
    client here, as ``counter[0]``.

    In an in-process cluster the futures a task returns belong to the
    worker's client, so ``Client.gather`` is counted on the class, at the
    coroutine every gather ends in (a fetch of unnest's that the scheduler
    could not answer in full, and that falls back to it, counts twice).
    """
    from distributed import Client

    counter = [0]
    original: Any = Client._gather

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await original(self, *args, **kwargs)

    _counters.append(counter)
    Client._gather = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        Client._gather = original  # type: ignore[method-assign]
        _counters.remove(counter)
