"""``resolving`` and ``resolves_nested``: functions that receive resolved inputs.

``resolving(func)`` is a small callable class, not a closure, so it pickles
with the standard ``pickle`` module (ProcessPoolExecutor, dask's processes
scheduler). A module-level function decorated in place is pickled by
reference to its module attribute, as toolz's ``curry`` does: the attribute
is then the wrapper (or the ``Delayed`` that ``resolves_nested`` made of it),
not the function.

``resolves_nested(func, **options)`` is ``dask.delayed(resolving(func),
**options)``, with the decorated object's ``__wrapped__`` pointing at the
original function. Called, it passes a *delayed function* among its
arguments (a ``Delayed`` that stands for a callable and was not called, such
as a ``@delayed`` function) on as it is, in a :class:`unnest.quote`, where
``dask.delayed`` would compute it to the bare function (issue 20,
dask/dask#10733): the function can then call it to make tasks.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, cast, overload

import dask
from dask.delayed import Delayed, DelayedLeaf

from unnest.handoff import hand_off
from unnest.resolve import check_arguments, unwrap
from unnest.traverse import quote

__all__ = ["resolves_nested", "resolving"]

# The wrapped function's parameters and return type, kept (issue 18).
P = ParamSpec("P")
R = TypeVar("R")
# The same for the function a decorator made with options (`@resolving(timeout=5)`)
# is applied to: bound by that call, not by the class.
P2 = ParamSpec("P2")
R2 = TypeVar("R2")


class _Signature:
    """``__signature__``: the wrapped function's on an instance, None on the class."""

    def __init__(self, *path: str) -> None:
        self.path = path  # attributes leading from the instance to the function

    def __get__(self, obj: Any, objtype: Any = None) -> inspect.Signature | None:
        if obj is None:
            return None
        for name in self.path:
            obj = getattr(obj, name)
        return inspect.signature(obj)


class resolving(Generic[P, R]):
    """Wrap ``func`` so that its arguments are resolved before it runs.

    Every positional and keyword argument is passed through
    :func:`unnest.unwrap` first, to any depth. Futures in the return value are
    handed off (:func:`unnest.hand_off`), so a consumer can take them over;
    with ``resolve_output=True`` the return value is resolved instead. Use it
    with ``client.submit``, ``client.map``, executors or direct calls.

    Parameters
    ----------
    func : callable
        The function to wrap. When omitted, ``resolving(**options)`` returns
        a decorator.
    timeout : float, optional
        Seconds for resolving the arguments (and the output).
    resolve_output : bool, default False
        Resolve the function's return value before returning it.

    Returns
    -------
    resolving
        A picklable callable that keeps ``func``'s name, docstring,
        ``__wrapped__`` and signature; to a type checker, ``func``'s
        parameters and return type (``Any`` with ``resolve_output=True``).

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from unnest import resolving
    >>> @resolving
    ... def total(xs):
    ...     return sum(xs)
    >>> with ThreadPoolExecutor() as pool:
    ...     total([pool.submit(pow, 2, i) for i in range(4)])
    15
    >>> total.__name__
    'total'
    """

    func: Callable[P, R]
    timeout: float | None
    resolve_output: bool

    # Bare and with options, as dask.delayed. All in __new__, no __init__: mypy
    # types a call of a class by its __init__ when it has one, and an __init__
    # cannot say that `resolving(timeout=5)` is a decorator. With
    # resolve_output=True the return type is Any: the function's value, resolved.
    @overload
    def __new__(
        cls,
        func: Callable[P, R],
        *,
        timeout: float | None = ...,
        resolve_output: Literal[False] = ...,
    ) -> resolving[P, R]: ...
    @overload
    def __new__(
        cls, func: Callable[P, Any], *, timeout: float | None = ..., resolve_output: bool
    ) -> resolving[P, Any]: ...
    @overload
    def __new__(  # type: ignore[misc]  # mypy: __new__ "must return a class instance"
        cls,
        func: None = ...,
        *,
        timeout: float | None = ...,
        resolve_output: Literal[False] = ...,
    ) -> Callable[[Callable[P2, R2]], resolving[P2, R2]]: ...
    @overload
    def __new__(  # type: ignore[misc]
        cls, func: None = ..., *, timeout: float | None = ..., resolve_output: bool
    ) -> Callable[[Callable[P2, Any]], resolving[P2, Any]]: ...
    def __new__(
        cls,
        func: Callable[..., Any] | None = None,
        *,
        timeout: float | None = None,
        resolve_output: bool = False,
    ) -> Any:
        if func is None:
            return functools.partial(cls, timeout=timeout, resolve_output=resolve_output)
        if not callable(func):
            raise TypeError(f"`func` must be callable, got {func!r}")
        check_arguments(None, timeout)
        if isinstance(func, resolving):
            timeout = func.timeout if timeout is None else timeout
            resolve_output = resolve_output or func.resolve_output
            func = func.func
        self = super().__new__(cls)
        self.func = func
        self.timeout = timeout
        self.resolve_output = bool(resolve_output)
        functools.update_wrapper(self, func)
        return self

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if args or kwargs:
            args, kwargs = unwrap((args, kwargs), timeout=self.timeout)
        result = self.func(*args, **kwargs)
        if self.resolve_output:
            return cast(R, unwrap(result, timeout=self.timeout))  # R is Any then
        return hand_off(result)

    # The function's signature, for help() and IDEs; on the class itself,
    # None, so that inspect reads the class's own (a property would be
    # returned as is there, and inspect.signature(resolving) raised).
    __signature__ = _Signature("func")

    def __repr__(self) -> str:
        return f"resolving({self.func!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, resolving)
            and self.func == other.func
            and self.timeout == other.timeout
            and self.resolve_output == other.resolve_output
        )

    def __hash__(self) -> int:
        return hash((resolving, self.func, self.timeout, self.resolve_output))

    def __dask_tokenize__(self) -> Any:
        # A key must not depend on the process: name the function by module
        # and qualified name when that finds it again, else let dask decide.
        if _by_reference(self) is not None:
            func_token: Any = (self.func.__module__, self.func.__qualname__)
        else:
            from dask.base import tokenize

            func_token = tokenize(self.func)
        return ("unnest.resolving", func_token, self.timeout, self.resolve_output)

    def __reduce__(self) -> Any:
        where = _by_reference(self)
        if where is not None:
            return _from_module, where
        return _rebuild, (self.func, self.timeout, self.resolve_output)

    @overload
    def __get__(self, instance: None, owner: Any = None) -> resolving[P, R]: ...
    @overload
    def __get__(self, instance: object, owner: Any = None) -> Callable[..., R]: ...
    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Methods: bind like a function would.
        if instance is None:
            return self
        return functools.partial(self, instance)


def _rebuild(
    func: Callable[..., Any], timeout: float | None, resolve_output: bool
) -> resolving[..., Any]:
    return resolving(func, timeout=timeout, resolve_output=resolve_output)


def _attribute(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _unwrapped(obj: Any) -> resolving[..., Any] | None:
    """The ``resolving`` behind a module attribute, if it is one of ours."""
    if isinstance(obj, resolving):
        return obj
    if isinstance(obj, _ResolvingLeaf):
        return obj.wrapper
    return None


def _by_reference(wrapper: resolving[..., Any]) -> tuple[str, str] | None:
    """``(module, qualname)`` if the module attribute is this very wrapper."""
    module = getattr(wrapper.func, "__module__", None)
    qualname = getattr(wrapper.func, "__qualname__", None)
    # Like cloudpickle, take __main__ by value: another process has another one.
    if not module or module == "__main__" or not qualname or "<locals>" in qualname:
        return None
    try:
        found = _unwrapped(_attribute(module, qualname))
    except Exception:
        return None
    return (module, qualname) if found is wrapper else None


def _from_module(module: str, qualname: str) -> resolving[..., Any]:
    found = _unwrapped(_attribute(module, qualname))
    if found is None:
        raise TypeError(f"{module}.{qualname} is no longer an unnest-decorated function")
    return found


class _ResolvingLeaf(DelayedLeaf, Generic[P]):
    # The Delayed made by ``resolves_nested``: ``__wrapped__`` is the function.
    # (No docstring: a class's own __doc__ would hide the function's.)

    __slots__ = ("wrapper",)

    def __init__(self, wrapper: resolving[P, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(wrapper, *args, **kwargs)  # type: ignore[no-untyped-call]
        self.wrapper = wrapper

    if TYPE_CHECKING:  # DelayedLeaf's own, with the function's parameters

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Delayed: ...

    else:

        def __call__(self, *args, **kwargs):
            # A delayed function argument reaches the function as one (the
            # module docstring): quoted, dask hands it on as it is, and the
            # unwrap of the arguments replaces the quote with it.
            args = [_as_passed(arg) for arg in args]
            kwargs = {name: _as_passed(arg) for name, arg in kwargs.items()}
            return DelayedLeaf.__call__(self, *args, **kwargs)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.wrapper.__doc__

    @property
    def __wrapped__(self) -> Any:
        return self.wrapper.func

    __signature__ = _Signature("wrapper", "func")


def _as_passed(arg: Any) -> Any:
    """``arg``, quoted if it is a delayed function (a ``Delayed`` leaf of a callable)."""
    if not isinstance(arg, DelayedLeaf):
        return arg
    if isinstance(arg, _ResolvingLeaf):
        return quote(arg)
    try:
        # A leaf computes to the object it wraps, in this thread, running
        # nothing: the public way to look at it.
        (obj,) = dask.compute(arg, scheduler="sync")
    except Exception:
        return arg
    return quote(arg) if callable(obj) else arg


@overload
def resolves_nested(
    func: Callable[P, Any],
    *,
    timeout: float | None = ...,
    resolve_output: bool = ...,
    **delayed_options: Any,
) -> _ResolvingLeaf[P]: ...
@overload
def resolves_nested(
    func: None = ...,
    *,
    timeout: float | None = ...,
    resolve_output: bool = ...,
    **delayed_options: Any,
) -> Callable[[Callable[P, Any]], _ResolvingLeaf[P]]: ...
def resolves_nested(
    func: Callable[..., Any] | None = None,
    *,
    timeout: float | None = None,
    resolve_output: bool = False,
    **delayed_options: Any,
) -> Any:
    """``dask.delayed`` whose function receives fully resolved inputs.

    Calling the decorated function returns a ``Delayed``, exactly as with
    ``dask.delayed``, so it composes with ``.compute()``, ``dask.compute``,
    ``client.compute``, ``persist`` and plain ``@delayed`` functions. When the
    task runs, every argument is resolved with :func:`unnest.unwrap` first,
    to any depth: a list of ``Delayed`` or of futures arrives as a list of
    values. Futures in the return value are handed off
    (:func:`unnest.hand_off`).

    One kind of ``Delayed`` argument is not computed: a *delayed function*,
    a ``Delayed`` that stands for a callable and has not been called (a
    function decorated with ``@delayed`` or ``@resolves_nested``), passed
    directly as a positional or keyword argument. It reaches the function
    as the delayed function it is, so that calling it makes a task, where
    plain ``dask.delayed`` computes it to the bare function, whose calls
    then run one after another inside this task. Return the ``Delayed``
    those calls make, and :func:`unnest.unwrap` of this function's result
    computes them together, concurrently (dask/dask#10733). Pass the bare
    function instead (``job.__wrapped__``, or ``job`` undecorated) to call it
    in place.

    Parameters
    ----------
    func : callable, optional
        The function. When omitted, returns a decorator.
    timeout : float, optional
        Seconds for resolving the arguments (and the output).
    resolve_output : bool, default False
        Resolve the return value before returning it.
    **delayed_options
        Any option ``dask.delayed`` accepts: ``pure``, ``nout``, ``name``,
        ``traverse``, ...

    Returns
    -------
    Delayed
        A ``dask.delayed`` function that keeps ``func``'s name, docstring,
        ``__wrapped__`` and signature. To a type checker, its call takes
        ``func``'s parameters and returns a ``Delayed``: annotate a parameter
        with what callers pass (a ``Delayed``, a future, ``Any``) where that
        is not the resolved value's type.

    Examples
    --------
    >>> from dask import delayed
    >>> from unnest import resolves_nested
    >>> @delayed
    ... def return_futures(n):
    ...     return [delayed(x + 1) for x in range(n)]
    >>> @resolves_nested
    ... def sumit(upstream):
    ...     return sum(upstream)
    >>> sumit(return_futures(10)).compute()
    55
    >>> @resolves_nested(pure=True)
    ... def double(x):
    ...     return 2 * x
    >>> double(1).key == double(1).key
    True

    A "subflow" that calls the delayed function it is given, for each item:
    the jobs are tasks of their own, which ``unwrap`` computes together.

    >>> import unnest
    >>> @delayed
    ... def job(x):
    ...     return x * 10
    >>> @resolves_nested
    ... def subflow(make, items):
    ...     return [make(item) for item in items]
    >>> unnest.unwrap(subflow(job, [1, 2, 3]))
    [10, 20, 30]
    """
    if func is None:
        return functools.partial(
            resolves_nested, timeout=timeout, resolve_output=resolve_output, **delayed_options
        )
    wrapper = resolving(func, timeout=timeout, resolve_output=resolve_output)
    # Let dask.delayed validate the options and name the key, then keep its
    # result in our subclass.
    leaf = dask.delayed(wrapper, **delayed_options)
    if not isinstance(leaf, DelayedLeaf):
        return leaf
    # The same leaf, of our subclass: what dask.delayed made it from, and the
    # key it named.
    pure, nout = delayed_options.get("pure"), delayed_options.get("nout")
    return _ResolvingLeaf(wrapper, leaf.key, pure=pure, nout=nout)
