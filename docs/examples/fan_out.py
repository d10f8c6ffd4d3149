"""The dynamic fan-out of quacc#1321 on Dask, Ray, Prefect and Parsl, resolved by unnest.

A job makes a value, a second job makes a list from it whose length only the
run knows, and a "subflow" starts one job per item and returns what the
engine gives for them: futures. Each engine hands those back unresolved;
``unnest.unwrap`` gives the values. Each function sets up its engine on this
machine and returns ``[6, 6, 6]``. Run by the tests
(``tests/test_engines_docs.py``) and shown in ``docs/engines.rst``.
"""

EXPECTED = {"dask": [6, 6, 6], "ray": [6, 6, 6], "prefect": [6, 6, 6], "parsl": [6, 6, 6]}
# mixed(), below: every engine in one structure, in one call.


def dask_fan_out():
    import dask

    import unnest

    @dask.delayed
    def add(a, b):
        return a + b

    @dask.delayed
    def make_more(val):
        return [val] * 3

    @unnest.resolves_nested
    def add_distributed(vals, c, job):
        # vals arrives as [3, 3, 3]; job as the delayed function: one task per item.
        return [job(val, c) for val in vals]

    result = add_distributed(make_more(add(1, 2)), 3, add)
    return unnest.unwrap(result)  # the three tasks run together: [6, 6, 6]


def ray_fan_out():
    import ray

    import unnest

    ray.init(num_cpus=2, ignore_reinit_error=True)

    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote
    def make_more(val):
        return [val] * 3

    @ray.remote
    def add_distributed(vals, c):
        return [add.remote(val, c) for val in vals]

    result = add_distributed.remote(make_more.remote(add.remote(1, 2)), 3)
    # ray.get(result) is a list of three ObjectRefs
    return unnest.unwrap(result)  # [6, 6, 6]


def prefect_fan_out():
    from prefect import flow, task

    import unnest

    @task
    def add(a, b):
        return a + b

    @task
    def make_more(val):
        return [val] * 3

    @task
    def add_distributed(vals, c):
        return [add.submit(val, c) for val in vals]

    @flow
    def workflow():
        result = add_distributed.submit(make_more.submit(add.submit(1, 2)), 3)
        # result.result() is a list of three PrefectFutures
        return unnest.unwrap(result)  # [6, 6, 6]

    return workflow()


def parsl_fan_out():
    import parsl
    from parsl.config import Config
    from parsl.executors import ThreadPoolExecutor

    import unnest

    @parsl.python_app
    def add(a, b):
        return a + b

    @parsl.python_app
    def make_more(val):
        return [val] * 3

    @parsl.python_app
    def add_distributed(vals, c):
        return [add(val, c) for val in vals]

    dfk = parsl.load(Config(executors=[ThreadPoolExecutor(max_threads=4)]))
    try:
        result = add_distributed(make_more(add(1, 2)), 3)
        # result.result() is a list of three AppFutures
        return unnest.unwrap(result)  # [6, 6, 6]
    finally:
        dfk.cleanup()
        parsl.clear()


def mixed():
    import dask
    import parsl
    import ray
    from distributed import Client, LocalCluster
    from parsl.config import Config
    from parsl.executors import ThreadPoolExecutor
    from prefect import flow, task

    import unnest

    ray.init(num_cpus=2, ignore_reinit_error=True)

    @ray.remote
    def ray_delayed(x):
        return {"later": dask.delayed(sum)([x, 1])}  # a Ray ref whose value holds a Delayed

    @task
    def prefect_refs(n):
        return [ray_delayed.remote(i) for i in range(n)]  # a Prefect future holding Ray refs

    @parsl.python_app
    def parsl_double(x):
        return 2 * x

    @flow
    def workflow(client):
        return unnest.unwrap(
            {
                "ray": ray_delayed.remote(1),
                "prefect": prefect_refs.submit(2),
                "parsl": parsl_double(parsl_double(1)),
                "dask": [client.submit(sum, [1, 2]), dask.delayed(sum)([3, 4])],
            }
        )

    dfk = parsl.load(Config(executors=[ThreadPoolExecutor(max_threads=2)]))
    try:
        with LocalCluster(n_workers=1, processes=False) as cluster, Client(cluster) as client:
            return workflow(client)
    finally:
        dfk.cleanup()
        parsl.clear()


MIXED = {
    "ray": {"later": 2},
    "prefect": [{"later": 1}, {"later": 2}],
    "parsl": 4,
    "dask": [3, 7],
}


def main():
    return {
        "dask": dask_fan_out(),
        "ray": ray_fan_out(),
        "prefect": prefect_fan_out(),
        "parsl": parsl_fan_out(),
    }


if __name__ == "__main__":
    print(main())
