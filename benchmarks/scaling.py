"""How cost grows: per-future and per-level costs of unnest at growing sizes.

Run ``python benchmarks/scaling.py`` (``--quick`` stops at 10,000 futures and
100 levels, ``--scheduler ADDRESS`` uses an existing cluster). Prints two
Markdown tables:

* N = 1,000, 10,000 and 100,000 finished futures nested in dicts, lists and
  tuples, resolved by ``unnest.unwrap``, beside one flat ``client.gather`` of
  the same futures: time per future (medians of interleaved runs) and peak
  memory traced in this process per future (tracemalloc; never timed);
* chains of 10, 100 and 1,000 futures whose results are futures (each task
  hands off the future of the next), resolved by ``unnest.unwrap``, beside a
  hand-written ``.result()`` loop: time per level.

Flat per-future and per-level columns mean the cost grows linearly.
"""

from __future__ import annotations

import argparse
import sys

import distributed
from run import chain, cluster_client, hand_loop, inc, interleaved, machine, peak

import unnest


def nested(futures: list) -> dict:
    """Half the futures in a list of one-key dicts, half in a tuple."""
    n = len(futures)
    return {"a": [{"x": f} for f in futures[: n // 2]], "b": tuple(futures[n // 2 :])}


def futures_rows(client, sizes, repeat):
    lines = [
        "| futures | unnest, per future | gather, per future | ratio "
        "| unnest peak, per future | gather peak, per future | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        futures = client.map(inc, range(n), pure=False)
        distributed.wait(futures)
        structure = nested(futures)
        result = unnest.unwrap(structure)
        assert result["a"][-1] == {"x": n // 2} and result["b"][-1] == n
        del result
        reps = repeat if n <= 10_000 else 3  # a 100,000 gather takes seconds
        ours, ref = interleaved(
            lambda s=structure: unnest.unwrap(s), lambda f=futures: client.gather(f), reps
        )
        mem_ours = peak(lambda s=structure: unnest.unwrap(s))
        mem_ref = peak(lambda f=futures: client.gather(f))
        lines.append(
            f"| {n:,} | {ours / n * 1e6:.0f} µs | {ref / n * 1e6:.0f} µs | {ours / ref:.2f}× "
            f"| {mem_ours / n:,.0f} B | {mem_ref / n:,.0f} B | {mem_ours / mem_ref:.2f}× |"
        )
        print(f"  measured: {n:,} futures", file=sys.stderr, flush=True)
        del futures, structure
    return lines


def chain_rows(client, depths, repeat):
    lines = [
        "| levels | unnest, per level | `.result()` loop, per level | ratio |",
        "|---|---|---|---|",
    ]
    for depth in depths:
        top = client.submit(chain, depth, pure=False)
        assert unnest.unwrap(top) == "end" == hand_loop(top, client)
        ours, ref = interleaved(
            lambda t=top: unnest.unwrap(t), lambda t=top: hand_loop(t, client), repeat
        )
        lines.append(
            f"| {depth:,} | {ours / depth * 1e3:.2f} ms | {ref / depth * 1e3:.2f} ms "
            f"| {ours / ref:.2f}× |"
        )
        print(f"  measured: a chain of {depth:,}", file=sys.stderr, flush=True)
        del top
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="use this cluster")
    args = parser.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    depths = [10, 100] if args.quick else [10, 100, 1_000]
    repeat = 3 if args.quick else 5
    with cluster_client(args.scheduler) as client:
        print(f"Machine: {machine(client)}\n")
        print("\n".join(futures_rows(client, sizes, repeat)))
        print()
        print("\n".join(chain_rows(client, depths, repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
