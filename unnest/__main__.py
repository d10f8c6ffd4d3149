"""``python -m unnest``: a one-command demo of futures within futures.

It starts a small in-process cluster (or uses ``--scheduler ADDRESS``) and
prints, with plain output: the toy example going wrong with plain
``dask.delayed``, the same with ``@resolves_nested`` giving 55, a structure of
futures within futures resolved by ``unwrap``, one measured comparison with
the sleep-polling resolver people write by hand, a larger tree resolved with
a progress bar (``progress=True``), and branches of different lengths
consumed with ``as_resolved`` as each one is done.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import dask
from dask import delayed

import unnest
from unnest._distributed import count_gathers


@delayed  # type: ignore[untyped-decorator]  # dask.delayed is untyped
def return_futures(n: int) -> list[Any]:
    return [delayed(x + 1) for x in range(n)]


@delayed  # type: ignore[untyped-decorator]
def plain_sumit(upstream: Any) -> Any:
    return sum(upstream)


@unnest.resolves_nested
def sumit(upstream: list[int]) -> int:
    return sum(upstream)


def inc(x: int) -> int:
    return x + 1


def tree(depth: int, width: int, seconds: float = 0.0) -> Any:
    """A task that returns futures of tasks that return futures ... of ints."""
    import distributed

    time.sleep(seconds)
    if depth == 0:
        return depth + width
    client = distributed.get_client()
    children = [client.submit(tree, depth - 1, width, seconds, pure=False) for _ in range(width)]
    return unnest.hand_off({"depth": depth, "children": children})


def chain(depth: int, seconds: float) -> Any:
    """A task that returns the future of the next one, ``depth`` times."""
    import distributed

    time.sleep(seconds)
    if depth == 0:
        return "done"
    client = distributed.get_client()
    return unnest.hand_off(client.submit(chain, depth - 1, seconds, pure=False))


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
    resolve: Callable[[Any, list[int]], Any]
    for name, resolve in (
        ("sleep-polling resolver", lambda t, c: polling_resolver(t, c)),
        ("unnest.unwrap", lambda t, c: unnest.unwrap(t)),
    ):
        top = client.submit(tree, 3, 5, pure=False)
        unnest.unwrap(top)  # let every task finish first
        with count_gathers() as gathers:
            start = time.perf_counter()
            try:
                result = resolve(top, [0])
            except Exception as e:  # on a multi-process cluster: unbound futures
                say(f"   {name:<24} fails: {type(e).__name__}: {str(e).splitlines()[0][:60]}")
                continue
            finally:
                elapsed = time.perf_counter() - start
        say(
            f"   {name:<24} {elapsed * 1000:8.1f} ms, {gathers[0]:3d} round trips for data,"
            f" {_leaves(result)} leaves"
        )
    say("", "The polling resolver fetches each future on its own, one after the other, and")
    say("sleeps 0.25 s at every level whose result is not there yet; unnest waits on")
    say("completion events and fetches the futures it has found together.", "")

    say(
        "5. Progress: a tree of 156 tasks of 0.03 s, resolved with unwrap(top, progress=True);",
        "   the bar (on stderr) counts placeholders resolved out of those discovered so far,",
        "   and its total grows as tasks reveal their children",
    )
    top = client.submit(tree, 3, 5, 0.03, pure=False)
    progress: Any = True
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        say("   (tqdm is not installed -- pip install 'unnest[progress]' -- so: a line per report)")
        progress = _print_progress(out)
    result = unnest.unwrap(top, progress=progress)
    say(f"   unwrap(top, progress=...)  ->  {_leaves(result)} leaves", "")

    say(
        "6. Streaming: three branches of 1, 3 and 2 chained 0.2 s tasks, consumed with",
        "   unnest.as_resolved as each is done (unwrap would return everything at the end)",
    )
    branches = {
        "one step": client.submit(chain, 0, 0.2, pure=False),
        "three steps": [client.submit(chain, 2, 0.2, pure=False)],
        "two steps": (client.submit(chain, 1, 0.2, pure=False),),
    }
    start = time.perf_counter()
    for path, value in unnest.as_resolved(branches):
        say(f"   {time.perf_counter() - start:5.2f} s  path {path!r:<20} ->  {value!r}")


def _print_progress(out: Any) -> Any:
    def report(resolved: int, discovered: int) -> None:
        print(f"   resolved {resolved} of {discovered} discovered so far", file=out, flush=True)

    return report


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
            "nested structure of futures resolved by unwrap, a timed comparison "
            "with a sleep-polling resolver, a progress bar on a larger tree, and "
            "branches streamed with as_resolved as each is done. Starts a small "
            "in-process cluster unless --scheduler is given."
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
