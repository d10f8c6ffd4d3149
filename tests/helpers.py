"""Test helpers, one of each: tasks, futures made by hand, bounded calls, forgetting.

Importable by module name on the scheduler and the workers too (the test
clusters put ``tests/`` on their path), so tasks defined here travel by
reference.
"""

import asyncio
import concurrent.futures
import contextlib
import gc
import threading

import pytest
from distributed import Event, get_client
from distributed.diagnostics.plugin import SchedulerPlugin

# -- What the scheduler was given, and whether it is gone ----------------------------

WATCH = "unnest-test-keys"


class KeysGiven(SchedulerPlugin):
    """The keys the scheduler was given since a mark, and a wake-up as they go.

    Lives on the scheduler; :func:`watch_forgotten` installs it and sets the
    mark, :func:`wait_forgotten` waits on it.
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.changed = asyncio.Event()
        self.mark()

    def mark(self):
        self.before = set(self.scheduler.tasks)  # held at the mark: not made since
        self.seen = set()  # every key in a graph or a transition since the mark
        self.made = set()  # those of them that were new to the scheduler

    def see(self, key):
        self.seen.add(key)
        if key not in self.before:
            self.made.add(key)

    def update_graph(self, scheduler, *, tasks, **kwargs):
        for key in tasks:
            self.see(key)
        self.wake()

    def transition(self, key, start, finish, *args, **kwargs):
        self.see(key)
        if finish == "forgotten":
            self.before.discard(key)  # submitted again, it is made again
            self.wake()

    def wake(self):
        # Called inside the scheduler's handlers: look once they have completed.
        asyncio.get_running_loop().call_soon(self.changed.set)


def _watch(dask_scheduler):
    watch = dask_scheduler.plugins.get(WATCH)
    if watch is None:
        dask_scheduler.add_plugin(KeysGiven(dask_scheduler), name=WATCH)
    else:
        watch.mark()


def watch_forgotten(client):
    """Mark: from now on the scheduler records every key it is given.

    Call first, before the keys a test will wait for are made. Returns an
    awaitable for an asynchronous client.
    """
    return client.run_on_scheduler(_watch)


def wait_forgotten(client, keys=None, *, made=0, timeout=30):
    """Wait until the scheduler has forgotten ``keys``: ``[]`` then, else fail naming them.

    ``keys`` defaults to every key the scheduler was given since
    :func:`watch_forgotten` (in a graph or a transition, or held now and not
    at the mark). A check can run before the keys it is about reach the
    scheduler (a task's worker-client children, even the test client's own
    submissions, travel on other connections than this call), and an empty
    scheduler would then pass it for nothing. So it also waits until
    ``made`` keys were made since the mark, and until each of ``keys`` was
    seen. It waits on the scheduler's events, not for time to pass:
    ``timeout`` only matters when something really is left. 30 s is six
    times the window a loaded 2-core machine once overran, and inside the
    60 s bound of the tests that call it, so that the failure one reads is
    this ``AssertionError``, with each key left, its state and who wants it.

    Returns ``[]`` (an awaitable of it for an asynchronous client), so that a
    call site reads as the check it is::

        assert wait_forgotten(client, made=6) == []
    """
    keys = None if keys is None else list(keys)
    return client.run_on_scheduler(_wait_forgotten, keys=keys, made=made, timeout=timeout)


async def _wait_forgotten(dask_scheduler, keys, made, timeout):
    watch = dask_scheduler.plugins[WATCH]
    tasks = dask_scheduler.tasks

    def missing():
        """What keeps the check from passing: keys left, keys not yet seen."""
        for key in tasks:
            if key not in watch.before:
                watch.see(key)  # however it came: scatter, a client desiring it
        if keys is None:
            return [k for k in tasks if k in watch.seen], [], len(watch.made) < made
        unseen = [k for k in keys if k not in watch.seen]
        return [k for k in keys if k in tasks], unseen, len(watch.made) < made

    async def wait():
        while any(missing()):
            watch.changed.clear()
            await watch.changed.wait()

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(wait(), timeout)
    left, unseen, short = missing()
    if not (left or unseen or short):
        return []
    problems = []
    if short:
        problems.append(f"{len(watch.made)} keys were made since the mark, {made} expected")
    if unseen:
        problems.append(f"never seen since the mark: {sorted(map(str, unseen))}")
    if left:
        problems.append(f"{len(left)} keys still held:")
        shown = sorted(left, key=str)[:50]
        problems.extend(f"  {_describe(tasks[key])}" for key in shown)
        if len(left) > len(shown):
            problems.append(f"  and {len(left) - len(shown)} more")
    raise AssertionError(f"after {timeout} s, " + "\n".join(problems))


def _describe(ts):
    wanted = sorted(c.client_key for c in ts.who_wants or ())
    return f"{ts.key!r}: {ts.state}, wanted by {wanted}, {len(ts.dependents)} dependents"


# -- Tasks ------------------------------------------------------------------------


def _worker_client_id():
    return get_client().id


def connect_worker_clients(client):
    """Connect every worker's own client now, before a test races its handshake.

    ``Client.cancel`` makes the scheduler send "cancelled-keys" to every
    client; a worker client whose handshake is under way can get that in the
    same batch as its "stream-start" and fail with an AssertionError in
    ``Client._ensure_connected`` (distributed), and the worker reuses that
    unconnected client for its later tasks: their submissions never reach
    the scheduler. Tasks that cancel while others call ``get_client()`` for
    the first time meet it.
    """
    workers = list(client.scheduler_info()["workers"])
    client.gather([client.submit(_worker_client_id, workers=[w], pure=False) for w in workers])


@contextlib.contextmanager
def counting(client, name, arg=0):
    """Record the length of argument ``arg`` (a position or a keyword) of each
    call of ``client.<name>``."""
    calls = []
    original = getattr(client, name)

    def count(*args, **kwargs):
        calls.append(len(kwargs[arg] if isinstance(arg, str) else args[arg]))
        return original(*args, **kwargs)

    setattr(client, name, count)
    try:
        yield calls
    finally:
        delattr(client, name)


def inc(x):
    return x + 1


def fail(x):
    raise ZeroDivisionError(f"boom {x}")


def wait_event(name, value):
    """Wait for the distributed Event ``name``, then return ``value``."""
    Event(name).wait()
    return value


# -- Futures and calls ----------------------------------------------------------------


def failed(exc):
    """A concurrent.futures.Future that failed with ``exc``."""
    f = concurrent.futures.Future()
    f.set_exception(exc)
    return f


def in_thread(fn):
    """Run ``fn()`` in a daemon thread; a concurrent future of its outcome."""
    out = concurrent.futures.Future()

    def run():
        try:
            out.set_result(fn())
        except BaseException as e:  # SystemExit and KeyboardInterrupt too
            out.set_exception(e)

    threading.Thread(target=run, daemon=True, name="bounded-call").start()
    return out


def bounded(fn, timeout):
    """``fn()`` run in a daemon thread: its value or its exception, else a failure.

    For calls that may hang where ``timeout=`` is not honoured (the thread
    that would honour it is dead): the test fails instead of hanging.
    """
    out = in_thread(fn)
    try:
        return out.result(timeout=timeout)
    except TimeoutError:
        if not out.done():
            pytest.fail(f"the call did not return within {timeout} s")
        raise


# -- Other engines' leftovers ----------------------------------------------------------


def close_parsl_logs(directory):
    """Close the log files Parsl left open under ``directory``.

    Parsl's ``DataFlowKernel.cleanup`` unregisters its ``FileHandler``
    without closing it, so its file is closed (with a ``ResourceWarning``)
    whenever the handler is collected: in a later test, or at the end of the
    run, where setup.cfg makes it an error.
    """
    import logging

    for obj in gc.get_objects():
        if isinstance(obj, logging.FileHandler) and obj.baseFilename.startswith(str(directory)):
            obj.close()
