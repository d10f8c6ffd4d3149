"""How containers are taken apart and put back together: the registry.

One table says, for each container type, how to list its children
(``flatten``), how to build a new container of the same kind from new
children (the ``rebuild`` callable that ``flatten`` returns) and how to name a
child in an error message (``label``). Everything that walks a structure in
unnest -- finding placeholders, rebuilding the path above a resolved value,
detecting cycles, naming the place of an error -- goes through this table and
nothing else, so there is exactly one notion of "what is inside what".

Built in: list, tuple, namedtuple, dict (and subclasses such as OrderedDict,
defaultdict and Counter), set, frozenset, collections.deque and dataclass
instances; pydantic models and attrs classes once their library is imported
(:mod:`unnest._models`, registered with :func:`register_lazy`). Teach unnest a
type of your own with :func:`register_container`; yours wins over the
built-in support.

Lookups are cached per type, so the walker pays one dict lookup per element,
and the cache never keeps a type alive: types made at run time (namedtuple and
dataclass factories, a class per ``Mock()``) must be freed with their last
instance. Static types -- builtins and extension types such as numpy's, which
live as long as the interpreter -- are cached by the type itself in
``_kinds``, the walker's fast path; classes defined in Python (heap types) by
``id`` in ``_heap_kinds``, each entry dropped by a weak reference's callback
when its class is freed (before its ``id`` can be reused). Both caches are
cleared whenever the registry changes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import enum
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar, overload

from unnest._instances import copy_instance

__all__ = ["Key", "allow_failure", "quote", "register_container", "register_placeholder"]

T = TypeVar("T")

Flatten = Callable[[Any], tuple[Sequence[Any], Callable[[list[Any]], Any]]]
Label = Callable[[Any, int], str]
Keys = Callable[[Any], Sequence[Any]]
F = TypeVar("F", bound=Flatten)  # a flatten, given back as it came


class Container(NamedTuple):
    """How the walker handles one container type (internal)."""

    flatten: Flatten
    label: Label
    # The element of a path (unnest.as_resolved) that leads to each child, in
    # the order of flatten's children; None: the child's index.
    keys: Keys | None = None


class Key:
    """In a path of :func:`unnest.as_resolved`: a dict's key itself, not its value.

    A placeholder used as a dict key (or sitting inside one) is reached
    through the key, so its path holds ``Key(key)``, the key as it is in the
    input; the value stored under ``key`` is reached by ``key`` alone. Equal
    only to a ``Key`` of an equal key (never to a tuple).

    Examples
    --------
    >>> from unnest.traverse import Key
    >>> Key("a") == Key("a"), Key("a") == "a", Key("a") == ("a",)
    (True, False, False)
    >>> Key("a")
    Key('a')
    """

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __eq__(self, other: object) -> Any:
        if type(other) is not Key:
            return NotImplemented
        return self.key is other.key or self.key == other.key

    def __hash__(self) -> int:
        return hash((Key, self.key))

    def __repr__(self) -> str:
        return f"Key({self.key!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return Key, (self.key,)


class Kind(enum.Enum):
    """What the walker does with an element, by type (a type's other kind is
    its :class:`Container`)."""

    LEAF = "leaf"  # nothing inside: the very same object back
    FUTURE = "future"  # distributed.Future
    CFUTURE = "concurrent"  # concurrent.futures.Future
    COLLECTION = "collection"  # anything with __dask_graph__ (Delayed, Bag, ...)
    OPAQUE = "quote"  # unnest.quote: replaced by what it wraps, never entered
    ROOT = "root"  # no element's: the kind of the root node of a call's graph
    AFUTURE = "asyncio"  # asyncio.Future and Task


LEAF, FUTURE, CFUTURE, COLLECTION, OPAQUE, ROOT, AFUTURE = Kind


class Placeholder(NamedTuple):
    """How the resolver waits on a registered placeholder type (internal).

    A type's third kind, beside the :class:`Kind` members and a
    :class:`Container`: see :func:`register_placeholder` and
    :mod:`unnest._placeholders`.
    """

    # The placeholder unnest already knows that stands for the object.
    as_future: Callable[[Any], Any]
    # unnest's own engine for the type, instead of as_future: a class made
    # with the call, that waits on the type's objects in batches (Ray).
    engine: Any = None
    # The value the stand-in gives -> the object's value, before it is
    # walked (a Prefect future's State -> the task's result).
    then: Callable[[Any], Any] | None = None


# Containers by class: the user's (register_container) and unnest's own
# (register_builtin). The user's win, for the class and its subclasses, over
# every built-in rule (namedtuples, dataclasses, the builtins, the models).
_user: dict[type, Container | Placeholder] = {}
_builtin: dict[type, Container | Placeholder] = {}
# Support for optional libraries (pydantic, attrs; see unnest._models), set up
# by the first classification that finds the library imported -- none of its
# classes can exist before -- so importing unnest imports neither. Module name
# -> the function that registers the support (dask's Dispatch.register_lazy,
# keyed on sys.modules because attrs classes have no common base class).
_lazy: dict[str, Callable[[], None]] = {}
_lazy_lock = threading.Lock()
# Containers recognised by a test on the type rather than by a base class
# (attrs classes), consulted after the registry.
_tests: list[tuple[Callable[[type], bool], Container | Placeholder]] = []
_kinds: dict[type, Any] = {}  # static types -> kind
_heap_kinds: dict[int, tuple[Any, weakref.ref[type]]] = {}  # id(heap type) -> kind, ref
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE
_MISSING = object()


class _Marker(Generic[T]):
    """A small value object around ``obj`` that tells the walk what to do with it."""

    __slots__ = ("obj",)

    obj: T

    def __init__(self, obj: T) -> None:
        self.obj = obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.obj!r})"

    def __eq__(self, other: object) -> Any:
        if type(other) is not type(self):
            return NotImplemented
        return self.obj is other.obj or self.obj == other.obj

    def __hash__(self) -> int:
        return hash(self.obj)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.obj,)


class quote(_Marker[T]):
    """A value that :func:`unnest.unwrap` hands on as it is, without looking inside.

    ``unwrap`` (and the functions wrapped by :func:`unnest.resolving` and
    :func:`unnest.resolves_nested`) replace a ``quote`` with the very object
    it wraps; placeholders inside are left as they are. This is how a
    structure carries futures on purpose: to hand them on, or to wait on them
    your own way. :func:`unnest.hand_off` still holds the futures inside, so
    they outlive the task that returns them. (Futures that reach a task
    inside any object arrive there unbound: ``unwrap`` them in the task.)

    Prefect's ``quote`` does the same. ``unnest.opaque``, its former name
    here, is a deprecated alias (a ``DeprecationWarning``); it goes in the
    next release. (Prefect 3's own ``opaque`` means something else: resolve
    the top level, do not walk inside.)

    Parameters
    ----------
    obj : object
        The value to pass through untouched.

    Examples
    --------
    >>> import dask
    >>> import unnest
    >>> @dask.delayed
    ... def inc(x):
    ...     return x + 1
    >>> pending = [inc(1), inc(2)]
    >>> unnest.unwrap({"values": pending, "as_is": unnest.quote(pending)})["values"]
    [2, 3]
    >>> unnest.unwrap({"values": pending, "as_is": unnest.quote(pending)})["as_is"] is pending
    True
    >>> unnest.quote([1, 2])
    quote([1, 2])
    """

    __slots__ = ()


class allow_failure(_Marker[T]):
    """A branch whose failures take their place instead of ending the call.

    Inside ``obj``, to any depth -- placeholders in it and those that turn
    up in their values -- the exception of a placeholder that fails is put
    in its place, as ``errors="return"`` does for the whole call. Outside
    it, the call's own ``errors`` policy holds. The wrapper itself is
    replaced by ``obj``'s resolved value, and is no step of the paths that
    :func:`unnest.as_resolved` yields. A placeholder that sits both inside
    and outside an ``allow_failure`` follows the call's policy. Works in
    :func:`unnest.unwrap`, :func:`unnest.unwrap_async`,
    :func:`unnest.as_resolved`, :func:`unnest.as_resolved_async` and in the
    inputs of :func:`unnest.resolving` and :func:`unnest.resolves_nested`
    functions. Prefect's ``allow_failure``, for any branch of a structure.

    Parameters
    ----------
    obj : object
        Any structure.

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> import unnest
    >>> with ThreadPoolExecutor() as pool:
    ...     good = pool.submit(pow, 2, 10)
    ...     bad = pool.submit(int, "x")
    ...     unnest.unwrap({"good": good, "maybe": unnest.allow_failure([bad, 1])})
    {'good': 1024, 'maybe': [ValueError("invalid literal for int() with base 10: 'x'"), 1]}
    """

    __slots__ = ()


def _index_label(obj: Any, i: int) -> str:
    return f"[{i}]"


@overload
def register_container(cls: type, flatten: F, *, label: Label | None = ...) -> F: ...
@overload
def register_container(
    cls: type, flatten: None = ..., *, label: Label | None = ...
) -> Callable[[F], F]: ...
def register_container(
    cls: type,
    flatten: Flatten | None = None,
    *,
    label: Label | None = None,
) -> Any:
    """Teach unnest to walk into instances of ``cls``.

    ``flatten(obj)`` returns ``(children, rebuild)``: the objects inside
    ``obj`` that may hold something to resolve, and a callable that takes a
    list of replacement children (same order) and returns a new object like
    ``obj``. ``rebuild`` is only called when a child changed, so an object
    with nothing to resolve comes back as itself. ``flatten`` must not modify
    ``obj``. Registering a class also covers its subclasses unless they are
    registered themselves -- dataclasses, namedtuples and models among them:
    your registration wins over unnest's built-in rules. An error raised by
    ``flatten``, by iterating its children or by ``rebuild`` is raised with
    the container's place (``obj['rows'][1]``).

    Parameters
    ----------
    cls : type
        The container type.
    flatten : callable, optional
        ``flatten(obj) -> (children, rebuild)``. When omitted,
        ``register_container`` returns a decorator.
    label : callable, optional
        ``label(obj, i) -> str`` names child ``i`` in error messages, as a
        Python accessor such as ``".value"``; defaults to ``"[i]"``.

    Returns
    -------
    callable
        ``flatten`` (or a decorator that registers and returns it).

    Examples
    --------
    >>> import unnest
    >>> class Box:
    ...     def __init__(self, value):
    ...         self.value = value
    >>> @unnest.register_container(Box, label=lambda box, i: ".value")
    ... def _flatten_box(box):
    ...     return [box.value], lambda values: Box(values[0])
    >>> from concurrent.futures import Future
    >>> f = Future()
    >>> f.set_result(41)
    >>> unnest.unwrap(Box([f, 1])).value
    [41, 1]
    """
    if not isinstance(cls, type):
        raise TypeError(f"`cls` must be a type, got {cls!r}")

    def register(func: Flatten) -> Flatten:
        if not callable(func):
            raise TypeError(f"`flatten` must be callable, got {func!r}")
        _user[cls] = Container(_checked(func), label or _index_label)
        _kinds.clear()
        _heap_kinds.clear()
        return func

    if flatten is None:
        return register
    return register(flatten)


AsFuture = TypeVar("AsFuture", bound=Callable[[Any], Any])  # given back as it came


@overload
def register_placeholder(cls: type, as_future: AsFuture) -> AsFuture: ...
@overload
def register_placeholder(cls: type, as_future: None = ...) -> Callable[[AsFuture], AsFuture]: ...
def register_placeholder(cls: type, as_future: Callable[[Any], Any] | None = None) -> Any:
    """Teach unnest a future type of your own: resolve its instances anywhere.

    ``as_future(obj)`` returns a placeholder unnest already knows that stands
    for ``obj`` -- a ``concurrent.futures.Future``, an ``asyncio.Future``, a
    ``distributed.Future`` or a dask collection -- and unnest waits on that
    one, with the engine and the batching of its kind. Its value is ``obj``'s
    value, and is walked and resolved again, like every value. An error of
    ``as_future`` or of the placeholder is raised with ``obj``'s place
    (``obj['jobs'][2]``), and :func:`unnest.as_resolved` yields ``obj``'s
    path. Registering a class covers its subclasses unless they are
    registered themselves (as containers or placeholders), and wins over
    unnest's own rules (a subclass of ``concurrent.futures.Future`` too).
    ``as_future`` runs in the thread that waits (an event loop's): keep it
    quick, and leave waiting to unnest.

    Ray's ``ObjectRef``, Prefect's futures and asyncio futures are known
    without registration; Parsl's futures are ``concurrent.futures`` ones.

    Parameters
    ----------
    cls : type
        The future type.
    as_future : callable, optional
        ``as_future(obj) -> placeholder``. When omitted,
        ``register_placeholder`` returns a decorator.

    Returns
    -------
    callable
        ``as_future`` (or a decorator that registers and returns it).

    Examples
    --------
    >>> import concurrent.futures
    >>> import unnest
    >>> class Job:
    ...     def __init__(self, future):
    ...         self.future = future
    >>> @unnest.register_placeholder(Job)
    ... def _job_future(job):
    ...     return job.future
    >>> with concurrent.futures.ThreadPoolExecutor() as pool:
    ...     inner = Job(pool.submit(pow, 2, 10))
    ...     outer = Job(pool.submit(lambda: {"inner": inner}))
    ...     unnest.unwrap([outer, 1])
    [{'inner': 1024}, 1]
    """
    if not isinstance(cls, type):
        raise TypeError(f"`cls` must be a type, got {cls!r}")

    def register(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if not callable(func):
            raise TypeError(f"`as_future` must be callable, got {func!r}")
        _user[cls] = Placeholder(func)
        _kinds.clear()
        _heap_kinds.clear()
        return func

    if as_future is None:
        return register
    return register(as_future)


def _checked(flatten: Flatten) -> Flatten:
    """A user's ``flatten``, whose children the walk can index without user code.

    The children become a plain list once, here, where an error (an
    ``__iter__`` that raises, a wrong return value) is raised inside the
    walk's call of ``flatten``, which names the container's place.
    """

    def checked(obj: Any) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
        out = flatten(obj)
        try:
            children, rebuild = out
        except (TypeError, ValueError):
            raise TypeError(
                f"flatten() must return (children, rebuild), got {type(out).__name__}"
            ) from None
        if not callable(rebuild):
            raise TypeError(f"the rebuild flatten() returned is not callable: {rebuild!r}")
        if type(children) is not list and type(children) is not tuple:
            children = list(children)
        return children, rebuild

    return checked


def register_lazy(module: str, register: Callable[[], None]) -> None:
    """Call ``register()`` once ``module`` is imported, before classifying a type."""
    _lazy[module] = register
    _kinds.clear()
    _heap_kinds.clear()


def register_builtin(
    cls: type | Callable[[type], bool], container: Container | Placeholder
) -> None:
    """Built-in support for ``cls`` (or the types passing a test), below the user's."""
    if isinstance(cls, type):
        _builtin[cls] = container
    else:
        _tests.append((cls, container))
    _kinds.clear()
    _heap_kinds.clear()


def _load_lazy() -> None:
    with _lazy_lock:
        for module in list(_lazy):
            if module in sys.modules:
                try:
                    _lazy[module]()
                finally:
                    # Removed only now: a thread classifying meanwhile waits
                    # for the lock rather than seeing a half-made registry.
                    del _lazy[module]


def known_kinds() -> dict[type, Any]:
    """A copy of the cache of static types' kinds (the walker's fast path)."""
    return _kinds.copy()


def kind_of(tp: type) -> Any:
    """What the walker does with instances of ``tp`` (cached, see above)."""
    try:
        return _kinds[tp]
    except KeyError:
        pass
    if not tp.__flags__ & _HEAPTYPE:
        kind = _kinds[tp] = _classify(tp)
        return kind
    tid = id(tp)
    hit = _heap_kinds.get(tid)
    if hit is not None:
        return hit[0]
    kind = _classify(tp)

    def forget(_: Any, tid: int = tid) -> None:
        _heap_kinds.pop(tid, None)

    _heap_kinds[tid] = (kind, weakref.ref(tp, forget))
    return kind


def _classify(tp: type) -> Any:
    if _lazy:
        _load_lazy()
    if issubclass(tp, quote):
        return OPAQUE
    mro = tp.__mro__
    if _user:
        for base in mro:  # the nearest registered class
            if base in _user:
                return _user[base]
    # A Future instance can only exist once distributed is imported, so this
    # check never imports it (import time matters to users of unnest).
    dist = sys.modules.get("distributed.client")
    if dist is not None and issubclass(tp, dist.Future):
        return FUTURE
    if issubclass(tp, concurrent.futures.Future):
        return CFUTURE
    if issubclass(tp, asyncio.Future):  # Task too
        return AFUTURE
    # Class-level check on purpose: Delayed answers any attribute lookup on an
    # instance with another Delayed.
    if hasattr(tp, "__dask_graph__"):
        return COLLECTION
    if issubclass(tp, tuple) and hasattr(tp, "_fields") and hasattr(tp, "_make"):
        return _NAMEDTUPLE
    if dataclasses.is_dataclass(tp):
        return _DATACLASS
    for base in mro:
        if base in _builtin:
            return _builtin[base]
    for test, container in _tests:
        if test(tp):
            return container
    return LEAF


# Built-in containers ---------------------------------------------------------
#
# Exact builtins are rebuilt with their constructors. Subclasses are rebuilt
# without running any of their code: a blank instance from the builtin base's
# ``__new__``, filled through the base's own methods, then given the
# original's instance attributes (``__dict__`` and ``__slots__``) and the
# base's own state (a deque's ``maxlen``, a defaultdict's
# ``default_factory``). Their own ``__init__``/``__new__`` may take required
# arguments or keyword-only options that cannot be recovered from the
# contents, and ``copy.copy`` (which calls them through ``__reduce__``) would
# then lose attributes or silently keep unresolved values in them.


def _identity(values: list[Any]) -> list[Any]:
    return values


def _copy_state(obj: Any, new: Any) -> Any:
    """Give ``new`` the instance attributes of ``obj``; return ``new``."""
    if type(obj).__flags__ & _HEAPTYPE:
        return copy_instance(obj, {}, new)
    return new


def _flatten_list(obj: list[Any]) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    if type(obj) is list:
        return obj, _identity  # `values` is already a fresh list

    def rebuild(values: list[Any]) -> Any:
        new = list.__new__(type(obj))
        list.extend(new, values)
        return _copy_state(obj, new)

    # Taken apart by the base's own method, as it is rebuilt: a subclass's
    # __iter__ or __getitem__ is never called (one that raised left its error
    # without a place, where the walk iterated the container later).
    return list.copy(obj), rebuild


def _flatten_tuple(obj: tuple[Any, ...]) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    if type(obj) is tuple:
        return obj, tuple

    def rebuild(values: list[Any]) -> Any:
        return _copy_state(obj, tuple.__new__(type(obj), values))

    return tuple.__getitem__(obj, slice(None)), rebuild  # a plain tuple


def _flatten_namedtuple(obj: Any) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    # What _make does, without a subclass's own __new__ or _make, and keeping
    # the attributes of a subclass that has a __dict__.
    cls = type(obj)
    if not hasattr(obj, "__dict__"):
        return tuple.__getitem__(obj, slice(None)), lambda values: tuple.__new__(cls, values)
    return _flatten_tuple(obj)


def _namedtuple_label(obj: Any, i: int) -> str:
    return f".{type(obj)._fields[i]}"


def _dict_base(cls: type) -> Any:
    for base in cls.__mro__:
        if base is collections.OrderedDict or base is collections.defaultdict or base is dict:
            return base
    return dict


def _rebuild_dict(values: list[Any]) -> dict[Any, Any]:
    # One function for every plain dict, not a closure each: a call keeps
    # one rebuild per pending container, and the garbage collector scans them.
    n = len(values) // 2
    return dict(zip(values[:n], values[n:]))


def _flatten_dict(obj: dict[Any, Any]) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    # Keys first, then values: a key that is itself resolvable is resolved too.
    # Read through dict's own views: a subclass's __iter__ or values() never
    # runs (see _flatten_list).
    keys = list(dict.keys(obj))
    n = len(keys)
    children = keys + list(dict.values(obj))
    if type(obj) is dict:
        return children, _rebuild_dict

    def rebuild(values: list[Any]) -> Any:
        base = _dict_base(type(obj))
        new = base.__new__(type(obj))
        if base is collections.defaultdict:
            new.default_factory = obj.default_factory  # type: ignore[attr-defined]
        setitem = base.__setitem__
        for k, v in zip(values[:n], values[n:]):
            setitem(new, k, v)
        return _copy_state(obj, new)

    return children, rebuild


def _dict_keys(obj: dict[Any, Any]) -> list[Any]:
    keys = list(dict.keys(obj))
    return [Key(k) for k in keys] + keys


def _dict_label(obj: dict[Any, Any], i: int) -> str:
    keys = list(dict.keys(obj))
    if i < len(keys):
        return f".keys()[{i}]"
    return f"[{keys[i - len(keys)]!r}]"


def _members(obj: Any) -> list[Any]:
    """A set's or frozenset's members, by the builtin's own iterator."""
    return list(set.__iter__(obj) if isinstance(obj, set) else frozenset.__iter__(obj))


def _flatten_set(obj: Any) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    children = _members(obj)
    cls = type(obj)
    if cls is set or cls is frozenset:
        return children, cls
    if isinstance(obj, set):

        def rebuild(values: list[Any]) -> Any:
            new = set.__new__(cls)
            set.update(new, values)
            return _copy_state(obj, new)

    else:

        def rebuild(values: list[Any]) -> Any:
            return _copy_state(obj, frozenset.__new__(cls, values))

    return children, rebuild


def _set_keys(obj: Any) -> list[Any]:
    return _members(obj)  # a member is its own key (the order of _flatten_set)


def _set_label(obj: Any, i: int) -> str:
    return f"{{element {i}}}"


def _flatten_deque(obj: collections.deque[Any]) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    children = list(collections.deque.__iter__(obj))
    if type(obj) is collections.deque:
        return children, lambda values: collections.deque(values, maxlen=obj.maxlen)

    def rebuild(values: list[Any]) -> Any:
        new = collections.deque.__new__(type(obj))
        collections.deque.__init__(new, values, obj.maxlen)
        return _copy_state(obj, new)

    return children, rebuild


def _flatten_dataclass(obj: Any) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    # Every field, init=False ones included; a field that was never assigned
    # is skipped. Rebuilt by copy_instance: frozen dataclasses too, and none
    # of the class's code (__init__, __post_init__, __copy__) runs.
    names = []
    children = []
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name, _MISSING)
        if value is not _MISSING:
            names.append(field.name)
            children.append(value)

    def rebuild(values: list[Any]) -> Any:
        return copy_instance(obj, dict(zip(names, values)))

    return children, rebuild


def _dataclass_keys(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj) if hasattr(obj, f.name)]


def _dataclass_label(obj: Any, i: int) -> str:
    return f".{_dataclass_keys(obj)[i]}"


_NAMEDTUPLE = Container(_flatten_namedtuple, _namedtuple_label)
_DATACLASS = Container(_flatten_dataclass, _dataclass_label, _dataclass_keys)

register_builtin(list, Container(_flatten_list, _index_label))
register_builtin(tuple, Container(_flatten_tuple, _index_label))
register_builtin(dict, Container(_flatten_dict, _dict_label, _dict_keys))
register_builtin(set, Container(_flatten_set, _set_label, _set_keys))
register_builtin(frozenset, Container(_flatten_set, _set_label, _set_keys))
register_builtin(collections.deque, Container(_flatten_deque, _index_label))


def _allowed_flatten(obj: allow_failure[Any]) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
    return (obj.obj,), _first


def _first(values: list[Any]) -> Any:
    return values[0]


# A path element that is no step: the place of the container itself.
HERE = object()
# allow_failure: a container of one child, replaced by the child's value (the
# walk opens it even when it holds leaves only, unnest._graph), named by no
# step in places and paths: the failures under it take their place.
ALLOWED = Container(_allowed_flatten, lambda obj, i: "", lambda obj: (HERE,))
register_builtin(allow_failure, ALLOWED)


def placeholders(obj: Any, kinds: tuple[Any, ...]) -> list[Any]:
    """Every element of ``obj`` whose kind is in ``kinds``, without resolving.

    The same registry and classification as the resolver's walk; placeholders
    are not looked into, :class:`quote` wrappers are (``hand_off`` must hold
    the futures a task passes on in them). Each container is visited once
    (shared or cyclic references are fine).
    """
    found = []
    seen: set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = kind_of(type(item))
        if kind is LEAF:
            continue
        if not isinstance(kind, Container):
            if kind is OPAQUE:
                stack.append(item.obj)
            elif kind in kinds:
                found.append(item)
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        stack.extend(kind.flatten(item)[0])
    return found
