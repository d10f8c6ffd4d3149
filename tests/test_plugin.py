"""The hand-off protocol as a state machine: random event orders against a model.

Drives the real ``HandOffPlugin`` on a real scheduler (an in-process cluster:
the scheduler's state is read and changed on its own loop through
``run_on_scheduler``). Keys are real tasks, submitted with explicit keys so
that a key can be forgotten and submitted again (a new incarnation). The
producer and the consumer are pseudo-clients of the scheduler, as the
plugin's own ``HOLDER`` is, so every want is explicit and ordered.
"""

import asyncio
import itertools
import logging
import threading
import uuid

import dask
import pytest
from distributed import Client, Event, Future, get_client
from helpers import in_thread, inc, wait_forgotten, watch_forgotten
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import unnest
from unnest import _plugin
from unnest._plugin import HOLDER, PLUGIN_NAME, HandOffPlugin

PRODUCER = "unnest-test-producer"
CONSUMER = "unnest-test-consumer"


@pytest.fixture(scope="module")
def plugin_client(inproc_cluster):
    """A client of the module's in-process cluster, whose scheduler runs the plugin."""
    with Client(inproc_cluster, set_as_default=False) as client:
        client.register_plugin(HandOffPlugin(), name=PLUGIN_NAME)
        yield client


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


# -- scheduler-side steps (run on the scheduler's loop) ---------------------------


def _plugin_of(dask_scheduler):
    return dask_scheduler.plugins[PLUGIN_NAME]


def _desire(keys, client, dask_scheduler):
    dask_scheduler.client_desires_keys(keys=keys, client=client)


def _release(keys, client, dask_scheduler):
    if client in dask_scheduler.clients:
        dask_scheduler.client_releases_keys(keys=keys, client=client)


async def _hold(keys, carrier, dask_scheduler):
    return await _plugin_of(dask_scheduler).hold(keys, carrier=carrier, ttl=3600, wait=0)


def _take_over(keys, carriers, dask_scheduler):
    _desire([], CONSUMER, dask_scheduler)  # the consumer is a client of the scheduler
    return _plugin_of(dask_scheduler).take_over(keys, CONSUMER, carriers)


def _expire(hold_id, dask_scheduler):
    _plugin_of(dask_scheduler)._release(hold_id, _plugin.TTL)  # its timer, fired now


def _cancel(key, dask_scheduler):
    dask_scheduler.stimulus_cancel(keys=[key], client=PRODUCER, force=True, reason=None, msg=None)


def _snapshot(keys, dask_scheduler):
    plugin = _plugin_of(dask_scheduler)
    wants = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is not None:
            wants[key] = sorted(cs.client_key for cs in ts.who_wants or ())
    holds = {i: sorted(h.keys) for i, h in plugin.holds.items()}
    return wants, holds, sorted(k for k in plugin.held if k in keys)


class HandOffMachine(RuleBasedStateMachine):
    """A model of what the plugin must do, checked after every event."""

    client: Client = None  # set by the test

    keys = Bundle("keys")
    carriers = Bundle("carriers")

    def __init__(self):
        super().__init__()
        self.prefix = uuid.uuid4().hex[:8]
        self.names = itertools.count()
        self.producer: set = set()  # keys the producer wants
        self.consumer: set = set()
        self.holds: dict = {}  # hold id -> [keys, carrier]
        self.alive: set = set()  # keys in the scheduler
        self.why: dict = {}  # key not alive -> why the plugin must say it is gone
        self.lost_hold: dict = {}  # alive key -> why its last hold ended
        self.live_carriers: set = set()
        self.every_key: set = set()

    # -- helpers ----------------------------------------------------------------

    def _run(self, func, *args):
        return self.client.run_on_scheduler(func, *args)

    def _submit(self, key):
        """A task with this key, wanted by the producer pseudo-client only."""
        future = self.client.submit(inc, 1, key=key)
        future.result(timeout=30)
        self._run(_desire, [key], PRODUCER)
        future.release()
        barrier(self.client)  # our own want is gone before the next event
        self.alive.add(key)
        self.producer.add(key)
        self.why.pop(key, None)
        self.every_key.add(key)

    def _held(self, key):
        return any(key in keys for keys, _ in self.holds.values())

    def _wanted(self, key):
        return key in self.producer or key in self.consumer or self._held(key)

    def _end_hold(self, hold_id, why):
        keys, _ = self.holds.pop(hold_id)
        for key in keys:
            if not self._held(key) and why is not None:
                self.lost_hold[key] = why
        self._settle(keys)

    def _settle(self, keys):
        """Keys nobody wants are forgotten at once."""
        for key in list(keys):
            if key in self.alive and not self._wanted(key):
                self.alive.discard(key)
                self.why[key] = self.lost_hold.pop(key, None)

    # -- events -------------------------------------------------------------------

    @rule(target=keys)
    def new_key(self):
        key = f"k-{self.prefix}-{next(self.names)}"
        self._submit(key)
        return key

    @rule(target=carriers)
    def new_carrier(self):
        key = f"c-{self.prefix}-{next(self.names)}"
        self._submit(key)
        self.live_carriers.add(key)
        return key

    @rule(key=keys)
    def resubmit(self, key):
        if key not in self.alive:
            self._submit(key)  # a new incarnation

    @rule(
        chosen=st.lists(keys, min_size=1, max_size=3, unique=True),
        carrier=st.none() | carriers,
    )
    def hold(self, chosen, carrier):
        chosen = [k for k in chosen if k in self.alive]
        if not chosen:
            return
        reply = self._run(_hold, chosen, carrier)
        assert reply["missing"] == []
        hold_id = reply["hold"]
        if carrier is not None and carrier not in self.live_carriers:
            assert hold_id not in self._run(_snapshot, [])[1]
            for key in chosen:
                if not self._held(key):
                    self.lost_hold[key] = _plugin.CARRIER_RELEASED
            return
        self.holds[hold_id] = [set(chosen), carrier]
        for key in chosen:
            self.lost_hold.pop(key, None)

    @rule(chosen=st.lists(keys, min_size=1, max_size=3, unique=True))
    def take_over(self, chosen):
        reply = self._run(_take_over, chosen, None)
        for key in chosen:
            if key in self.alive:
                assert key not in reply["forgotten"] and key not in reply["unknown"]
                self.consumer.add(key)
                for hold_id, (keys, carrier) in list(self.holds.items()):
                    if carrier is None and key in keys:
                        keys.discard(key)
                        if not keys:
                            del self.holds[hold_id]
            else:
                # No carrier named: a key that is gone is forgotten, and says why.
                assert key in reply["forgotten"], (key, reply)
                assert reply["why"][key] == self.why[key], (key, reply, self.why[key])

    @rule(key=keys)
    def producer_releases(self, key):
        self._run(_release, [key], PRODUCER)
        self.producer.discard(key)
        self._settle([key])

    @rule(key=keys)
    def consumer_releases(self, key):
        self._run(_release, [key], CONSUMER)
        self.consumer.discard(key)
        self._settle([key])

    @rule(carrier=carriers)
    def release_carrier(self, carrier):
        self._run(_release, [carrier], PRODUCER)
        self.producer.discard(carrier)
        self.live_carriers.discard(carrier)
        self._settle([carrier])
        for hold_id, (_, c) in list(self.holds.items()):
            if c == carrier:
                self._end_hold(hold_id, _plugin.CARRIER_RELEASED)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def time_to_live_passes(self, data):
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        self._run(_expire, hold_id)
        self._end_hold(hold_id, _plugin.TTL)

    @rule(key=keys)
    def cancel(self, key):
        if key not in self.alive:
            return
        self._run(_cancel, key)
        # The scheduler tells every client of the cancel; let ours hear it
        # before the key can be submitted again.
        barrier(self.client)
        # force=True: every wanter lets go, holds included.
        self.producer.discard(key)
        self.consumer.discard(key)
        for hold_id, (keys, _) in list(self.holds.items()):
            if key in keys:
                keys.discard(key)
                if not keys:
                    del self.holds[hold_id]
        self.lost_hold.pop(key, None)
        self.alive.discard(key)
        self.why[key] = _plugin.CANCELLED

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def scheduler_matches_the_model(self):
        wants, holds, held = self._run(_snapshot, sorted(self.every_key))
        assert set(wants) == self.alive & self.every_key
        for key, clients in wants.items():
            expected = set()
            if key in self.producer:
                expected.add(PRODUCER)
            if key in self.consumer:
                expected.add(CONSUMER)
            if self._held(key):
                expected.add(HOLDER)
            assert set(clients) == expected, (key, clients, expected)
        assert {i: set(k) for i, k in holds.items()} == {i: k for i, (k, _) in self.holds.items()}
        assert set(held) == {k for k in self.every_key if self._held(k)}

    def teardown(self):
        keys = sorted(self.every_key)
        for client in (PRODUCER, CONSUMER):
            self._run(_release, keys, client)
        for hold_id in list(self.holds):
            self._run(_expire, hold_id)
        wants, holds, _ = self._run(_snapshot, keys)
        assert wants == {} and holds == {}


def barrier(client):
    """Wait until the scheduler has handled everything ``client`` sent on its
    stream, and the client everything the scheduler sent it before that.

    A report about a key the scheduler does not know is answered on the same
    stream, after everything sent before it, both ways.
    """
    marker = Future(f"unnest-test-barrier-{uuid.uuid4().hex}", client)
    client._send_to_scheduler({"op": "report-key", "key": marker.key})
    with pytest.raises(Exception):  # noqa: B017  (FutureCancelledError: "unknown")
        marker.result(timeout=30)
    marker.release()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hand_off_protocol_state_machine(plugin_client, request):
    errors = _Errors()
    loggers = [logging.getLogger("unnest.handoff"), logging.getLogger("distributed.scheduler")]
    for logger in loggers:
        logger.addHandler(errors)
    HandOffMachine.client = plugin_client
    slow = request.config.getoption("--slow")
    try:
        run_state_machine_as_test(
            HandOffMachine,
            settings=settings(
                max_examples=5_000 if slow else 250, stateful_step_count=12, deadline=None
            ),
        )
    finally:
        for logger in loggers:
            logger.removeHandler(errors)
    # No event order made the plugin (or the scheduler, through it) complain.
    assert [r.getMessage() for r in errors.records if r.levelno >= logging.ERROR] == []


def test_barrier_orders_the_stream(plugin_client):
    future = plugin_client.submit(inc, 1, key=f"barrier-check-{uuid.uuid4().hex}")
    future.result()
    key = future.key
    future.release()
    barrier(plugin_client)
    wants, _, _ = plugin_client.run_on_scheduler(_snapshot, [key])
    assert wants == {}


# -- incarnations: a key forgotten, then returned again (issue 17, bug 9) ------------

_late = []  # a producer's late children, kept alive on its worker


def hand_off_keys(keys):
    client = get_client()
    return unnest.hand_off([client.submit(inc, i, key=k) for i, k in enumerate(keys)])


def return_then_submit(keys, go):
    """Return futures of ``keys`` whose ``update-graph`` comes only once ``go`` is set.

    A producer's children travel to the scheduler on its worker client's
    connection, the producer's result on another: any order is possible.
    This one makes the result win, every time.
    """
    client = get_client()
    futures = [Future(k, client) for k in keys]

    def submit():
        # A client of its own: the worker's knows these keys already (the
        # result refers to them), so its submit() would send nothing.
        Event(go, client=client).wait()
        own = Client(client.scheduler.address, set_as_default=False)
        _late.append((own, [own.submit(inc, i, key=k) for i, k in enumerate(keys)]))

    threading.Thread(target=submit, daemon=True).start()
    return futures


def _spy_take_over(dask_scheduler, keys):
    """Set an event when a take-over request names any of ``keys``."""
    seen = dask_scheduler._unnest_test_seen = asyncio.Event()
    original = dask_scheduler.handlers["unnest_take_over"]

    def take_over(*args, **kwargs):
        if set(kwargs.get("keys", ())) & set(keys):
            seen.set()
        return original(*args, **kwargs)

    dask_scheduler.handlers["unnest_take_over"] = take_over
    dask_scheduler._unnest_test_original = original


async def _wait_take_over(dask_scheduler):
    await dask_scheduler._unnest_test_seen.wait()


def _unspy(dask_scheduler):
    dask_scheduler.handlers["unnest_take_over"] = dask_scheduler._unnest_test_original


def test_a_key_returned_again_after_it_was_forgotten_is_a_new_incarnation(mp_client):
    # Issue 17, bug 9: keys handed off and forgotten (their carrier released),
    # then returned again -- as plain futures -- by a later producer whose
    # children reach the scheduler after its result: unwrap failed at once
    # with the first incarnation's story ("the result that carried it was
    # released"). The carrier finished after the key was forgotten, so it
    # refers to a newer incarnation: unnest waits for it, within the grace.
    tag = uuid.uuid4().hex
    keys = [f"reused-{tag}-{i}" for i in range(3)]
    watch_forgotten(mp_client)
    first = mp_client.submit(hand_off_keys, keys, pure=False)
    assert unnest.unwrap(first) == [1, 2, 3]
    del first
    assert wait_forgotten(mp_client, keys) == []
    mp_client.run_on_scheduler(_spy_take_over, keys=keys)
    try:
        second = mp_client.submit(return_then_submit, keys, f"{tag}-go", pure=False)
        with dask.config.set({"unnest.forgotten-key-grace": "60s"}):
            outcome = in_thread(lambda: unnest.unwrap(second, timeout=90))
            mp_client.run_on_scheduler(_wait_take_over)  # asked before the keys exist
            Event(f"{tag}-go", client=mp_client).set()
            assert outcome.result(timeout=90) == [1, 2, 3]
    finally:
        mp_client.run_on_scheduler(_unspy)
        Event(f"{tag}-go", client=mp_client).set()
