"""progress=: a callable of the user's, or a tqdm bar, on every kind of call."""

import asyncio
import io
import itertools
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from distributed import Event, get_client, secede

import unnest
import unnest._progress

pytestmark = pytest.mark.timeout(60)


def hold(name, value):
    secede()
    Event(name).wait()
    return value


def grow(name, n):
    """Wait for ``name``, then hand off ``n`` children: the total grows."""
    hold(name, None)
    client = get_client()
    return unnest.hand_off([client.submit(pow, 2, i, pure=False) for i in range(n)])


class Seen:
    """A progress callable that records ``(resolved, discovered, thread)``."""

    def __init__(self, then=None):
        self.calls = []
        self.then = then

    def __call__(self, resolved, discovered):
        self.calls.append((resolved, discovered, threading.current_thread()))
        if self.then is not None:
            self.then(resolved, discovered)

    @property
    def counts(self):
        return [(r, d) for r, d, _ in self.calls]


def released_on_first_report(client, name):
    """A callable that lets the producer ``name`` go once it has reported (0, 1)."""
    state = {"set": False}

    def then(resolved, discovered):
        if not state["set"]:
            assert (resolved, discovered) == (0, 1)
            state["set"] = True
            Event(name, client=client).set()

    return Seen(then)


def check_growing(seen, n):
    counts = seen.counts
    assert counts[0] == (0, 1)
    assert counts[-1] == (n, n)  # once at the end
    totals = [d for _, d in counts]
    assert totals == sorted(totals) and totals[-1] > totals[0]
    assert all(r <= d for r, d in counts)


@pytest.mark.parametrize("api", ["unwrap", "as_resolved"])
def test_callable_sees_a_growing_total_and_ends_at_n_n(mp_client, api):
    name = uuid.uuid4().hex
    seen = released_on_first_report(mp_client, name)
    producer = mp_client.submit(grow, name, 3, pure=False)
    if api == "unwrap":
        assert unnest.unwrap({"p": producer}, progress=seen, timeout=30) == {"p": [1, 2, 4]}
    else:
        pairs = list(unnest.as_resolved({"p": producer}, progress=seen, timeout=30))
        assert pairs == [(("p",), [1, 2, 4])]
    check_growing(seen, 4)
    # In the caller's own thread, never an event loop's.
    assert {thread for _, _, thread in seen.calls} == {threading.current_thread()}


@pytest.mark.parametrize("api", ["unwrap_async", "as_resolved_async"])
def test_async_callable_is_called_from_a_thread_of_its_own(mp_cluster, api):
    name = uuid.uuid4().hex

    async def main():
        async with unnest_client(mp_cluster) as client:
            seen = released_on_first_report(client, name)
            loop_thread = threading.current_thread()
            producer = client.submit(grow, name, 3, pure=False)
            if api == "unwrap_async":
                await unnest.unwrap_async(producer, progress=seen, timeout=30)
            else:
                async for _ in unnest.as_resolved_async(producer, progress=seen, timeout=30):
                    pass
            return seen, loop_thread

    seen, loop_thread = asyncio.run(main())
    check_growing(seen, 4)
    threads = {thread for _, _, thread in seen.calls}
    assert loop_thread not in threads
    assert {thread.name for thread in threads} == {"unnest-progress"}


def unnest_client(cluster):
    from distributed import Client

    return Client(cluster.scheduler_address, asynchronous=True)


class Clock:
    """The reporter's clock, set by the test: its readings, not the machine's."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now


def test_reports_are_at_most_every_tenth_of_a_second_and_once_at_the_end(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(unnest._progress, "time", clock)  # the reporter's only
    stamps = []
    seen = Seen(then=lambda resolved, discovered: stamps.append(clock.now))
    reporter = unnest._progress.reporter(seen)
    graph = reporter.graph = SimpleNamespace(resolved=0, discovered=100)
    for tick in range(1, 101):  # a second of ticks 10 ms apart, each with news
        clock.now = tick / 100
        graph.resolved = tick
        reporter.tick()
    graph.resolved = graph.discovered = 101  # news after the last report ...
    reporter.tick()  # ... too soon for a report
    reporter.close()
    reporter.close()
    gaps = [b - a for a, b in itertools.pairwise(stamps[:-1])]  # the end's may come sooner
    assert len(gaps) >= 8 and all(gap >= unnest._progress.INTERVAL - 1e-9 for gap in gaps), gaps
    assert len(stamps) <= 10 + 1  # a second's worth, and the end
    assert seen.counts[-1] == (101, 101) and seen.counts[-2] != (101, 101)  # once at the end


def test_a_call_reports_each_change_once_and_its_end():
    with ThreadPoolExecutor(2) as pool:
        seen = Seen()
        futures = [pool.submit(time.sleep, 0.04) for _ in range(10)]
        unnest.unwrap(futures, progress=seen)
    assert seen.counts[-1] == (10, 10)
    assert len(seen.calls) == len(set(seen.counts)) or seen.counts[-1] == seen.counts[-2]


def test_nothing_to_resolve_is_reported_once():
    seen = Seen()
    assert unnest.unwrap([1, 2], progress=seen) == [1, 2]
    assert seen.counts == [(0, 0)]


# -- tqdm --------------------------------------------------------------------------


@pytest.fixture
def no_tqdm(monkeypatch):
    """tqdm as if it were not installed: its import fails."""
    for name in list(sys.modules):
        if name == "tqdm" or name.startswith("tqdm."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


def test_progress_bar_without_tqdm_names_the_extra(no_tqdm):
    done = ThreadPoolExecutor(1).submit(int)
    calls = [
        lambda: unnest.unwrap([done], progress=True),
        lambda: asyncio.run(unnest.unwrap_async([done], progress=True)),
        lambda: unnest.as_resolved([done], progress=True),
        lambda: unnest.as_resolved_async([done], progress=True),
    ]
    for call in calls:
        with pytest.raises(ImportError, match=r"unnest\[progress\]"):
            call()


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_progress_must_be_a_bool_or_a_callable(bad):
    with pytest.raises(TypeError, match="`progress` must be True, False or a callable"):
        unnest.unwrap([1], progress=bad)


def test_no_bar_for_a_fast_call(capfd):
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(lambda: [pool.submit(int, 1)]) for _ in range(5)]
        assert unnest.unwrap(futures, progress=True) == [[1]] * 5
        assert list(unnest.as_resolved(futures, progress=True))
    assert capfd.readouterr().err == ""


class Terminal(io.StringIO):
    """A stderr that says when something was first written to it."""

    def __init__(self):
        super().__init__()
        self.written = threading.Event()

    def write(self, text):
        self.written.set()
        return super().write(text)


@pytest.mark.parametrize("end", ["value", "error", "timeout", "ctrl-c"])
def test_the_bar_is_drawn_for_a_slow_call_and_closed_however_it_ends(monkeypatch, end):
    assert threading.current_thread() is threading.main_thread()
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    never = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(never.wait)
        finished = pool.submit(int, 7)
        interrupter = None

        def first_drawn():
            # The bar's first line is out: now end the call the chosen way.
            if terminal.written.wait(10):
                if end == "ctrl-c":
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                elif end == "value":
                    never.set()
                else:  # error: the slow placeholder fails
                    slow_error.set_exception(ZeroDivisionError("late"))

        from concurrent.futures import Future

        slow_error = Future()
        obj = {"done": finished, "slow": slow_error if end == "error" else slow}
        interrupter = threading.Thread(target=first_drawn, daemon=True)
        interrupter.start()
        expected = {
            "value": None,
            "error": ZeroDivisionError,
            "timeout": TimeoutError,
            "ctrl-c": KeyboardInterrupt,
        }[end]
        try:
            if expected is None:
                assert unnest.unwrap(obj, progress=True, timeout=30) == {"done": 7, "slow": True}
            else:
                with pytest.raises(expected):
                    unnest.unwrap(obj, progress=True, timeout=1 if end == "timeout" else 30)
        finally:
            never.set()
            interrupter.join(10)
    out = terminal.getvalue()
    assert out.startswith("\r") or "unnest" in out
    last = out.rstrip("\n").split("\r")[-1]
    assert last.startswith("unnest:") and out.endswith("\n")  # closed: the line is done
    # A failed placeholder counts as resolved: it is done waiting.
    assert ("2/2" in last) == (end in ("value", "error"))
