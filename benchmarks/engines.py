"""unnest on the futures of other engines: Ray refs and Prefect futures (issue 20).

Run ``python benchmarks/engines.py`` in an environment with ray and prefect
(``nox -s tests-engines`` makes one: ``.nox/tests-engines/bin/python
benchmarks/engines.py``; ``--quick`` for a short run, ``--only ray`` or
``--only prefect``). A scenario whose engine is not installed is skipped.
As ``run.py``: unnest and a reference in the same process, interleaved,
medians after a warm-up, their ratio, as a Markdown table.

* 5,000 finished Ray refs nested in dicts, lists and tuples, against one
  ``ray.get`` of the same refs as a flat list (target ≤ 1.5×), and the flat
  list itself (report);
* 1,000 finished Prefect futures (the thread pool's) nested, against
  ``[f.result() for f in futures]`` (target ≤ 1.0×); and the same with
  prefect-dask's ``DaskTaskRunner`` on a multi-process ``LocalCluster``
  (report).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys

from run import Row, interleaved, nested_futures, table

import unnest

# Prefect's local server on a loaded machine; nothing sent, little logged.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def flat(structure):
    """The values of ``nested_futures(values)``, in order."""
    return [d["f"] for d in structure["lists"]] + [x[0] for x in structure["tuple"]]


def ray_refs(quick, repeat):
    try:
        import ray
    except ImportError:
        print("  skipped: ray is not installed", file=sys.stderr)
        return []

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote
        def inc(x):
            return x + 1

        n = 500 if quick else 5_000
        refs = [inc.remote(i) for i in range(n)]
        ray.get(refs)
        structure = nested_futures(refs)
        assert flat(unnest.unwrap(structure)) == list(range(1, n + 1))
        ours, ref = interleaved(lambda: unnest.unwrap(structure), lambda: ray.get(refs), repeat)
        name = f"{n:,} finished Ray refs nested in dicts/lists/tuples — vs one flat `ray.get`"
        rows = [Row(name, ours, ref, "≤1.5×")]
        ours, ref = interleaved(lambda: unnest.unwrap(refs), lambda: ray.get(refs), repeat)
        name = f"the same {n:,} refs as a flat list — vs one flat `ray.get`"
        rows.append(Row(name, ours, ref, "report"))
        return rows
    finally:
        ray.shutdown()


def prefect_futures(quick, repeat):
    try:
        import prefect
        from prefect.task_runners import ThreadPoolTaskRunner
        from prefect.testing.utilities import prefect_test_harness
    except ImportError:
        print("  skipped: prefect is not installed", file=sys.stderr)
        return []
    n = 100 if quick else 1_000
    rows = []

    @prefect.task
    def inc(x):
        return x + 1

    def measure(futures):
        for future in futures:
            future.wait()
        structure = nested_futures(futures)
        assert flat(unnest.unwrap(structure)) == list(range(1, n + 1))
        ours, ref = interleaved(
            lambda: unnest.unwrap(structure), lambda: [f.result() for f in futures], repeat
        )
        return ours, ref

    @prefect.flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def threads():
        return measure([inc.submit(i) for i in range(n)])

    with prefect_test_harness(server_startup_timeout=None):
        ours, ref = threads()
        name = (
            f"{n:,} finished Prefect futures (thread pool) nested"
            " — vs `[f.result() for f in futures]`"
        )
        rows.append(Row(name, ours, ref, "≤1.0×"))
        try:
            from prefect.settings import PREFECT_API_URL
            from prefect_dask import DaskTaskRunner
        except ImportError:
            print("  skipped: prefect-dask is not installed", file=sys.stderr)
            return rows
        from distributed import LocalCluster

        env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "WARNING"}
        with LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
            env=env,
        ) as cluster:

            @prefect.flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
            def on_dask():
                return measure([inc.submit(i) for i in range(n)])

            ours, ref = on_dask()
        name = (
            f"{n:,} finished Prefect futures (`DaskTaskRunner`, 2 worker processes) nested"
            " — vs `[f.result() for f in futures]`"
        )
        rows.append(Row(name, ours, ref, "report"))
    return rows


SCENARIOS = {"ray": ray_refs, "prefect": prefect_futures}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else 7
    rows = []
    for name, scenario in SCENARIOS.items():
        if not args.only or name in args.only:
            rows += scenario(args.quick, repeat)
    versions = []
    for module in ("ray", "prefect", "prefect_dask", "dask", "distributed"):
        with contextlib.suppress(ImportError):
            versions.append(f"{module} {__import__(module).__version__}")
    title = (
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{', '.join(versions)}, unnest {unnest.__version__}"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
