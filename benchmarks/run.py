"""unnest against the limit and against what users do today.

Run ``python benchmarks/run.py`` (``--quick`` for a short smoke run,
``--scheduler ADDRESS`` to use an existing cluster, ``--only NAME`` for one
scenario, by its function's name). Each scenario times
unnest and a reference in the same process, interleaved (A B A B ...), and
reports the medians after a warm-up and their ratio, as a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import dataclasses
import gc
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import dask
import distributed
from distributed import Client, Future, LocalCluster, get_client

import unnest

# -- tasks (run as a script, they travel to the workers by value) ---------------


def inc(x):
    return x + 1


def slow(value, seconds):
    time.sleep(seconds)
    return value


def chain(depth):
    """A task that returns the future of the next one, ``depth`` times."""
    if depth == 0:
        return "end"
    return unnest.hand_off(get_client().submit(chain, depth - 1, pure=False))


@dask.delayed
def delayed_chain(depth, seconds):
    """Delayed returning Delayed ``depth`` times, each step ``seconds`` long."""
    time.sleep(seconds)
    if depth == 1:
        return "chain"
    return delayed_chain(depth - 1, seconds)


def spread_chain(depth, seconds):
    """``depth + 1`` tasks of ``seconds`` each, each returning the next one's future."""
    time.sleep(seconds)
    if depth == 0:
        return "end"
    return unnest.hand_off(get_client().submit(spread_chain, depth - 1, seconds, pure=False))


@dask.delayed
def delayed_leaf(i):
    return dask.delayed(inc)(i)


def busy(value, seconds):
    """``value`` after ``seconds`` of sleep (a worker thread held, as by real work)."""
    time.sleep(seconds)
    return value


@dask.delayed(pure=False)
def delayed_pair(i, outer=0.0, inner=0.0):
    """Two small ``Delayed``, after ``outer`` seconds; each takes ``inner`` seconds."""
    time.sleep(outer)
    return [dask.delayed(busy, pure=False)(i, inner), dask.delayed(busy, pure=False)(-i, inner)]


# -- references -----------------------------------------------------------------


def identity_walk(obj):
    """The minimal recursive walk that rebuilds nothing it need not."""
    if type(obj) is list:
        new = [identity_walk(x) for x in obj]
        return obj if all(a is b for a, b in zip(new, obj)) else new
    if type(obj) is tuple:
        new = tuple(identity_walk(x) for x in obj)
        return obj if all(a is b for a, b in zip(new, obj)) else new
    if type(obj) is dict:
        new = {k: identity_walk(v) for k, v in obj.items()}
        return obj if all(new[k] is v for k, v in obj.items()) else new
    return obj


def polling_resolver(obj):
    """The usual workaround: sleep-poll each future, one at a time, recursively."""
    if isinstance(obj, Future):
        while not obj.done():
            time.sleep(0.25)
        return polling_resolver(obj.result())
    if isinstance(obj, list):
        return [polling_resolver(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(polling_resolver(x) for x in obj)
    if isinstance(obj, dict):
        return {k: polling_resolver(v) for k, v in obj.items()}
    return obj


def result_each(obj):
    """``.result()`` on each future, recursively."""
    if isinstance(obj, Future):
        return result_each(obj.result())
    if isinstance(obj, list):
        return [result_each(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(result_each(x) for x in obj)
    if isinstance(obj, dict):
        return {k: result_each(v) for k, v in obj.items()}
    return obj


def hand_loop(x, client):
    """``while isinstance(x, Future): x = x.result()``, plus the least a
    multi-process cluster demands: returned futures arrive unbound, so bind
    each to the client and tell the scheduler the client wants it."""
    while isinstance(x, Future):
        if x.status is None:
            x = Future(x.key, client)
            client._send_to_scheduler({"op": "client-desires-keys", "keys": [x.key]})
        x = x.result()
    return x


# -- measuring ------------------------------------------------------------------


def interleaved(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` timed alternately, after one warm-up each."""
    ours, ref = interleaved_all([a, b], repeat)
    return ours, ref


def interleaved_all(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Medians of ``fns`` timed in turn (A B C A B C ...), after one warm-up each."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, own in zip(fns, times):
            gc.collect()
            start = time.perf_counter()
            fn()
            own.append(time.perf_counter() - start)
    return [statistics.median(own) for own in times]


def nested_plain(leaves: int) -> dict:
    per = 100
    return {
        f"k{i}": [(j, str(j), [j, j + 1]) for j in range(per // 4)]
        for i in range(max(1, leaves // per))
    }


def nested_futures(futures: list) -> dict:
    return {
        "lists": [{"f": f, "t": (f, 1)} for f in futures[: len(futures) // 2]],
        "tuple": tuple([x] for x in futures[len(futures) // 2 :]),
    }


class Row:
    """One scenario: unnest's figure, the reference's, and the target.

    ``target`` is ``"≤R×"`` (a ratio), ``"≤ +N ms"`` (time added to the
    reference) or ``"report"`` (no target).
    """

    def __init__(self, scenario, ours, ref, target, unit="s"):
        print(f"  measured: {scenario}", file=sys.stderr, flush=True)
        self.scenario, self.ours, self.ref = scenario, ours, ref
        self.target, self.unit = target, unit

    @property
    def ratio(self):
        return self.ours / self.ref if self.ref else float("inf")

    def met(self):
        if self.target.endswith("×"):
            return self.ratio <= float(self.target.strip("≤×"))
        if self.target.endswith("ms"):
            return (self.ours - self.ref) * 1000 <= float(self.target.strip("≤ +ms"))
        return None

    def cells(self):
        fmt = {"s": lambda v: f"{v * 1000:.1f} ms", "B": lambda v: f"{v / 1e6:.2f} MB"}[self.unit]
        met = self.met()
        verdict = "" if met is None else (" ✓" if met else " ✗ missed")
        if self.target.endswith("ms"):
            ratio = f"{(self.ours - self.ref) * 1000:+.0f} ms"
        else:
            ratio = f"{self.ratio:.3f}×" if self.ratio < 0.1 else f"{self.ratio:.2f}×"
        return [self.scenario, fmt(self.ours), fmt(self.ref), ratio, self.target + verdict]


def plain_walk(client, quick, repeat):
    plain = nested_plain(10_000 if quick else 100_000)
    assert unnest.unwrap(plain) is plain and identity_walk(plain) is plain
    ours, ref = interleaved(lambda: unnest.unwrap(plain), lambda: identity_walk(plain), repeat)
    n = sum(4 for v in plain.values() for _ in v)
    return [Row(f"plain {n:,}-leaf dict/list/tuple, nothing to resolve", ours, ref, "≤0.6×")]


def finished_futures(client, quick, repeat):
    count = 1_000 if quick else 10_000
    futures = client.map(inc, range(count), pure=False)
    distributed.wait(futures)
    nested = nested_futures(futures)
    assert unnest.unwrap(nested)["lists"][0]["f"] == 1
    rows = []
    ours, ref = interleaved(lambda: unnest.unwrap(nested), lambda: client.gather(futures), repeat)
    name = f"{count:,} finished futures, nested"
    rows.append(Row(f"{name} — vs one flat `client.gather`", ours, ref, "≤1.1×"))
    # The per-future references cost a round trip per future: measured on
    # the first 2,000 (200 with --quick) and fewer repeats, to keep the run short.
    part = count // 5
    few = nested_futures(futures[:part])
    # The floor of fetching through the scheduler: its gather request for the
    # same keys, sent bare (no Future bookkeeping, no walk, no rebuild).
    keys = [f.key for f in futures]

    def bare():
        return client.sync(client.scheduler.gather, keys=keys)

    ours, ref = interleaved(lambda: unnest.unwrap(nested), bare, repeat)
    rows.append(
        Row(
            f"{count:,} finished futures, nested — vs the bare scheduler gather",
            ours,
            ref,
            "≤1.05×",
        )
    )
    if not quick:
        more = client.map(inc, range(count, 5 * count), pure=False)
        distributed.wait(more)
        every = futures + more
        big = nested_futures(every)
        big_keys = [f.key for f in every]
        ours, ref = interleaved(
            lambda: unnest.unwrap(big),
            lambda: client.sync(client.scheduler.gather, keys=big_keys),
            3,
        )
        rows.append(
            Row(
                f"{len(every):,} finished futures, nested — vs the bare scheduler gather",
                ours,
                ref,
                "≤1.05×",
            )
        )
        del more, every, big
    name = f"{part:,} finished futures, nested"
    for label, reference in (
        ("a sleep-polling resolver", polling_resolver),
        ("`.result()` on each", result_each),
    ):
        ours, ref = interleaved(lambda: unnest.unwrap(few), lambda r=reference: r(few), 3)
        rows.append(Row(f"{name} — vs {label}", ours, ref, "report"))
    return rows


@dataclasses.dataclass
class Record:
    name: str
    value: Any


Pair = collections.namedtuple("Pair", "left right")


def shaped_futures(futures: list) -> dict:
    """The same futures in other shapes: flat, deep, and mixed containers."""
    n = len(futures)
    flat, deep, mixed = futures[: n // 3], futures[n // 3 : n // 2], futures[n // 2 :]
    chains = []
    for i in range(0, len(deep), 50):  # lists nested 50 deep, a future at each level
        node: Any = None
        for f in deep[i : i + 50]:
            node = [f, node]
        chains.append(node)
    return {
        "flat": flat,
        "deep": chains,
        "mixed": [
            Pair(Record("r", f), collections.deque([g, {h}]))
            for f, g, h in zip(mixed[0::3], mixed[1::3], mixed[2::3])
        ],
    }


def other_shapes(client, quick, repeat):
    count = 1_000 if quick else 10_000
    futures = client.map(inc, range(count), pure=False)
    distributed.wait(futures)
    shaped = shaped_futures(futures)
    assert unnest.unwrap(shaped)["flat"][0] == 1
    ours, ref = interleaved(lambda: unnest.unwrap(shaped), lambda: client.gather(futures), repeat)
    name = f"{count:,} finished futures: a flat list, lists 50 deep, namedtuple/dataclass/deque/set"
    return [Row(f"{name} — vs one flat `client.gather`", ours, ref, "≤1.1×")]


def future_chain(client, quick, repeat):
    depth = 5 if quick else 30
    top = client.submit(chain, depth, pure=False)
    assert unnest.unwrap(top) == "end" == hand_loop(top, client)
    ours, ref = interleaved(lambda: unnest.unwrap(top), lambda: hand_loop(top, client), repeat)
    return [Row(f"{depth}-level future chain — vs hand `.result()` loop", ours, ref, "≤1.3×")]


def skewed_delayed(client, quick, repeat):
    step = 0.05 if quick else 0.25
    critical = 4 * step

    def skewed():
        return unnest.unwrap([dask.delayed(slow)("leaf", critical), delayed_chain(4, step)])

    skewed()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        assert skewed() == ["leaf", "chain"]
        times.append(time.perf_counter() - start)
    name = (
        f"skewed Delayed: {critical:.2f} s leaf beside 4 Delayed-returning-Delayed {step} s steps"
    )
    return [Row(f"{name} — vs the critical path", statistics.median(times), critical, "≤1.25×")]


def first_branch(client, quick, repeat):
    step = 0.05 if quick else 0.2
    branches = 4

    def structure():
        # Branch i is i + 1 chained tasks: they finish 1, 2, 3 and 4 steps in.
        return {
            f"b{i}": [client.submit(spread_chain, i, step, pure=False)] for i in range(branches)
        }

    def first_yield():
        start = time.perf_counter()
        first = None
        for _ in unnest.as_resolved(structure()):  # consumed to the end, like unwrap
            if first is None:
                first = time.perf_counter() - start
        return first

    def whole():
        start = time.perf_counter()
        unnest.unwrap(structure())
        return time.perf_counter() - start

    first_yield(), whole()  # warm-up
    ours, ref = [], []
    for _ in range(repeat):
        ours.append(first_yield())
        ref.append(whole())
    name = f"{branches} branches of 1-{branches} chained {step} s tasks"
    name += ": first branch from `as_resolved`"
    ours_s, ref_s = statistics.median(ours), statistics.median(ref)
    return [Row(f"{name} — vs `unwrap` returning", ours_s, ref_s, "≤0.35×")]


def waiting_cpu(client, quick, repeat):
    seconds = 0.5 if quick else 2.0

    def cpu(wait):
        future = client.submit(slow, 1, seconds, pure=False)
        start = time.process_time()
        wait(future)
        return time.process_time() - start

    ours, ref = [], []
    for _ in range(repeat):
        ours.append(cpu(unnest.unwrap))
        ref.append(cpu(lambda f: f.result()))
    name = f"CPU seconds of this process while waiting {seconds} s on one task"
    return [
        Row(f"{name} — vs `f.result()`", statistics.median(ours), statistics.median(ref), "≤1.5×")
    ]


def memory(client, quick, repeat):
    leaves = 100_000 if quick else 1_000_000
    big = nested_plain(leaves)
    inner = next(iter(big.values()))
    inner.append({"deep": [client.submit(inc, 1, pure=False)]})
    distributed.wait(inner[-1]["deep"])
    assert unnest.unwrap(big)["k0"][-1] == {"deep": [2]}
    ours = peak(lambda: unnest.unwrap(big))
    ref = peak(lambda: copy.deepcopy(big))
    name = f"peak memory: unwrap of a {leaves:,}-leaf structure, one future deep inside"
    return [Row(f"{name} — vs `copy.deepcopy`", ours, ref, "≤0.01×", unit="B")]


def two_waves(leaves):
    """By hand: compute the outer Delayed, then the Delayed they returned."""
    (inner,) = dask.compute([delayed_leaf(i) for i in range(leaves)])
    return dask.compute(inner)[0]


def delayed_leaves(client, quick, repeat):
    leaves = 100 if quick else 1_000
    assert unnest.unwrap([delayed_leaf(i) for i in range(3)]) == two_waves(3) == [1, 2, 3]
    ours, flat, waves = interleaved_all(
        [
            lambda: unnest.unwrap([delayed_leaf(i) for i in range(leaves)]),
            lambda: dask.compute([dask.delayed(inc)(i) for i in range(leaves)]),
            lambda: two_waves(leaves),
        ],
        repeat,
    )
    name = f"{leaves:,} Delayed-returning-Delayed leaves"
    return [
        Row(f"{name} — vs `dask.compute` of them built flat", ours, flat, "≤1.5×"),
        Row(f"{name} — vs two `dask.compute` waves by hand", ours, waves, "≤1.1×"),
    ]


def pairs_by_hand(outer_n, outer, inner):
    """By hand: compute the outer ``Delayed``, then the ``Delayed`` they returned."""
    rng = random.Random(outer_n)
    lists = dask.compute([delayed_pair(i, rng.uniform(0, outer), inner) for i in range(outer_n)])[0]
    return dask.compute(lists)[0]


def pairs_unnest(outer_n, outer, inner):
    rng = random.Random(outer_n)
    return unnest.unwrap([delayed_pair(i, rng.uniform(0, outer), inner) for i in range(outer_n)])


def delayed_pairs(client, quick, repeat):
    """Delayed that return two Delayed each: unnest against two waves by hand (issue 22)."""
    assert pairs_unnest(3, 0, 0) == pairs_by_hand(3, 0, 0) == [[0, 0], [1, -1], [2, -2]]
    rows = []
    sizes = [300] if quick else [300, 1_000]
    for n in sizes:
        ours, waves = interleaved(
            lambda n=n: pairs_unnest(n, 0, 0), lambda n=n: pairs_by_hand(n, 0, 0), repeat
        )
        name = f"{n:,} Delayed returning 2 small Delayed each"
        rows.append(Row(f"{name} — vs two `dask.compute` waves by hand", ours, waves, "≤1.0×"))
    if not quick:
        # Uneven: outer tasks of 0-50 ms (seeded), inner of 20 ms. Both run
        # the same 300 tasks on the same threads; eager can only win the time
        # the first wave's stragglers leave threads idle.
        n = 100
        ours, waves = interleaved(
            lambda: pairs_unnest(n, 0.05, 0.02), lambda: pairs_by_hand(n, 0.05, 0.02), 3
        )
        name = f"{n} Delayed of 0-50 ms returning 2 Delayed of 20 ms each"
        rows.append(Row(f"{name} — vs two `dask.compute` waves by hand", ours, waves, "≤0.85×"))
        # The floor of any schedule on these threads: every task's sleep,
        # spread evenly over them, with no overhead at all.
        rng = random.Random(n)
        work = sum(rng.uniform(0, 0.05) for _ in range(n)) + 2 * n * 0.02
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        floor = f"the same tasks' time / {threads} threads (no schedule does better)"
        rows.append(
            Row(f"{floor} — vs two `dask.compute` waves by hand", work / threads, waves, "report")
        )
    return rows


def import_time(client, quick, repeat):
    # With bytecode, as installs have it: where PYTHONDONTWRITEBYTECODE is
    # set, every start would compile unnest's sources (and time that).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run(code):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        return time.perf_counter() - start

    ours, ref = interleaved(
        lambda: run("import distributed, unnest"), lambda: run("import distributed"), repeat
    )
    name = "import time: `import distributed, unnest`"
    return [Row(f"{name} — vs `import distributed`", ours, ref, "≤ +50 ms")]


SCENARIOS = [
    plain_walk,
    finished_futures,
    other_shapes,
    future_chain,
    skewed_delayed,
    first_branch,
    waiting_cpu,
    memory,
    delayed_leaves,
    delayed_pairs,
    import_time,
]


def peak(fn):
    """Peak memory traced during ``fn`` (tracemalloc slows it: never timed)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def cluster_client(address):
    """A client of ``address``, else of a local cluster of 2 processes x 2 threads."""
    if address:
        with Client(address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def machine(client):
    workers = client.scheduler_info()["workers"]
    threads = sum(w["nthreads"] for w in workers.values())
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}, unnest {unnest.__version__}; "
        f"cluster: {len(workers)} worker processes, {threads} threads"
    )


def table(rows, title):
    header = ["scenario", "unnest", "reference", "ratio", "target"]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="use this cluster")
    names = [scenario.__name__ for scenario in SCENARIOS]
    parser.add_argument(
        "--only", metavar="NAME", action="append", choices=names, help="run only these scenarios"
    )
    args = parser.parse_args(argv)
    with cluster_client(args.scheduler) as client:
        repeat = 3 if args.quick else 7
        rows = []
        with dask.config.set(scheduler=client):
            for scenario in SCENARIOS:
                if not args.only or scenario.__name__ in args.only:
                    rows += scenario(client, args.quick, repeat)
        print(table(rows, f"Machine: {machine(client)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
