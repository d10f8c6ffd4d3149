"""as_resolved / as_resolved_async on a multi-process cluster and in-process ones."""

import asyncio
import collections
import concurrent.futures
import dataclasses
import gc
import signal
import threading
import uuid
from pathlib import Path

import attr
import dask
import pydantic
import pytest
from distributed import Client, Event, Future, LocalCluster, get_client, secede
from helpers import fail, in_thread, inc, wait_forgotten, watch_forgotten

import unnest
import unnest._runtime
from unnest import Key

pytestmark = pytest.mark.timeout(60)

# -- tasks (module level: workers import them by reference) -------------------


def hold(name, value):
    """Wait, out of the worker's thread pool, for the distributed Event ``name``."""
    secede()
    Event(f"{name}-started").set()
    Event(name).wait()
    return value


def branch(depth, name):
    """``depth`` tasks, each returning the next one's future; the last holds on ``name``."""
    if depth == 0:
        return hold(name, "leaf")
    return unnest.hand_off([get_client().submit(branch, depth - 1, name, pure=False)])


def fail_on(name):
    hold(name, None)
    raise ZeroDivisionError(f"boom {name}")


def hand_off_held(tag):
    """Hand off a held child and a Delayed that says when unnest computes it."""
    child = get_client().submit(hold, f"{tag}-child", "child", pure=False)
    later = dask.delayed(hold, pure=False)(f"{tag}-later", "later")
    return unnest.hand_off({"child": child, "later": later})


def stream_own_children(n):
    """In a task: submit children and consume them with as_resolved."""
    client = get_client()
    children = [client.submit(inc, i, pure=False) for i in range(n)]
    return sorted(unnest.as_resolved(children, timeout=30))


def tagged():
    return uuid.uuid4().hex


def release(client, *names):
    for name in names:
        Event(name, client=client).set()


def started(client, name, timeout=10):
    assert Event(f"{name}-started", client=client).wait(timeout), name


# unnest's own files, by the package imported, not by a name in a path: a
# checkout is often a folder named "unnest", and these tests are in it too.
UNNEST = Path(unnest.__file__).resolve().parent


def our_tasks():
    """The asyncio tasks on the running loop whose coroutines are unnest's code."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and Path(code.co_filename).resolve().is_relative_to(UNNEST):
            found.append(code.co_qualname)
    return found


def unnest_tasks(client):
    """unnest's asyncio tasks still on ``client``'s loop."""

    async def tasks():
        return our_tasks()

    return client.sync(tasks)


# -- order -------------------------------------------------------------------


def test_completion_order_follows_the_branches_real_finish_times(mp_client):
    tag = tagged()
    names = {b: f"{tag}-{b}" for b in ("shallow", "deep", "middle")}
    obj = {
        "shallow": mp_client.submit(hold, names["shallow"], "s", pure=False),
        "deep": [mp_client.submit(branch, 4, names["deep"], pure=False)],
        "middle": (mp_client.submit(branch, 2, names["middle"], pure=False),),
    }
    order = ["deep", "shallow", "middle"]  # the order the branches are let finish
    pending = iter(order)
    release(mp_client, names[next(pending)])
    got = []
    for path, value in unnest.as_resolved(obj, timeout=30):
        got.append((path, value))
        if path[0] == "deep":
            assert obj["shallow"].status == "pending"  # a fast deep branch first
        following = next(pending, None)
        if following is not None:
            release(mp_client, names[following])
    assert got == [
        (("deep", 0), [[[["leaf"]]]]),
        (("shallow",), "s"),
        (("middle", 0), [["leaf"]]),
    ]


# -- paths ---------------------------------------------------------------------

Pair = collections.namedtuple("Pair", "x y")


@dataclasses.dataclass
class Record:
    a: object
    b: object


@attr.define
class Attrs:
    x: object


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", arbitrary_types_allowed=True)
    x: object


class Box:
    def __init__(self, value):
        self.value = value


unnest.register_container(Box, lambda box: ([box.value], lambda values: Box(values[0])))


def follow(obj, path):
    """The object at ``path`` in ``obj``, by the rules as_resolved documents."""
    for step in path:
        if isinstance(obj, (set, frozenset)):
            assert step in obj
            obj = next(member for member in obj if member is step)
        elif isinstance(step, Key):
            obj = next(key for key in obj if key is step.key)
        elif isinstance(obj, Box):
            obj = [obj.value][step]
        elif isinstance(step, str) and not isinstance(obj, dict):
            obj = getattr(obj, step)
        else:
            obj = obj[step]
    return obj


def test_paths_for_every_walked_container(mp_client):
    f = mp_client.map(inc, range(14), pure=False)
    key = frozenset([f[5]])
    obj = {
        "list": [1, f[0]],
        "tuple": (f[1],),
        "namedtuple": Pair(1, f[2]),
        "deque": collections.deque([0, f[3]], maxlen=5),
        f[4]: "a future as a key",
        key: "a key with a future inside",
        "set": {1, f[6]},
        "dataclass": Record(a=1, b=f[7]),
        "attrs": Attrs(f[8]),
        "pydantic": Model(x=f[9], extra=f[10]),
        "registered": Box(f[11]),
        "deep": [[{"k": (f[12],)}]],
        "value under a future key": {f[13]: f[13]},
    }
    expected = {
        ("list", 1): 1,
        ("tuple", 0): 2,
        ("namedtuple", 1): 3,
        ("deque", 1): 4,
        (Key(f[4]),): 5,
        (Key(key), f[5]): 6,
        ("set", f[6]): 7,
        ("dataclass", "b"): 8,
        ("attrs", "x"): 9,
        ("pydantic", "x"): 10,
        ("pydantic", "extra"): 11,
        ("registered", 0): 12,
        ("deep", 0, 0, "k", 0): 13,
        ("value under a future key", Key(f[13])): 14,
        ("value under a future key", f[13]): 14,
    }
    got = list(unnest.as_resolved(obj, timeout=30))
    assert dict(got) == expected and len(got) == len(expected)
    for path, _ in got:
        assert isinstance(follow(obj, path), Future)
    # The input itself a placeholder: the empty path.
    assert list(unnest.as_resolved(f[0])) == [((), 1)]


def test_one_pair_per_place_of_a_shared_placeholder(mp_client):
    future = mp_client.submit(inc, 1)
    again = Future(future.key, mp_client)  # another object of the same key
    shared = [future]
    obj = {"a": shared, "b": shared, "c": future, "d": again}
    got = list(unnest.as_resolved(obj))
    assert sorted(got) == [(("a", 0), 2), (("b", 0), 2), (("c",), 2), (("d",), 2)]


def test_nothing_to_resolve_yields_nothing(mp_client):
    futures = [mp_client.submit(inc, 1)]
    assert list(unnest.as_resolved({"a": [1, "x"], "b": unnest.quote(futures)})) == []
    assert list(unnest.as_resolved([])) == []


# -- the end of the iteration, however it comes ---------------------------------------


def when_set(client, name, then):
    """In a helper thread: once the distributed Event ``name`` is set, ``then()``."""

    def wait():
        if Event(name, client=client).wait(30):
            then()

    threading.Thread(target=wait, daemon=True, name="when-set").start()


@pytest.mark.parametrize("stop", ["break", "close", "with"])
def test_stopping_early_ends_the_call_and_leaves_nothing(mp_client, stop):
    watch_forgotten(mp_client)
    tag = tagged()
    mine = mp_client.submit(hold, f"{tag}-mine", "mine", pure=False)
    obj = {
        "fast": [mp_client.submit(hold, f"{tag}-fast", "fast", pure=False)],
        "mine": mine,
        "producer": mp_client.submit(hand_off_held, tag, pure=False),
    }
    # When the Delayed in the producer's value runs, unnest has walked that
    # value and is taking its child over: only then may the fast branch end.
    when_set(mp_client, f"{tag}-later-started", lambda: release(mp_client, f"{tag}-fast"))
    try:
        stream = unnest.as_resolved(obj, timeout=30)
        if stop == "with":
            with stream:
                assert next(stream) == (("fast", 0), "fast")
        else:
            for pair in stream:
                assert pair == (("fast", 0), "fast")
                break
            if stop == "close":
                stream.close()
            else:
                del stream  # the for loop's reference was the last but this one
        assert unnest_tasks(mp_client) == []
        assert mine.status == "pending"  # the user's own future is not cancelled
        release(mp_client, f"{tag}-mine")
        assert mine.result(timeout=10) == "mine"
        del mine, obj
        # Neither the child nor the Delayed is held: mine, fast, the producer and them.
        assert wait_forgotten(mp_client, made=5) == []
    finally:
        release(mp_client, *(f"{tag}-{n}" for n in ("mine", "fast", "child", "later")))


# -- errors and timeouts ------------------------------------------------------------


def test_an_error_raises_where_it_happened_with_unwraps_note(mp_client):
    tag = tagged()
    bad = mp_client.submit(fail_on, f"{tag}-bad", pure=False)
    obj = {"good": mp_client.submit(inc, 1), "bad": [bad]}
    stream = unnest.as_resolved(obj, timeout=30)
    assert next(stream) == (("good",), 2)
    release(mp_client, f"{tag}-bad")
    with pytest.raises(ZeroDivisionError, match="boom") as streamed:
        next(stream)
    with pytest.raises(ZeroDivisionError) as unwrapped:
        unnest.unwrap(obj)
    assert streamed.value.__notes__[-1] == f"raised by the future {bad.key!r} at obj['bad'][0]"
    assert streamed.value.__notes__ == unwrapped.value.__notes__
    assert list(stream) == []  # the iteration is over
    assert unnest_tasks(mp_client) == []


def test_an_error_deep_in_a_branch_names_the_full_place(mp_client):
    producer = mp_client.submit(branch_failing, pure=False)
    with pytest.raises(ZeroDivisionError) as info:
        list(unnest.as_resolved({"x": producer}, timeout=30))
    assert info.value.__notes__[-1].endswith("at obj['x'].result()[0]")


def branch_failing():
    return unnest.hand_off([get_client().submit(fail, 1)])


def test_return_exceptions_yields_the_exception_as_the_value(mp_client):
    obj = {"bad": mp_client.submit(fail, 3), "good": [mp_client.submit(inc, 1)]}
    got = dict(unnest.as_resolved(obj, return_exceptions=True, timeout=30))
    assert got[("good", 0)] == 2
    assert isinstance(got[("bad",)], ZeroDivisionError)


def test_timeout_is_for_the_whole_iteration(mp_client):
    tag = tagged()
    blocked = mp_client.submit(hold, f"{tag}-never", "late", pure=False)
    stream = unnest.as_resolved({"ready": mp_client.submit(inc, 1), "blocked": blocked}, timeout=1)
    try:
        assert next(stream) == (("ready",), 2)
        with pytest.raises(TimeoutError, match=r"as_resolved did not finish within 1 s.*'blocked'"):
            next(stream)
        assert blocked.status == "pending"  # nothing of the user's is cancelled
    finally:
        release(mp_client, f"{tag}-never")


# -- where it runs ----------------------------------------------------------------------


def test_safe_in_a_one_thread_worker_task():
    # Without seceding while it waits, the task would hold the only thread
    # its children can run on.
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as one,
        Client(one) as client,
    ):
        got = client.submit(stream_own_children, 3).result(timeout=30)
    assert got == [((0,), 1), ((1,), 2), ((2,), 3)]


def asynchronously(cluster, test):
    """Run ``await test(client)`` with an asynchronous client of ``cluster``."""

    async def main():
        async with Client(cluster.scheduler_address, asynchronous=True) as client:
            return await test(client)

    return asyncio.run(main())


def test_blocking_iterator_in_the_loop_thread_says_what_to_use(mp_cluster):
    async def test(c):
        with pytest.raises(RuntimeError, match=r"async for \.\.\. in unnest\.as_resolved_async"):
            next(unnest.as_resolved([c.submit(inc, 1)], client=c))
        with pytest.raises(RuntimeError, match="as_resolved_async"):
            next(unnest.as_resolved([c.submit(inc, 1)]))

    asynchronously(mp_cluster, test)


def test_async_iterator_with_an_asynchronous_client(mp_cluster):
    tag = tagged()

    async def test(c):
        slow = c.submit(hold, f"{tag}-slow", "s", pure=False)
        obj = {"slow": slow, "deep": [c.submit(branch, 2, f"{tag}-deep", pure=False)]}
        await Event(f"{tag}-deep", client=c).set()
        got = []
        async for path, value in unnest.as_resolved_async(obj, timeout=30):
            got.append((path, value))
            await Event(f"{tag}-slow", client=c).set()
        return got

    got = asynchronously(mp_cluster, test)
    assert got == [(("deep", 0), [["leaf"]]), (("slow",), "s")]


@pytest.mark.parametrize("stop", ["aclose", "drop"])
def test_async_iterator_stopped_early_leaves_nothing(mp_cluster, stop):
    tag = tagged()

    async def test(c):
        await watch_forgotten(c)
        obj = {
            "fast": c.submit(inc, 1, pure=False),
            "held": [c.submit(hand_off_held, tag, pure=False)],
        }
        stream = unnest.as_resolved_async(obj, timeout=30)
        try:
            assert await stream.__anext__() == (("fast",), 2)
            await Event(f"{tag}-later-started", client=c).wait()
            if stop == "aclose":
                await stream.aclose()
                assert our_tasks() == []
                with pytest.raises(StopAsyncIteration):
                    await stream.__anext__()
            del stream, obj  # "drop": never exhausted, never closed
            # fast, the producer, its child and the Delayed unnest computed
            return await wait_forgotten(c, made=4)
        finally:
            for name in ("child", "later"):
                await Event(f"{tag}-{name}", client=c).set()

    assert asynchronously(mp_cluster, test) == []


def test_async_iterator_cancelled_while_waiting_ends_the_call(mp_cluster):
    tag = tagged()

    async def test(c):
        held = c.submit(hold, f"{tag}-mine", "held", pure=False)
        obj = {"mine": held, "taken": [c.submit(hand_off_held, tag, pure=False)]}
        stream = unnest.as_resolved_async(obj)
        try:
            task = asyncio.ensure_future(stream.__anext__())
            await Event(f"{tag}-later-started", client=c).wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert our_tasks() == []
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()  # the iteration is over
            assert held.status == "pending"  # the user's own future lives on
        finally:
            for name in ("mine", "child", "later"):
                await Event(f"{tag}-{name}", client=c).set()
        return await held

    assert asynchronously(mp_cluster, test) == "held"


# -- found by hostile use -----------------------------------------------------------


def test_ctrl_c_while_waiting_ends_the_call_and_leaves_the_users_futures(mp_client):
    assert threading.current_thread() is threading.main_thread()
    tag = tagged()
    mine = mp_client.submit(hold, f"{tag}-mine", "mine", pure=False)
    obj = {"mine": mine, "p": mp_client.submit(hand_off_held, tag, pure=False)}
    stream = unnest.as_resolved(obj, timeout=30)

    def interrupt():
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    # Ctrl-C once unnest computes the Delayed in the producer's value.
    when_set(mp_client, f"{tag}-later-started", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            next(stream)
        assert unnest_tasks(mp_client) == []
        assert list(stream) == []  # over
        assert mine.status == "pending"
    finally:
        release(mp_client, *(f"{tag}-{n}" for n in ("mine", "child", "later")))
    assert mine.result(timeout=10) == "mine"


def test_a_progress_callable_that_raises_ends_the_iteration(mp_client):
    tag = tagged()

    def progress(resolved, discovered):
        raise LookupError("the reporter broke")

    held = [mp_client.submit(hold, tag, 1, pure=False)]
    stream = unnest.as_resolved(held, progress=progress, timeout=30)
    try:
        with pytest.raises(LookupError, match="reporter broke"):
            next(stream)
        assert unnest_tasks(mp_client) == []
    finally:
        release(mp_client, tag)


def test_a_placeholder_shared_exponentially_often_costs_only_what_is_taken():
    done = concurrent.futures.Future()
    done.set_result(1)
    obj = [done]
    for _ in range(64):
        obj = [obj, obj]  # 2**64 places
    with unnest.as_resolved(obj, timeout=10) as stream:
        first = [next(stream) for _ in range(3)]
    paths = [path for path, _ in first]
    assert len(set(paths)) == 3 and all(len(path) == 65 for path in paths)
    assert all(follow(obj, path) is done for path in paths)
    assert [value for _, value in first] == [1, 1, 1]


def test_closing_at_any_moment_is_safe():
    done = concurrent.futures.Future()
    done.set_result(1)
    never = unnest.as_resolved([done])
    never.close()  # before it started
    assert list(never) == []
    stream = unnest.as_resolved({"a": done, "b": [done]})
    assert next(stream)[1] == 1
    stream.close()
    stream.close()
    assert list(stream) == []
    gc.collect()


def test_an_input_placeholder_inside_another_ones_result_is_yielded_at_its_own_place(mp_client):
    inner = mp_client.submit(inc, 1)
    outer = mp_client.submit(wrap_in_list, inner)  # its value holds ``inner``
    got = sorted(unnest.as_resolved({"inner": inner, "outer": outer}), key=str)
    assert got == [(("inner",), 2), (("outer",), [2])]


def wrap_in_list(x):
    return unnest.hand_off([get_client().submit(inc, x - 1, pure=True)])


def test_concurrent_futures_without_a_client_stop_cleanly():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        gate = threading.Event()
        blocked = pool.submit(gate.wait)
        obj = {"fast": pool.submit(int, 3), "blocked": [blocked]}
        try:
            for pair in unnest.as_resolved(obj):
                assert pair == (("fast",), 3)
                break
            loop = unnest._runtime.private_loop()
            tasks = asyncio.run_coroutine_threadsafe(_our_tasks_now(), loop).result(10)
            assert tasks == []
            assert not blocked.cancelled()
        finally:
            gate.set()  # else a failure hangs in the pool's shutdown until the timeout


async def _our_tasks_now():
    return our_tasks()


# -- closed from elsewhere while an iteration waits (issue 17, bug 1) ---------------


def test_close_from_another_thread_ends_a_waiting_next_with_stop_iteration(mp_client):
    tag = tagged()
    mine = mp_client.submit(hold, f"{tag}-mine", "mine", pure=False)
    waiting = threading.Event()
    # A progress callable is called in the iterating thread while next() waits.
    stream = unnest.as_resolved({"mine": mine}, progress=lambda *_: waiting.set())
    consumer = concurrent.futures.ThreadPoolExecutor(1)
    try:
        outcome = consumer.submit(next, stream, "exhausted")
        assert waiting.wait(30)
        stream.close()
        # The default of next(): StopIteration, not unnest.stream._Closed.
        assert outcome.result(timeout=30) == "exhausted"
        assert unnest_tasks(mp_client) == []
        assert mine.status == "pending"  # the user's own future is not cancelled
    finally:
        release(mp_client, f"{tag}-mine")
        consumer.shutdown()
    assert mine.result(timeout=10) == "mine"


class Gate:
    """A container whose walk waits for ``go``: a first next() held in its walk."""

    def __init__(self, inner):
        self.inner = inner
        self.entered = threading.Event()
        self.go = threading.Event()


@unnest.register_container(Gate)
def _flatten_gate(gate):
    gate.entered.set()
    assert gate.go.wait(30)
    return [gate.inner], lambda values: Gate(values[0])


def test_close_while_the_first_next_starts_the_call_in_another_thread():
    # close() came while next() was still walking the input, before the call
    # ran: the call started anyway, and that next() waited for it for ever.
    pending = concurrent.futures.Future()
    gate = Gate([pending])
    stream = unnest.as_resolved(gate)
    outcome = in_thread(lambda: next(stream, "exhausted"))
    assert gate.entered.wait(30)
    stream.close()
    gate.go.set()
    assert outcome.result(timeout=30) == "exhausted"
    assert not pending.cancelled()


def test_aclose_from_another_task_ends_a_waiting_anext_with_stop_async_iteration(mp_cluster):
    tag = tagged()

    async def test(c):
        mine = c.submit(hold, f"{tag}-mine", "mine", pure=False)
        stream = unnest.as_resolved_async({"mine": [mine]})
        entered = asyncio.Event()

        async def consume():
            entered.set()
            return [pair async for pair in stream]

        consumer = asyncio.ensure_future(consume())
        try:
            await entered.wait()  # the consumer now waits in __anext__
            await stream.aclose()
            assert await consumer == []
            assert our_tasks() == []
            assert mine.status == "pending"
        finally:
            await Event(f"{tag}-mine", client=c).set()
        return await mine

    assert asynchronously(mp_cluster, test) == "mine"
