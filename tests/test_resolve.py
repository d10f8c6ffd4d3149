"""unwrap / unwrap_async against real clusters and dask's local schedulers."""

import asyncio
import concurrent.futures
import contextlib
import gc
import signal
import sys
import threading
import time
import uuid

import dask
import pytest
from distributed import Client, Event, Future, LocalCluster, get_client, secede
from distributed.client import FutureCancelledError
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils_test import gen_cluster
from helpers import counting, fail, inc, wait_event
from strategies import done

import unnest
import unnest._runtime

if sys.version_info < (3, 11):  # the backport unnest depends on there
    from exceptiongroup import ExceptionGroup

# -- tasks (module level: workers import them by reference) -------------------

_kept = []  # futures a producer keeps alive on its worker, for these tests only


def produce(n, keep=True):
    """Submit children and return their futures, nested."""
    client = get_client()
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    if keep:
        _kept.append(futures)  # the producer's references keep them alive
    return {"xs": futures, "meta": ("n", n)}


def nest(depth):
    """A future of a future of ... of 42, ``depth`` levels, kept alive."""
    if depth == 0:
        return 42
    future = get_client().submit(nest, depth - 1, pure=False)
    _kept.append(future)
    return [future]


def fail_inside():
    future = get_client().submit(fail, 1)
    _kept.append(future)
    return {"inner": [future]}


def set_event(name):
    Event(name).set()
    return "set"


def unwrap_own_children(depth):
    """In a task: submit a child that does the same, unwrap it (secede/rejoin)."""
    if depth == 0:
        return 0
    child = get_client().submit(unwrap_own_children, depth - 1, pure=False)
    return unnest.unwrap({"child": child})["child"] + 1


def unwrap_delayed_in_task(n):
    return unnest.unwrap([dask.delayed(inc)(i) for i in range(n)])


@dask.delayed
def return_delayed(n):
    return [dask.delayed(x + 1) for x in range(n)]


@dask.delayed
def sumit(upstream):
    return sum(upstream)


@dask.delayed
def delayed_chain(depth, event_name):
    """Delayed returning Delayed ``depth`` times; the last one sets an Event."""
    if depth == 0:
        return dask.delayed(set_event)(event_name)
    return delayed_chain(depth - 1, event_name)


# -- Futures ------------------------------------------------------------------


def test_futures_within_futures_resolve_completely(client):
    outer = client.submit(nest, 4, pure=False)
    assert unnest.unwrap({"a": [outer, 1]}) == {"a": [[[[[42]]]], 1]}


def test_returned_futures_arrive_unbound_and_are_bound(client):
    producer = client.submit(produce, 5)
    raw = producer.result()
    assert all(f.status is None for f in raw["xs"])  # what distributed hands us
    assert unnest.unwrap(producer) == {"xs": [1, 2, 3, 4, 5], "meta": ("n", 5)}
    assert unnest.unwrap(raw, client=client)["xs"] == [1, 2, 3, 4, 5]


def test_forgotten_key_fails_fast_with_its_name(client):
    future = client.submit(inc, 1)
    key = future.key
    future.result()
    client.cancel(future)  # a request: the scheduler has forgotten it on return
    unbound = Future(key)  # what deserialising a returned future gives
    with pytest.raises(unnest.ForgottenFutureError, match=key) as info:
        unnest.unwrap({"a": [unbound]}, client=client, timeout=10)
    assert "hand_off" in str(info.value) and "obj['a'][0]" in str(info.value)


def test_failed_future_raises_original_exception_with_path(client):
    bad = client.submit(fail, 7)
    with pytest.raises(ZeroDivisionError, match="boom 7") as info:
        unnest.unwrap({"a": [1, {"b": bad}]})
    assert info.value.__notes__ == [f"raised by the future {bad.key!r} at obj['a'][1]['b']"]
    assert info.traceback[-1].name == "fail"  # the remote traceback is kept
    # again: the note is not repeated on the shared exception object
    with pytest.raises(ZeroDivisionError) as info:
        unnest.unwrap({"a": [1, {"b": bad}]})
    assert len(info.value.__notes__) == 1


def test_failure_deep_inside_a_result_names_the_full_path(client):
    outer = client.submit(fail_inside)
    with pytest.raises(ZeroDivisionError) as info:
        unnest.unwrap([outer])
    assert info.value.__notes__[-1].endswith("at obj[0].result()['inner'][0]")


def test_cancelled_future_raises_future_cancelled_error(client):
    event = Event("never")
    blocked = client.submit(wait_event, "never", 1, pure=False)
    client.cancel(blocked)
    with pytest.raises(FutureCancelledError) as info:
        unnest.unwrap([blocked])
    assert isinstance(info.value, concurrent.futures.CancelledError)
    assert "obj[0]" in info.value.__notes__[-1]
    event.set()


def test_return_exceptions_puts_exceptions_in_place(client):
    bad = client.submit(fail, 1)
    good = client.submit(inc, 1)
    result = unnest.unwrap({"bad": bad, "good": [good]}, return_exceptions=True)
    assert result["good"] == [2]
    assert isinstance(result["bad"], ZeroDivisionError)


def test_timeout_is_honoured_and_nothing_is_cancelled(client):
    blocked = client.submit(wait_event, "go-timeout", "late", pure=False)
    # The task is let go 20 times the timeout from now: a call that outlived
    # its timeout would get the task's value instead of the TimeoutError.
    release = threading.Timer(10, Event("go-timeout").set)
    release.start()
    try:
        with pytest.raises(TimeoutError, match=r"within 0.5 s.*obj\['x'\]"):
            unnest.unwrap({"x": blocked}, timeout=0.5)
        assert blocked.status == "pending"  # the user's future lives on
    finally:
        release.cancel()
        release.join()
    Event("go-timeout").set()
    assert unnest.unwrap({"x": blocked}) == {"x": "late"}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"timeout": -1}, ValueError, "`timeout` must be non-negative"),
        ({"timeout": "1s"}, TypeError, "`timeout` must be a number"),
        ({"timeout": float("nan")}, ValueError, "`timeout` must be non-negative"),
        ({"client": "tcp://x"}, TypeError, "`client` must be a distributed.Client"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        unnest.unwrap([1], **kwargs)


def test_eager_fast_deep_branch_is_not_held_back_by_slow_shallow_one(client):
    # The slow future waits for an event that only the deepest level of the
    # Delayed chain sets. A level-by-level resolver would wait for the slow
    # future before submitting that level, and never finish.
    slow = client.submit(wait_event, "eager", "slow", pure=False)
    result = unnest.unwrap([slow, delayed_chain(4, "eager")], timeout=30)
    assert result == ["slow", "set"]


def test_finished_futures_are_fetched_in_one_batch(client):
    futures = client.map(inc, range(300))
    client.gather(futures)
    nested = {"a": [{"f": f} for f in futures[:150]], "b": tuple(futures[150:])}
    # The scheduler request the values come by.
    with counting(client.scheduler, "gather", arg="keys") as gathers:
        result = unnest.unwrap(nested)
    assert result["a"][0] == {"f": 1} and result["b"][-1] == 300
    assert gathers == [300]


class SleepWatch:
    """Records every sleep with a positive delay, in every thread it watches.

    ``time.sleep`` (a C call) and ``asyncio.sleep`` (a coroutine) alike: an
    engine that polls on the event loop's thread must be caught, so the
    watch is installed in the loops' threads too, not only in the caller's.
    """

    def __init__(self):
        self.sleeps = []

    def __call__(self, frame, event, arg):
        if event == "c_call" and arg is time.sleep:
            self.sleeps.append(("time.sleep", threading.current_thread().name))
        elif event == "call" and frame.f_code is asyncio.sleep.__code__:
            delay = frame.f_locals.get("delay", 0)
            if delay:
                self.sleeps.append((f"asyncio.sleep({delay})", threading.current_thread().name))

    @contextlib.contextmanager
    def watching(self, *loops):
        def install(profile, done):
            sys.setprofile(profile)
            done.set()

        def on_loops(profile):
            for loop in loops:
                done = threading.Event()
                loop.call_soon_threadsafe(install, profile, done)
                assert done.wait(10)

        threading.setprofile(self)
        sys.setprofile(self)
        on_loops(self)
        try:
            yield self
        finally:
            on_loops(None)
            sys.setprofile(None)
            threading.setprofile(None)


def test_no_thread_per_future_and_no_sleeping(client):
    futures = [client.submit(wait_event, "many", i, pure=False) for i in range(200)]
    result = []
    waiter = threading.Thread(target=lambda: result.append(unnest.unwrap({"fs": futures})))
    before = threading.active_count()
    loops = [client.loop.asyncio_loop, unnest._runtime.private_loop()]
    with SleepWatch().watching(*loops) as watch:
        waiter.start()
        Event("many").set()
        waiter.join(timeout=30)
    assert result == [{"fs": list(range(200))}]
    assert threading.active_count() <= before + 1
    assert watch.sleeps == []


def test_the_sleep_watch_catches_a_loop_that_sleeps(client):
    # The check above must be able to fail: a sleep on the client's loop
    # thread, as a polling engine would do, is seen.
    async def poll():
        await asyncio.sleep(0.01)

    with SleepWatch().watching(client.loop.asyncio_loop) as watch:
        client.sync(poll)
    assert watch.sleeps  # (a coroutine's frame reports a call at each resumption)
    assert {what for what, _ in watch.sleeps} == {"asyncio.sleep(0.01)"}


def test_threads_share_structures_safely(client):
    futures = client.map(inc, range(50))
    shared = {"fs": futures, "nested": [client.submit(nest, 2, pure=False)]}
    expected = {"fs": list(range(1, 51)), "nested": [[[42]]]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: unnest.unwrap(shared), range(8 * 5)))
    assert all(r == expected for r in results)


def test_unbound_future_without_a_client_is_a_clear_error():
    with pytest.raises(ValueError, match="not bound to a client and no client is active"):
        unnest.unwrap([Future("some-key")])


def test_concurrent_futures_from_client_executor(client):
    with client.get_executor() as executor:
        nested = executor.submit(nest, 2)  # a concurrent future of futures
        assert isinstance(nested, concurrent.futures.Future)
        assert unnest.unwrap({"x": nested}) == {"x": [[42]]}


# -- Delayed and collections --------------------------------------------------


def test_toy_example_on_distributed(client):
    assert unnest.unwrap(sumit(return_delayed(10))) == 55
    assert unnest.unwrap([return_delayed(3), {"s": sumit(return_delayed(4))}]) == [
        [1, 2, 3],
        {"s": 10},
    ]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_toy_example_on_local_schedulers(scheduler):
    with dask.config.set(scheduler=scheduler):
        assert unnest.unwrap(sumit(return_delayed(10))) == 55


def test_shared_dependencies_of_delayed_run_once(client):
    calls = dask.delayed(inc)(0, dask_key_name="shared-dep")
    a = dask.delayed(inc)(calls)
    b = dask.delayed(inc)(calls)
    assert unnest.unwrap({"a": a, "b": b}) == {"a": 2, "b": 2}
    story = client.run_on_scheduler(
        lambda dask_scheduler: [t for t in dask_scheduler.transition_log if t[0] == "shared-dep"]
    )
    assert sum(1 for t in story if t[2] == "memory") == 1


def test_dask_bag_is_computed():
    import dask.bag as db

    bag = db.from_sequence([1, 2, 3], npartitions=2).map(inc)
    assert unnest.unwrap({"bag": bag}) == {"bag": [2, 3, 4]}


def test_failing_delayed_names_its_place():
    with pytest.raises(ZeroDivisionError) as info, dask.config.set(scheduler="sync"):
        unnest.unwrap({"d": dask.delayed(fail)(3)})
    assert info.value.__notes__[-1].endswith("at obj['d']")


# -- Inside workers -------------------------------------------------------------


def test_one_thread_worker_does_not_deadlock():
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        # Each level is a task that unwraps the task it submitted: 10 deep.
        assert client.submit(unwrap_own_children, 10).result(timeout=100) == 10
        assert client.submit(unwrap_delayed_in_task, 5).result(timeout=60) == [1, 2, 3, 4, 5]


# -- In-process clusters: other clients and asynchronous use -------------------


@gen_cluster(client=True)
async def test_unwrap_async_with_asynchronous_client(c, s, a, b):
    outer = c.submit(nest, 2, pure=False)
    assert await unnest.unwrap_async({"x": outer}) == {"x": [[42]]}


@gen_cluster(client=True)
async def test_blocking_unwrap_in_the_loop_thread_says_what_to_use(c, s, a, b):
    with pytest.raises(RuntimeError, match="unwrap_async"):
        unnest.unwrap([c.submit(inc, 1)], client=c)


@gen_cluster(client=True)
async def test_future_of_another_live_client_is_taken_over(c, s, a, b):
    async with Client(s.address, asynchronous=True) as other:
        theirs = other.submit(inc, 10)
        with pytest.raises(ValueError, match="another client"):
            await c.gather([theirs])
        assert await unnest.unwrap_async([theirs], client=c) == [11]
        assert theirs.client is other  # the user's future is left alone


def test_unwrap_async_without_a_client():
    async def main():
        with concurrent.futures.ThreadPoolExecutor() as pool:
            return await unnest.unwrap_async([pool.submit(lambda: (pool.submit(inc, 1),))])

    assert asyncio.run(main()) == [(2,)]


@pytest.mark.integration
def test_futures_are_resolved_with_their_own_open_client(client, cli_client):
    future = client.submit(inc, 1)
    assert Client.current() is cli_client  # another scheduler's client is current
    assert unnest.unwrap({"x": [future]}) == {"x": [2]}


# -- Ctrl-C and timeout end the call: nothing of it is left running ------------


def block(started, release, value):
    """Say it runs, then wait (out of the worker's thread pool) for ``release``."""
    secede()
    Event(started).set()
    Event(release).wait()
    return value


def hand_off_blocked(started, release):
    """Hand off a blocked child and a Delayed that says when unwrap computes it."""
    child = get_client().submit(block, f"{started}-child", release, "child", pure=False)
    later = dask.delayed(block, pure=False)(started, release, "delayed")
    return unnest.hand_off({"child": child, "later": later})


class _Forgetting(SchedulerPlugin):
    """Calls ``check`` after every key the scheduler forgets."""

    def __init__(self, check):
        self.check = check

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "forgotten":
            asyncio.get_running_loop().call_soon(self.check)


async def _wait_only(dask_scheduler, allowed, timeout):
    only = asyncio.Event()

    def check():
        if set(dask_scheduler.tasks) <= allowed:
            only.set()

    name = f"unnest-test-only-{uuid.uuid4()}"
    dask_scheduler.add_plugin(_Forgetting(check), name=name)
    try:
        check()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(only.wait(), timeout)
    finally:
        dask_scheduler.remove_plugin(name=name)
    return sorted(map(str, set(dask_scheduler.tasks) - allowed))


def keys_beyond(client, allowed, timeout=5):
    """Keys other than ``allowed`` the scheduler still holds once it forgot the rest.

    Waits for the scheduler's own event of forgetting keys, for ``timeout``
    seconds at most.
    """
    return client.run_on_scheduler(_wait_only, allowed=set(allowed), timeout=timeout)


@contextlib.contextmanager
def ctrl_c_once_set(client, name, timeout=30):
    """Ctrl-C (SIGINT to the main thread) once the distributed Event ``name`` is set.

    Only while inside the block: no SIGINT can arrive after it.
    """
    armed = threading.Lock()
    live = [True]

    def interrupt():
        if Event(name, client=client).wait(timeout):
            with armed:
                if live[0]:
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    helper = threading.Thread(target=interrupt, daemon=True, name="ctrl-c")
    helper.start()
    try:
        yield
    finally:
        with armed:
            live[0] = False


@pytest.fixture
def paused_gc():
    """What a call started must end with the call, not when the collector runs."""
    enabled = gc.isenabled()
    gc.disable()
    yield
    if enabled:
        gc.enable()


@pytest.mark.timeout(60)
def test_ctrl_c_ends_the_call_and_leaves_the_users_futures_alone(client, paused_gc):
    assert threading.current_thread() is threading.main_thread()
    mine = client.submit(block, "c-mine-started", "c-release", "mine", pure=False)
    producer = client.submit(hand_off_blocked, "c-started", "c-release", pure=False)
    try:
        # The Delayed in the producer's value sets "c-started" once unwrap
        # computes it: by then unwrap has walked that value and is taking the
        # child over.
        with pytest.raises(KeyboardInterrupt), ctrl_c_once_set(client, "c-started"):
            unnest.unwrap({"mine": mine, "p": producer}, timeout=30)
        assert mine.status == "pending"  # the user's own future is not cancelled
        del producer  # the user lets go of theirs: the hand-off ends with it
        # Neither the Delayed unwrap submitted nor the child it took over is held.
        assert keys_beyond(client, {mine.key}) == []
    finally:
        Event("c-release", client=client).set()
    assert mine.result(timeout=10) == "mine"


@pytest.mark.timeout(60)
def test_timeout_releases_the_delayed_it_submitted(client, paused_gc):
    mine = client.submit(block, "t-mine-started", "t-release", "mine", pure=False)
    submitted = dask.delayed(block, pure=False)("t-started", "t-release", "delayed")
    try:
        # The exception is kept (as a user who logs or stores it would).
        with pytest.raises(TimeoutError) as info:
            unnest.unwrap({"mine": mine, "d": submitted}, timeout=2)
        assert Event("t-started", client=client).wait(10)  # it did run
        assert mine.status == "pending"  # the user's own future is not cancelled
        assert keys_beyond(client, {mine.key}) == []  # the Delayed's key is released
        assert isinstance(info.value, TimeoutError)  # still kept
    finally:
        Event("t-release", client=client).set()
    assert mine.result(timeout=10) == "mine"


# -- found by hostile testing --


class _Labelled:
    """A registered container whose ``label`` (user code) raises."""

    def __init__(self, value):
        self.value = value


def _flatten_labelled(box):
    return [box.value], lambda values: _Labelled(values[0])


def _in_daemon_thread(fn, timeout):
    """``fn()`` in a daemon thread: its value or exception, else a test failure."""
    out = concurrent.futures.Future()

    def run():
        try:
            out.set_result(fn())
        except BaseException as e:  # KeyboardInterrupt too
            out.set_exception(e)

    threading.Thread(target=run, daemon=True, name="hostile-call").start()
    try:
        return out.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        if not out.done():
            pytest.fail(f"the call did not return within {timeout} s")
        raise


@pytest.mark.timeout(30)
@pytest.mark.parametrize("exc", [KeyboardInterrupt, LookupError])
def test_timeout_is_a_timeout_error_when_a_label_raises(exc):
    # The timeout message names the pending place, which runs the user's
    # label; what it raises must not replace the TimeoutError or stop the loop.
    def label(box, i):
        raise exc("label")

    unnest.register_container(_Labelled, _flatten_labelled, label=label)
    try:
        pending = concurrent.futures.Future()
        with pytest.raises(TimeoutError):
            _in_daemon_thread(lambda: unnest.unwrap(_Labelled(pending), timeout=0.2), 10)
        finished = concurrent.futures.Future()
        finished.set_result(1)
        assert _in_daemon_thread(lambda: unnest.unwrap([finished], timeout=5), 10) == [1]
    finally:
        private = unnest._runtime._private
        if private is not None and not private[1].is_running():
            unnest._runtime._private = None  # a dead loop: later tests get a new one


@pytest.mark.timeout(60)
def test_explicit_closed_client_is_a_clear_error(client, monkeypatch):
    unraisable = []  # messages only: keeping the objects would keep them alive
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(str(u.exc_value)))
    other = Client(client.scheduler.address, set_as_default=False)
    future = other.submit(inc, 1)
    future.result()
    other.close()
    try:
        unnest.unwrap([future], client=other, timeout=5)
    except (ValueError, RuntimeError) as e:
        message = str(e)
    else:
        pytest.fail("no error")
    for _ in range(3):
        gc.collect()
    assert future.key in message and "closed" in message, message
    assert not unraisable  # no coroutine of the call is left never awaited


# -- placeholders found in a concurrent future's value (issue 17, bugs 6 and 7) --------


@pytest.fixture(params=["current-client", "no-current-client"])
def own_client(request, mp_cluster):
    """A client whose futures a concurrent future's value holds.

    The current client: the call runs on its loop from the start. No current
    client: the call starts on unnest's own loop and meets the client's
    futures only inside the value, so a relay call on the client's loop
    resolves them.
    """
    with Client(mp_cluster, set_as_default=request.param == "current-client") as own:
        assert (unnest._runtime.current_client() is own) == (request.param == "current-client")
        yield own


def test_futures_in_a_concurrent_futures_value_are_fetched_together(own_client):
    futures = own_client.map(inc, range(1000), pure=False)
    own_client.gather(futures)
    with counting(own_client.scheduler, "gather", arg="keys") as gathers:
        assert unnest.unwrap({"o": done(futures)}) == {"o": list(range(1, 1001))}
    assert gathers == [1000]  # one request, not one call per future


def test_delayed_in_a_concurrent_futures_value_are_submitted_together(own_client):
    delayed = [dask.delayed(inc, pure=False)(i) for i in range(50)]
    with (
        dask.config.set(scheduler=own_client),
        counting(own_client, "get", arg=1) as submissions,
    ):
        assert unnest.unwrap([done(delayed)]) == [list(range(1, 51))]
    assert submissions == [50]


def test_a_failure_in_a_concurrent_futures_value_has_one_note_naming_its_place(own_client):
    bad = own_client.submit(fail, 1)
    deeper = own_client.submit(fail_inside, pure=False)  # {"inner": [a failing future]}
    with pytest.raises(ZeroDivisionError) as info:
        unnest.unwrap({"o": done([1, bad])})
    assert info.value.__notes__ == [f"raised by the future {bad.key!r} at obj['o'].result()[1]"]
    with pytest.raises(ZeroDivisionError) as info:
        unnest.unwrap({"o": done({"d": deeper})})
    (note,) = info.value.__notes__
    assert note.endswith("at obj['o'].result()['d'].result()['inner'][0]")
    placed = unnest.unwrap({"o": done([1, bad])}, return_exceptions=True)
    assert isinstance(placed["o"][1], ZeroDivisionError)


def test_a_fast_future_in_a_relayed_batch_is_not_held_back_by_a_slow_one(own_client):
    name = f"slow-{uuid.uuid4().hex}"
    slow = own_client.submit(wait_event, name, "slow", pure=False)
    fast = own_client.submit(inc, 1, pure=False)
    stream = unnest.as_resolved({"slow": done([slow]), "fast": done([fast])})
    try:
        assert next(stream) == (("fast",), [2])
        assert slow.status == "pending"
    finally:
        Event(name, client=own_client).set()
    assert list(stream) == [(("slow",), ["slow"])]


# -- found by the reference model (issue 17) ------------------------------------------


def test_a_concurrent_futures_exception_is_not_given_unnests_notes():
    # The user's exception object, held by their concurrent future: a note
    # naming one call's place went on it, and a second call added another.
    exc = KeyError("mine")
    f = concurrent.futures.Future()
    f.set_exception(exc)
    for obj, place in (({"a": f}, "obj['a']"), ([0, f], "obj[1]")):
        with pytest.raises(KeyError) as info:
            unnest.unwrap(obj)
        assert info.value is not exc
        assert info.value.__notes__ == [f"raised by the concurrent.futures.Future at {place}"]
    assert getattr(exc, "__notes__", []) == []
    assert f.exception() is exc


def test_what_an_unserializable_result_was_fetched_with_is_let_go_at_once(mp_client, paused_gc):
    # The fetch's error kept our frames (and the batch's futures) in its
    # traceback, and a placed error pinned them until the collector ran.
    from helpers import wait_forgotten, watch_forgotten

    watch_forgotten(mp_client)
    good = [mp_client.submit(inc, i, pure=False) for i in range(3)]
    bad = mp_client.submit(lambda: threading.Lock(), pure=False)
    placed = unnest.unwrap([dask.delayed(inc)(1), good, bad], return_exceptions=True)
    assert placed[:2] == [2, [1, 2, 3]] and isinstance(placed[2], TypeError)
    keys = [f.key for f in [*good, bad]]
    del good, bad, placed
    assert wait_forgotten(mp_client, keys) == []


def test_a_call_settled_by_its_walk_keeps_nothing(mp_client, paused_gc):
    # unwrap of a quote (nothing to wait for) kept its graph -- the futures
    # in the opaque among it -- until the collector ran.
    from helpers import wait_forgotten, watch_forgotten

    watch_forgotten(mp_client)
    futures = [mp_client.submit(inc, i, pure=False) for i in range(3)]
    kept = unnest.unwrap({"as_is": unnest.quote(futures)})
    assert kept["as_is"] is futures
    keys = [f.key for f in futures]
    del futures, kept
    assert wait_forgotten(mp_client, keys) == []


# -- the GC pause of a call with many placeholders ---------------------------------


class Probe:
    """A placeholder of ours whose conversion records the collector's state.

    ``as_future`` runs on the call's loop once the walk has handed it on: in
    the middle of the call.
    """

    def __init__(self, value, gate=None):
        self.value = value
        self.gate = gate  # a concurrent future its value waits for, if any
        self.seen = None
        self.converted = threading.Event()


@unnest.register_placeholder(Probe)
def _probe_future(probe):
    probe.seen = (gc.isenabled(), unnest._runtime.gc_resumed.is_set())
    probe.converted.set()
    if probe.gate is not None:
        return probe.gate
    future = concurrent.futures.Future()
    future.set_result(probe.value)
    return future


def many_done(n=unnest.resolve.GC_PAUSE_AT):
    futures = [concurrent.futures.Future() for _ in range(n)]
    for i, future in enumerate(futures):
        future.set_result(i)
    return futures


@pytest.fixture
def gc_on():
    """The collector enabled during the test; every pause over after it."""
    enabled = gc.isenabled()
    gc.enable()
    yield
    assert unnest._runtime.gc_resumed.wait(10), "a pause outlived its call"
    assert gc.isenabled()
    if not enabled:
        gc.disable()


def test_a_call_with_many_placeholders_pauses_the_gc_until_it_ends(mp_client, gc_on):
    probe = Probe("p")
    futures = mp_client.map(inc, range(unnest.resolve.GC_PAUSE_AT), pure=False)
    out = unnest.unwrap({"futures": futures, "probe": probe})
    assert out == {"futures": list(range(1, len(futures) + 1)), "probe": "p"}
    assert probe.seen == (False, False)
    assert gc.isenabled()


def test_a_big_call_leaves_no_thread_behind(gc_on):
    # distributed.utils_test's fixtures fail a test that leaves a thread
    # alive: the first big call in a process started a lasting one.
    before = set(threading.enumerate())
    assert unnest.unwrap([Probe("p"), many_done()])[0] == "p"
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
        assert not thread.is_alive(), thread


def test_a_small_call_pauses_the_gc_only_while_it_walks(mp_client, gc_on):
    probe = Probe("p")
    futures = mp_client.map(inc, range(10), pure=False)
    assert unnest.unwrap([probe, futures])[0] == "p"
    assert probe.seen == (True, True)


@pytest.mark.parametrize("setting", [0, "0s"])
def test_the_pause_is_off_with_a_zero_setting(setting, gc_on):
    probe = Probe("p")
    with dask.config.set({"unnest.gc-pause": setting}):
        assert unnest.unwrap([probe, many_done()])[0] == "p"
    assert probe.seen == (True, True)


def test_a_value_that_reveals_many_placeholders_pauses_the_gc(gc_on):
    probe = Probe("p")
    outer = concurrent.futures.Future()
    outer.set_result([many_done(), probe])
    assert unnest.unwrap(outer)[1] == "p"
    assert probe.seen == (False, False)


@pytest.mark.timeout(60)
def test_the_pause_ends_at_its_bound_while_the_call_still_waits(gc_on):
    gate = concurrent.futures.Future()
    probe = Probe(None, gate)
    with (
        dask.config.set({"unnest.gc-pause": "50ms"}),
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        call = pool.submit(unnest.unwrap, [probe, many_done()])
        # The probe's conversion runs inside the call, once it is paused.
        assert probe.converted.wait(30)
        assert probe.seen == (False, False)
        assert unnest._runtime.gc_resumed.wait(10), "the bound did not end the pause"
        assert gc.isenabled() and not call.done()
        gate.set_result("late")
        assert call.result(timeout=30)[0] == "late"


@pytest.mark.parametrize("how", ["error", "group", "timeout", "walk"])
def test_the_gc_is_back_after_a_call_that_fails(how, gc_on):
    failed = concurrent.futures.Future()
    failed.set_exception(ZeroDivisionError("boom"))
    never = concurrent.futures.Future()
    args = {
        "error": ([failed, many_done()], {}, ZeroDivisionError),
        "group": ([failed, many_done()], {"errors": "group"}, ExceptionGroup),
        "timeout": ([never, many_done()], {"timeout": 0.05}, TimeoutError),
        "walk": (cyclic_with(many_done()), {}, ValueError),
    }
    obj, options, error = args[how]
    with pytest.raises(error):
        unnest.unwrap(obj, **options)
    assert gc.isenabled()


def cyclic_with(futures):
    """A list that holds itself and a future that yields another future: a cycle."""
    looped = []
    outer = concurrent.futures.Future()
    outer.set_result(looped)
    looped.extend([outer, *futures])
    return looped


def test_a_users_gc_disable_outlasts_a_call(gc_on):
    gc.disable()
    try:
        probe = Probe("p")
        assert unnest.unwrap([probe, many_done()])[0] == "p"
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_async_call_cancelled_resumes_the_gc(gc_on):
    probe = Probe(None, concurrent.futures.Future())  # never done

    async def main():
        task = asyncio.ensure_future(unnest.unwrap_async([probe, many_done()]))
        converted = asyncio.get_running_loop().run_in_executor(None, probe.converted.wait, 30)
        assert await converted  # the call is paused and waits
        assert probe.seen == (False, False)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert gc.isenabled()


def test_a_stream_pauses_the_gc_only_while_it_walks(gc_on):
    probe = Probe("p")
    with unnest.as_resolved([probe, many_done()]) as pairs:
        for _ in pairs:
            pass
    assert probe.seen == (True, True)


@pytest.mark.parametrize("setting", [None, "0ms"])
def test_a_none_or_zero_pause_setting_turns_it_off(setting, gc_on):
    probe = Probe("p")
    with dask.config.set({"unnest.gc-pause": setting}):
        assert unnest.unwrap([probe, many_done()])[0] == "p"
    assert probe.seen == (True, True)


def test_the_gc_is_back_when_the_futures_client_is_closed(mp_cluster, gc_on):
    with Client(mp_cluster) as other:
        futures = other.map(inc, range(unnest.resolve.GC_PAUSE_AT), pure=False)
        other.gather(futures)
    with pytest.raises(ValueError, match="client"):
        unnest.unwrap(futures)
    assert gc.isenabled() and unnest._runtime.gc_resumed.is_set()


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_an_async_call_cancelled_twice_resumes_the_gc(mp_cluster, steps, gc_on):
    # asyncio.timeout and task groups cancel again: the second cancellation
    # landed in the call's cleanup and skipped the end of its pause.
    async def main():
        async with Client(mp_cluster.scheduler_address, asynchronous=True) as c:
            futures = c.map(inc, range(unnest.resolve.GC_PAUSE_AT), pure=False)
            await c.gather(futures)
            probe = Probe(None, concurrent.futures.Future())  # never done
            task = asyncio.ensure_future(unnest.unwrap_async([probe, futures]))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, probe.converted.wait, 30)
            assert probe.seen == (False, False)
            task.cancel()
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert gc.isenabled() and unnest._runtime.gc_resumed.is_set()

    asyncio.run(main())
