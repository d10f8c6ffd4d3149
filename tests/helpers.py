"""Test helpers that run on the scheduler (importable there by module name)."""

import asyncio
import contextlib

from distributed.diagnostics.plugin import SchedulerPlugin

DRAINED = "unnest-test-drained"


class Drained(SchedulerPlugin):
    """Sets an event whenever the scheduler holds no task at all."""

    name = DRAINED
    idempotent = True

    async def start(self, scheduler):
        self.scheduler = scheduler
        self.event = asyncio.Event()
        self.check()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "forgotten":
            # Called inside the transition: look once it has completed.
            asyncio.get_running_loop().call_soon(self.check)

    def check(self):
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
