"""What a type checker sees of unnest's public API (issue 18).

Checked, never run: tests/test_types.py runs ``mypy --strict`` and pyright
(basedpyright) on this file, as trio keeps its type tests. Each
``assert_type`` is a check, and so is each ``# type: ignore[...]``: both
checkers report an ignore that ignores nothing, so the line under it must
stay an error. The functions only take arguments of the types under test;
importing this module (pytest's doctest collection does) runs nothing.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from dask.delayed import Delayed
from distributed import Client, Future
from typing_extensions import assert_type

import unnest


def inc(x: int) -> int:
    return x + 1


def check_unwrap(client: Client, future: Future[int], cf: concurrent.futures.Future[str]) -> None:
    # A future's value is its result type: `unwrap(f) + 1` type-checks.
    assert_type(unnest.unwrap(future), int)
    assert_type(unnest.unwrap(future) + 1, int)
    assert_type(unnest.unwrap(client.submit(inc, 1)), int)
    assert_type(unnest.unwrap(cf), str)
    assert_type(unnest.unwrap(future, client=client, timeout=2.5, progress=True), int)
    assert_type(unnest.unwrap(future, progress=lambda resolved, discovered: None), int)
    assert_type(unnest.unwrap_or_wait(future), int)
    # With return_exceptions the exception may stand in for the value.
    assert_type(unnest.unwrap(future, return_exceptions=False), int)
    assert_type(unnest.unwrap(future, return_exceptions=True), int | BaseException)
    assert_type(unnest.unwrap(cf, return_exceptions=True), str | BaseException)
    # So with errors="return"; "raise" and "group" give the value or raise.
    assert_type(unnest.unwrap(future, errors="return"), int | BaseException)
    assert_type(unnest.unwrap(future, errors="group"), int)
    assert_type(unnest.unwrap(future, errors="raise"), int)
    assert_type(unnest.unwrap(unnest.allow_failure([future])), Any)
    unnest.unwrap(future, errors="ignore")  # type: ignore[call-overload]
    # A quote gives back what it wraps, placeholders and all.
    assert_type(unnest.unwrap(unnest.quote([future])), list[Future[int]])
    # Containers and collections: values the checker cannot follow.
    assert_type(unnest.unwrap({"a": future}), Any)
    assert_type(unnest.unwrap([future, cf]), Any)
    assert_type(unnest.unwrap(Delayed("k", {})), Any)
    # Options are keyword-only and typed.
    unnest.unwrap(future, client)  # type: ignore[call-overload]
    unnest.unwrap(future, client="tcp://127.0.0.1:8786")  # type: ignore[call-overload]
    unnest.unwrap(future, timeout="1s")  # type: ignore[call-overload]


async def check_unwrap_async(future: Future[int], cf: concurrent.futures.Future[str]) -> None:
    assert_type(await unnest.unwrap_async(future), int)
    assert_type(await unnest.unwrap_async(cf), str)
    assert_type(await unnest.unwrap_async(future, return_exceptions=True), int | BaseException)
    assert_type(await unnest.unwrap_async(future, errors="return"), int | BaseException)
    assert_type(await unnest.unwrap_async(future, errors="group"), int)
    assert_type(await unnest.unwrap_async(unnest.quote(future)), Future[int])
    assert_type(await unnest.unwrap_async({"a": [future]}), Any)
    await unnest.unwrap_async(future, client="tcp://127.0.0.1:8786")  # type: ignore[call-overload]


def check_as_resolved(client: Client, future: Future[int]) -> None:
    for path, value in unnest.as_resolved({"a": future}, client=client, timeout=1):
        assert_type(path, tuple[Any, ...])
        assert_type(value, Any)
    with unnest.as_resolved([future]) as stream:
        assert_type(next(stream), tuple[tuple[Any, ...], Any])
    unnest.as_resolved([future], client="tcp://127.0.0.1:8786")  # type: ignore[arg-type]
    unnest.as_resolved([future], errors="group", ordered=True)
    unnest.as_resolved([future], errors="all")  # type: ignore[arg-type]
    unnest.as_resolved_async([future], ordered=1.5)  # type: ignore[arg-type]


async def check_as_resolved_async(future: Future[int]) -> None:
    async for path, value in unnest.as_resolved_async({"a": future}):
        assert_type(path, tuple[Any, ...])
        assert_type(value, Any)
    async with unnest.as_resolved_async([future]) as stream:
        assert_type(await stream.__anext__(), tuple[tuple[Any, ...], Any])


def check_resolving() -> None:
    # The wrapped signature is kept: its parameters and its return type.
    @unnest.resolving
    def total(xs: list[int], *, start: int = 0) -> int:
        return sum(xs, start)

    assert_type(total([1, 2], start=1), int)
    assert isinstance(total, unnest.resolving)
    total([1], 2)  # type: ignore[call-arg]
    total([1], begin=2)  # type: ignore[call-arg]
    assert_type(unnest.resolving(inc)(1), int)

    @unnest.resolving(timeout=5)
    def half(x: float) -> float:
        return x / 2

    assert_type(half(1.0), float)
    half()  # type: ignore[call-arg]

    # resolve_output=True: the value is resolved, so the checker cannot know it.
    @unnest.resolving(resolve_output=True)
    def producer(n: int) -> list[Future[int]]:
        return []

    assert_type(producer(3), Any)
    assert_type(unnest.resolving(producer, resolve_output=True)(3), Any)

    # As a method: bound like a function, the return type kept.
    class Model:
        @unnest.resolving
        def predict(self, x: int) -> str:
            return str(x)

    assert_type(Model().predict(1), str)


def check_resolves_nested() -> None:
    # Calling the decorated function makes a Delayed, with the wrapped parameters.
    @unnest.resolves_nested
    def sumit(upstream: Any) -> int:
        return sum(upstream)

    assert_type(sumit([1, 2]), Delayed)
    sumit([1], [2])  # type: ignore[call-arg]

    @unnest.resolves_nested(pure=True, timeout=10)
    def double(x: int) -> int:
        return 2 * x

    assert_type(double(1), Delayed)
    assert isinstance(double, Delayed)
    double(x=1, y=2)  # type: ignore[call-arg]


def check_hand_off(future: Future[int]) -> None:
    # The very object back, so its own type.
    assert_type(unnest.hand_off([future]), list[Future[int]])
    assert_type(unnest.hand_off({"a": future}), dict[str, Future[int]])


async def check_hand_off_async(future: Future[int], n: int) -> None:
    assert_type(await unnest.hand_off_async((future, n)), tuple[Future[int], int])


class Box:
    def __init__(self, value: Any) -> None:
        self.value = value


def check_register_container() -> None:
    def flatten_box(box: Box) -> tuple[list[Any], Callable[[list[Any]], Box]]:
        return [box.value], lambda values: Box(values[0])

    # The flatten function is given back as it came, directly or decorated.
    assert_type(unnest.register_container(Box, flatten_box)(Box(1))[1]([2]), Box)

    @unnest.register_container(Box, label=lambda box, i: ".value")
    def flatten(box: Box) -> tuple[list[Any], Callable[[list[Any]], Box]]:
        return [box.value], lambda values: Box(values[0])

    assert_type(flatten(Box(1))[1]([2]), Box)
    unnest.register_container(Box, 42)  # type: ignore[call-overload]


def check_register_placeholder(cf: concurrent.futures.Future[int]) -> None:
    def box_future(box: Box) -> concurrent.futures.Future[int]:
        return cf

    # as_future is given back as it came, directly or decorated.
    given = unnest.register_placeholder(Box, box_future)
    assert_type(given(Box(1)), concurrent.futures.Future[int])

    @unnest.register_placeholder(Box)
    def as_future(box: Box) -> concurrent.futures.Future[int]:
        return cf

    assert_type(as_future(Box(1)), concurrent.futures.Future[int])
    unnest.register_placeholder(Box, 42)  # type: ignore[call-overload]


def check_quote() -> None:
    assert_type(unnest.quote([1]).obj, list[int])
    assert_type(unnest.opaque([1]).obj, list[int])  # deprecated, still typed
    assert_type(unnest.allow_failure([1]).obj, list[int])
