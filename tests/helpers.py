"""Test helpers, one of each: tasks, futures made by hand, bounded calls, drains.

Importable by module name on the scheduler and the workers too (the test
clusters put ``tests/`` on their path), so tasks defined here travel by
reference.
"""

import asyncio
import concurrent.futures
import contextlib
import threading

import pytest
from distributed import Event, get_client
from distributed.diagnostics.plugin import SchedulerPlugin

DRAINED = "unnest-test-drained"


class Drained(SchedulerPlugin):
    """Sets an event whenever the scheduler holds no task at all.

    Also remembers the keys it has seen forgotten, for :func:`wait_forgotten`.
    """

    name = DRAINED
    idempotent = True

    async def start(self, scheduler):
        self.scheduler = scheduler
        self.event = asyncio.Event()
        self.forgotten = set()
        self.changed = asyncio.Event()
        self.check()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "forgotten":
            self.forgotten.add(key)
            # Called inside the transition: look once it has completed.
            asyncio.get_running_loop().call_soon(self.check)

    def check(self):
        self.changed.set()
        if self.scheduler.tasks:
            self.event.clear()
        else:
            self.event.set()


async def _wait_drained(dask_scheduler, timeout):
    plugin = dask_scheduler.plugins[DRAINED]
    plugin.check()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(plugin.event.wait(), timeout)
    return sorted(map(str, dask_scheduler.tasks))


def keys_left(client, timeout=10):
    """Keys the scheduler still holds once it drains (or after ``timeout``).

    Waits for the event of the scheduler forgetting its last task, not for
    time to pass; returns what is left if that does not happen in time.
    """
    client.register_plugin(Drained(), name=DRAINED)
    return client.run_on_scheduler(_wait_drained, timeout=timeout)


def watch_forgotten(client):
    """Start remembering forgotten keys; call before the keys are made."""
    client.register_plugin(Drained(), name=DRAINED)


def wait_forgotten(client, keys, timeout=10):
    """Wait until the scheduler has forgotten every one of ``keys``.

    A drained scheduler is not enough: a task's worker-client children reach
    the scheduler on another connection than the task's own result, so there
    can be a moment with no task at all before they arrive. Needs
    :func:`watch_forgotten` first. Returns the keys still known.
    """
    return client.run_on_scheduler(_wait_forgotten, keys=list(keys), timeout=timeout)


async def _wait_forgotten(dask_scheduler, keys, timeout):
    plugin = dask_scheduler.plugins[DRAINED]

    def left():
        return [k for k in keys if k not in plugin.forgotten or k in dask_scheduler.tasks]

    async def wait():
        while left():
            plugin.changed.clear()
            await plugin.changed.wait()

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(wait(), timeout)
    return sorted(map(str, left()))


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
