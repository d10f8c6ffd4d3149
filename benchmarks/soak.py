"""Memory over a long run: does the client and scheduler process level off?

Run ``python benchmarks/soak.py`` (``--rounds N``, default 5,000; ``--quick``
for 1,000). Each variant runs in a fresh process of its own, on a
``LocalCluster`` of 2 worker processes x 2 threads whose scheduler shares the
process with the client (so the hand-off plugin's memory is counted), and
prints that process's resident memory every tenth of the rounds:

* ``unnest``: per round, ``unnest.unwrap`` of 5 futures and a producer that
  hands off 3 children, then an ``as_resolved`` broken after its first pair;
* ``plain``: the same work in plain distributed: ``client.gather``, a
  producer that gathers its children through ``worker_client``, and an
  ``as_completed`` broken after its first future.

Then a Markdown table: the memory after each tenth, and the growth per 1,000
rounds over the first and the second half of the run; and what one entry of
the hand-off plugin's memory costs. Memory that levels off
grows less in the second half than in the first. Memory is measured, never
time: a loaded machine changes nothing here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys

import distributed
from distributed import Client, as_completed, get_client, worker_client
from run import cluster_client

import unnest


def inc(x):
    return x + 1


def handing_off(n):
    client = get_client()
    return unnest.hand_off([client.submit(inc, i, pure=False) for i in range(n)])


def gathering(n):
    with worker_client() as client:
        return client.gather([client.submit(inc, i, pure=False) for i in range(n)])


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def unnest_round(client: Client) -> None:
    futures = client.map(inc, range(5), pure=False)
    producer = client.submit(handing_off, 3, pure=False)
    assert unnest.unwrap({"xs": futures, "p": producer}) == {"xs": [1, 2, 3, 4, 5], "p": [1, 2, 3]}
    for _ in unnest.as_resolved(client.map(inc, range(3), pure=False)):
        break


def plain_round(client: Client) -> None:
    futures = client.map(inc, range(5), pure=False)
    producer = client.submit(gathering, 3, pure=False)
    assert client.gather({"xs": futures, "p": producer}) == {"xs": [1, 2, 3, 4, 5], "p": [1, 2, 3]}
    for _ in as_completed(client.map(inc, range(3), pure=False)):
        break


def plugin_memory(dask_scheduler) -> dict[str, int]:
    from unnest._plugin import PLUGIN_NAME

    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return {}
    return {
        "explained": len(plugin.explained),
        "forgotten": len(plugin.forgotten),
        "finished": len(plugin.finished),
        "unheld": len(plugin.unheld),
    }


def soak(variant: str, rounds: int) -> dict:
    """Run ``rounds`` rounds of ``variant``; memory after each tenth of them."""
    step = unnest_round if variant == "unnest" else plain_round
    with cluster_client(None) as client:  # benchmarks/run.py's cluster
        for _ in range(50):  # warm-up: imports, connections, the plugin
            step(client)
        gc.collect()
        samples = [(0, rss_mb())]
        for i in range(1, rounds + 1):
            step(client)
            if i % (rounds // 10) == 0:
                gc.collect()
                samples.append((i, rss_mb()))
        return {"samples": samples, "plugin": client.run_on_scheduler(plugin_memory)}


def entry_bytes() -> float:
    """Bytes one entry of the hand-off plugin's memory costs, its key aside.

    Traced (tracemalloc) over 10,000 entries of 40-character keys, the
    length of dask's ``inc-<uuid>`` keys.
    """
    import tracemalloc
    import uuid

    from unnest._plugin import _Memory

    keys = [f"inc-{uuid.uuid4()}" for _ in range(10_000)]
    memory = _Memory(len(keys), 600)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            memory.put(key)
        return (tracemalloc.get_traced_memory()[0] - before) / len(keys)
    finally:
        tracemalloc.stop()


def growth(samples: list[tuple[int, float]], lo: int, hi: int) -> float:
    """MB per 1,000 rounds between samples ``lo`` and ``hi``."""
    (r0, m0), (r1, m1) = samples[lo], samples[hi]
    return (m1 - m0) / (r1 - r0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="1,000 rounds")
    parser.add_argument("--variant", choices=["unnest", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = 1000 if args.quick else args.rounds
    if args.variant:  # one variant, in this fresh process
        print(json.dumps(soak(args.variant, rounds)))
        return
    results = {}
    for variant in ("unnest", "plain"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--rounds", str(rounds)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    print(f"unnest {unnest.__version__}, distributed {distributed.__version__}, {rounds} rounds\n")
    print("| rounds | unnest (MB) | plain distributed (MB) |")
    print("|---|---|---|")
    for (r, ours), (_, plain) in zip(results["unnest"]["samples"], results["plain"]["samples"]):
        print(f"| {r} | {ours:.1f} | {plain:.1f} |")
    print("\n| MB per 1,000 rounds | first half | second half |")
    print("|---|---|---|")
    for variant in ("unnest", "plain"):
        samples = results[variant]["samples"]
        first, second = growth(samples, 0, 5), growth(samples, 5, 10)
        print(f"| {variant} | {first:.2f} | {second:.2f} |")
    print(f"\nhand-off plugin entries at the end: {results['unnest']['plugin']}")
    print(f"one entry: {entry_bytes():.0f} bytes, and its key once the scheduler lets go of it")


if __name__ == "__main__":
    main()
