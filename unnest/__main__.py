"""``python -m unnest``: a one-command demo of futures within futures.

It starts a small in-process cluster (or uses ``--scheduler ADDRESS``) and
prints, with plain output: the toy example going wrong with plain
``dask.delayed``, the same with ``@resolves_nested`` giving 55, a structure of
futures within futures resolved by ``unwrap``, and one measured comparison
with the sleep-polling resolver people write by hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import dask
from dask import delayed

import unnest


@delayed
def return_futures(n):
    return [delayed(x + 1) for x in range(n)]


@delayed
def plain_sumit(upstream):
    return sum(upstream)


@unnest.resolves_nested
def sumit(upstream):
    return sum(upstream)


def inc(x):
    return x + 1


def tree(depth, width, seconds=0.0):
    """A task that returns futures of tasks that return futures ... of ints."""
    import distributed

    time.sleep(seconds)
    if depth == 0:
        return depth + width
    client = distributed.get_client()
    children = [client.submit(tree, depth - 1, width, seconds, pure=False) for _ in range(width)]
    return unnest.hand_off({"depth": depth, "children": children})


def polling_resolver(obj: Any, counter: list[int]) -> Any:
    """The usual workaround: poll each future every 0.25 s, one at a time."""
    from distributed import Future

    if isinstance(obj, Future):
        while not obj.done():
            time.sleep(0.25)
        counter[0] += 1
        return polling_resolver(obj.result(), counter)
    if isinstance(obj, list):
        return [polling_resolver(x, counter) for x in obj]
    if isinstance(obj, dict):
        return {k: polling_resolver(v, counter) for k, v in obj.items()}
    return obj


def _count_gathers() -> list[int]:
    """Count fetches of results, by every client in this process.

    In an in-process cluster the futures a task returns belong to the
    worker's client, so the count is taken on the class.
    """
    from distributed import Client

    counter = [0]
    original = Client._gather

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await original(self, *args, **kwargs)

    Client._gather = counting  # type: ignore[method-assign]
    counter.append(original)  # type: ignore[arg-type]
    return counter


def _restore(counter: list[Any]) -> None:
    from distributed import Client

    Client._gather = counter[1]  # type: ignore[method-assign]


def demo(client: Any, out: Any = sys.stdout) -> None:
    def say(*lines: str) -> None:
        print(*lines, sep="\n", file=out, flush=True)

    say(
        "1. The toy example with plain dask.delayed",
        "   @delayed def return_futures(n): return [delayed(x + 1) for x in range(n)]",
        "   @delayed def sumit(upstream): return sum(upstream)",
    )
    got = plain_sumit(return_futures(10)).compute()
    say(f"   sumit(return_futures(10)).compute()  ->  {got!r}   (not 55)", "")

    say("2. The same sumit decorated with @unnest.resolves_nested")
    say(f"   sumit(return_futures(10)).compute()  ->  {sumit(return_futures(10)).compute()!r}", "")

    say("3. Futures within futures: a task that submits tasks that submit tasks")
    top = client.submit(tree, 2, 2, pure=False)
    say(f"   client.gather(top)  ->  {client.gather(top)!r}")
    say(f"   unnest.unwrap(top)  ->  {unnest.unwrap(top)!r}", "")

    say(
        "4. Against a sleep-polling recursive resolver (0.25 s sleeps): a tree of 156 tasks,",
        "   4 levels, 5 children each, every task returning its children's futures;",
        "   all have finished, so only resolving is timed",
    )
    for name, resolve in (
        ("sleep-polling resolver", lambda t, c: polling_resolver(t, c)),
        ("unnest.unwrap", lambda t, c: unnest.unwrap(t)),
    ):
        top = client.submit(tree, 3, 5, pure=False)
        unnest.unwrap(top)  # let every task finish first
        gathers = _count_gathers()
        start = time.perf_counter()
        try:
            result = resolve(top, [0])
        except Exception as e:  # on a multi-process cluster: unbound futures
            say(f"   {name:<24} fails: {type(e).__name__}: {str(e).splitlines()[0][:60]}")
            continue
        finally:
            elapsed = time.perf_counter() - start
            _restore(gathers)
        say(
            f"   {name:<24} {elapsed * 1000:8.1f} ms, {gathers[0]:3d} round trips for data,"
            f" {_leaves(result)} leaves"
        )
    say("", "The polling resolver fetches each future on its own, one after the other, and")
    say("sleeps 0.25 s at every level whose result is not there yet; unnest waits on")
    say("completion events and fetches the futures it has found together.")


def _leaves(obj: Any) -> int:
    if isinstance(obj, dict):
        return sum(_leaves(v) for v in obj["children"])
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unnest",
        description=(
            "Show futures within futures going wrong with plain Dask, and unnest "
            "resolving them: the toy example with and without @resolves_nested, a "
            "nested structure of futures resolved by unwrap, and a timed comparison "
            "with a sleep-polling resolver. Starts a small in-process cluster unless "
            "--scheduler is given."
        ),
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on this existing cluster instead"
    )
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    if args.scheduler:
        with Client(args.scheduler) as client, dask.config.set(scheduler=client):
            demo(client)
    else:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
            dask.config.set(scheduler=client),
        ):
            demo(client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
