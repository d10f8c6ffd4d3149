"""100,000 futures in one structure: resolved, with the peak memory it took.

Run ``python benchmarks/load.py`` (``--count N``, ``--scheduler ADDRESS``).
Prints the time to resolve and the peak memory traced (tracemalloc) in this
process during ``unwrap``, next to ``client.gather`` of the same futures as a
flat list.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import distributed
from run import cluster_client, peak  # benchmarks/run.py, beside this script

import unnest


def inc(x):  # defined here, in __main__: it travels to the workers by value
    return x + 1


def timed(fn):
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--scheduler", metavar="ADDRESS")
    args = parser.parse_args(argv)
    with cluster_client(args.scheduler) as client:
        n = args.count
        futures = client.map(inc, range(n), pure=False)
        distributed.wait(futures)
        structure = {"a": [{"x": f} for f in futures[: n // 2]], "b": tuple(futures[n // 2 :])}
        result, seconds = timed(lambda: unnest.unwrap(structure))
        assert result["a"][-1] == {"x": n // 2} and result["b"][-1] == n
        del result
        _, ref_seconds = timed(lambda: client.gather(futures))
        ours, ref = peak(lambda: unnest.unwrap(structure)), peak(lambda: client.gather(futures))
        print(f"{n:,} finished futures nested in dicts/lists/tuples")
        print(f"  unnest.unwrap:        {seconds:6.2f} s, peak {ours / 1e6:6.1f} MB traced")
        print(f"  client.gather (flat): {ref_seconds:6.2f} s, peak {ref / 1e6:6.1f} MB traced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
