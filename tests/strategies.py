"""Hypothesis strategies, and the expected values that properties compare against.

Nested structures of every container unnest walks; a reference walk that
swaps leaves for finished futures (``swap_leaves``); a comparison of values
and types all the way down (``same_types``); and a snapshot of every object's
identity, to prove nothing was mutated (``snapshot``).
"""

import collections
import concurrent.futures
import contextlib
import copy
import dataclasses
import functools
import types
import typing

from hypothesis import settings
from hypothesis import strategies as st


def examples(fraction):
    """Settings for a costlier property: ``fraction`` of the profile's examples.

    The profile (``dev`` locally, ``ci`` in CI, ``slow`` with ``--slow``) is
    loaded before test modules are imported, so it reaches these properties too.
    """
    count = max(1, int(settings.default.max_examples * fraction))
    return settings(max_examples=count, deadline=None)


class Point(typing.NamedTuple):
    x: typing.Any
    y: typing.Any = None


@dataclasses.dataclass
class Pair:
    left: typing.Any
    right: typing.Any


@dataclasses.dataclass(frozen=True)
class FrozenPair:
    left: typing.Any
    right: typing.Any


@dataclasses.dataclass
class WithHidden:
    shown: typing.Any
    hidden: typing.Any = dataclasses.field(init=False, default=None)

    def __post_init__(self):
        self.hidden = ("derived", self.shown)


class Attrs(dict):
    """A dict subclass with an attribute and a constructor of its own."""

    def __init__(self, tag, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
)
hashable = st.one_of(
    st.integers(), st.text(max_size=5), st.tuples(st.integers(), st.text(max_size=3))
)


def containers(children):
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.tuples(children, children).map(lambda t: Point(*t)),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
        st.dictionaries(st.text(max_size=4), children, max_size=4).map(collections.OrderedDict),
        st.dictionaries(st.text(max_size=4), children, max_size=4).map(
            lambda d: collections.defaultdict(list, d)
        ),
        st.dictionaries(st.text(max_size=4), children, max_size=4).map(lambda d: Attrs("t", d)),
        st.lists(children, max_size=4).map(lambda xs: collections.deque(xs, maxlen=7)),
        st.builds(Pair, children, children),
        st.builds(FrozenPair, children, children),
        st.builds(WithHidden, children),
    )


def structures(leaf=leaves):
    """Nested containers; sets hold only hashable leaves."""
    sets = st.one_of(st.sets(hashable, max_size=4), st.frozensets(hashable, max_size=4))
    return st.recursive(st.one_of(leaf, sets), containers, max_leaves=25)


# -- Expected values ----------------------------------------------------------------


def done(value):
    """A finished concurrent.futures.Future holding ``value``."""
    f = concurrent.futures.Future()
    f.set_result(value)
    return f


def is_int(obj):
    return type(obj) is int


def swap_leaves(obj, make=done, swap=is_int):
    """``obj`` with every leaf for which ``swap(leaf)`` replaced by ``make(leaf)``.

    A reference walk of its own, recursive and written without unnest, over
    acyclic structures.
    """
    if swap(obj):
        return make(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(swap_leaves(x, make, swap) for x in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(swap_leaves(x, make, swap) for x in obj)
    if isinstance(obj, collections.deque):
        return collections.deque((swap_leaves(x, make, swap) for x in obj), maxlen=obj.maxlen)
    if isinstance(obj, dict):
        new = copy.copy(obj)
        for k in new:
            new[k] = swap_leaves(new[k], make, swap)
        return new
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        new = copy.copy(obj)
        for f in dataclasses.fields(obj):
            if hasattr(obj, f.name):
                object.__setattr__(new, f.name, swap_leaves(getattr(obj, f.name), make, swap))
        return new
    return obj


def same_types(a, b, leaf_eq=lambda x, y: x == y):
    """``a`` equals ``b`` with the same container types all the way down.

    Leaves are compared with ``leaf_eq`` (awkward leaves whose ``__eq__``
    raises are compared by identity).
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple, collections.deque)):
        return len(a) == len(b) and all(same_types(x, y, leaf_eq) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_types(a[k], b[k], leaf_eq) for k in a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return all(
            same_types(getattr(a, f.name, None), getattr(b, f.name, None), leaf_eq)
            for f in dataclasses.fields(a)
        )
    return leaf_eq(a, b)


def snapshot(obj, seen=None):
    """The identity of every object reachable through walked containers."""
    seen = {} if seen is None else seen
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        if isinstance(item, (list, tuple, set, frozenset, collections.deque)):
            seen[id(item)] = (type(item), [id(x) for x in item])
            stack.extend(item)
        elif isinstance(item, dict):
            seen[id(item)] = (type(item), [(id(k), id(v)) for k, v in item.items()])
            stack.extend(item.values())
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            values = [
                getattr(item, f.name) for f in dataclasses.fields(item) if hasattr(item, f.name)
            ]
            seen[id(item)] = (type(item), [id(v) for v in values])
            stack.extend(values)
    return seen


# -- Deep comparisons (tests/test_reference.py) -----------------------------------------
#
# ``same_types`` and ``snapshot`` above see the built-in containers and
# dataclass fields; these see every object's instance state too (``__dict__``
# and slots: attrs classes, pydantic models, subclasses of builtins), sets,
# numpy arrays, exceptions, and what a test planned for its concurrent futures.

_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_NOT_DATA = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)


def _is_placeholder(obj):
    import dask
    import distributed

    if isinstance(obj, (distributed.Future, concurrent.futures.Future)):
        return True
    return not isinstance(obj, type) and dask.is_dask_collection(obj)


def _cached(cls):
    """The names of ``cls``'s ``functools.cached_property`` attributes."""
    return {
        k
        for klass in cls.__mro__
        for k, v in vars(klass).items()
        if isinstance(v, functools.cached_property)
    }


def _derived(cls):
    """Attributes holding state computed from the others: caches."""
    return _cached(cls) | {"_attrs_cached_hash"}  # attrs' cache_hash=True


def instance_state(obj, derived=True):
    """``obj``'s instance attributes, ``{name: value}``: its ``__dict__`` and set slots.

    Read as stored, without the class's ``__getattribute__``; ``derived=False``
    leaves out caches (``functools.cached_property`` values, attrs' cached hash).
    """
    state = {}
    with contextlib.suppress(AttributeError, TypeError):
        state.update(object.__getattribute__(obj, "__dict__"))
    for klass in type(obj).__mro__:
        for name, found in vars(klass).items():
            if type(found) is types.MemberDescriptorType and name not in state:
                try:
                    state[name] = found.__get__(obj, type(obj))
                except AttributeError:
                    continue
    if not derived:
        for name in _derived(type(obj)):
            state.pop(name, None)
    return state


def _contents(obj):
    """The elements of a builtin container, read through the builtin's own methods."""
    if isinstance(obj, dict):
        return [x for pair in dict.items(obj) for x in pair]
    if isinstance(obj, list):
        return list(list.__iter__(obj))
    if isinstance(obj, tuple):
        return list(tuple.__iter__(obj))
    if isinstance(obj, set):
        return list(set.__iter__(obj))
    if isinstance(obj, frozenset):
        return list(frozenset.__iter__(obj))
    if isinstance(obj, collections.deque):
        return list(collections.deque.__iter__(obj))
    return []


def deep_snapshot(obj, planned=None):
    """Every object reachable from ``obj``: its type, what it holds and its state, by identity.

    Two snapshots are equal when nothing reachable was mutated, rebound or
    replaced: container contents, instance attributes (caches included), a
    deque's ``maxlen``, a defaultdict's factory, an exception's arguments and
    notes. Placeholders are not looked into (their state is the client's),
    except that a concurrent future leads to what ``planned`` (``{id(future):
    value or exception}``) says it will hold. The snapshot keeps every object
    alive, so ids are not reused while it lives.
    """
    planned = planned or {}
    seen = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if type(item) in _PLAIN or isinstance(item, _NOT_DATA) or id(item) in seen:
            continue
        if _is_placeholder(item):
            inner = planned.get(id(item))
            seen[id(item)] = (item, type(item), id(inner))
            if inner is not None:
                stack.append(inner)
            continue
        if isinstance(item, BaseException):
            notes = tuple(getattr(item, "__notes__", ()))
            seen[id(item)] = (item, type(item), item.args, notes)
            continue
        held = _contents(item)
        state = instance_state(item)
        extra = ()
        if isinstance(item, collections.deque):
            extra = (item.maxlen,)
        if isinstance(item, collections.defaultdict):
            extra = (id(item.default_factory),)
        seen[id(item)] = (
            item,
            type(item),
            [id(x) for x in held],
            sorted((k, id(v)) for k, v in state.items()),
            extra,
        )
        stack.extend(held)
        stack.extend(state.values())
    return seen


def snapshot_changes(before, after):
    """What differs between two ``deep_snapshot``\\ s of one input: a list of texts."""
    changes = []
    for key, entry in before.items():
        now = after.get(key)
        if now is None:
            changes.append(f"{entry[1].__name__} no longer reachable")
        elif now[1:] != entry[1:]:
            changes.append(f"{entry[1].__name__} changed: {entry[1:]!r} -> {now[1:]!r}")
    return changes


def _hashable_by_value(obj):
    """Is ``obj``'s hash a function of its value (so equal values must hash equal)?"""
    if type(obj) in _PLAIN:
        return True
    if isinstance(obj, (tuple, frozenset)) and not hasattr(type(obj), "_fields"):
        return all(_hashable_by_value(x) for x in _contents(obj))
    if type(obj).__hash__ in (None, object.__hash__) or _is_placeholder(obj):
        return False
    if isinstance(obj, tuple):  # a namedtuple
        return all(_hashable_by_value(x) for x in _contents(obj))
    if isinstance(obj, BaseException):
        return False
    fields = _field_values(obj)
    return fields is not None and all(_hashable_by_value(x) for x in fields)


def _field_values(obj):
    """The values a dataclass, attrs class or pydantic model hashes; None for others."""
    import sys

    if dataclasses.is_dataclass(obj):
        return [getattr(obj, f.name) for f in dataclasses.fields(obj) if f.hash or f.compare]
    attr = sys.modules.get("attr")
    if attr is not None and attr.has(type(obj)):
        return [getattr(obj, a.name) for a in attr.fields(type(obj)) if a.hash is not False]
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        return list(object.__getattribute__(obj, "__dict__").values())
    return None


def _first_line(exc):
    text = str(exc)
    return text.splitlines()[0] if text else ""


def same_values(a, b, known=(), at="value"):
    """Where ``a`` differs from the expected ``b``, as a text; None if nowhere.

    ``same_types`` all the way down, and more: the same types, equal leaves,
    equal contents and instance state (caches compared through their
    properties, so a stale cache shows), equal hashes wherever ``b`` hashes
    by value, exceptions of the same type and first line. Where ``b`` is an
    object of ``known`` (ids: the input's own objects), ``a`` must be that
    very object.
    """
    stack = [(a, b, at)]
    seen = set()
    while stack:
        a, b, at = stack.pop()
        if isinstance(b, BaseException) or isinstance(a, BaseException):
            if type(a) is not type(b) or _first_line(a) != _first_line(b):
                return f"{at}: {a!r} where {b!r} was expected"
            continue
        if id(b) in known and type(b) not in _PLAIN:
            if a is not b:
                return f"{at}: not the very {type(b).__name__} of the input"
            continue
        if type(a) is not type(b):
            return f"{at}: {type(a).__name__} {a!r} where {type(b).__name__} was expected"
        if (id(a), id(b)) in seen:
            continue
        seen.add((id(a), id(b)))
        if type(b) in _PLAIN:
            if a != b:
                return f"{at}: {a!r} where {b!r} was expected"
            continue
        if type(b).__module__ == "numpy":
            import numpy as np

            if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
                return f"{at}: {a!r} where {b!r} was expected"
            continue
        if _hashable_by_value(b):
            try:
                if hash(a) != hash(b):
                    return f"{at}: hash {hash(a)} where {hash(b)} was expected (equal values)"
            except TypeError as e:
                return f"{at}: hash raised {e!r}"
        if isinstance(b, (set, frozenset)):
            diff = _same_members(list(_contents(a)), list(_contents(b)), known, at)
            if diff:
                return diff
        elif isinstance(b, dict):
            ka, kb = list(dict.keys(a)), list(dict.keys(b))
            if len(ka) != len(kb):
                return f"{at}: {len(ka)} keys where {len(kb)} were expected"
            for i, (x, y) in enumerate(zip(ka, kb)):
                stack.append((x, y, f"{at}.keys()[{i}]"))
                stack.append((dict.__getitem__(a, x), dict.__getitem__(b, y), f"{at}[{y!r}]"))
            factory = getattr(b, "default_factory", None)
            if isinstance(b, collections.defaultdict) and a.default_factory is not factory:
                return f"{at}: default_factory {a.default_factory!r}"
        else:
            xa, xb = _contents(a), _contents(b)
            if len(xa) != len(xb):
                return f"{at}: {len(xa)} elements where {len(xb)} were expected"
            stack.extend((x, y, f"{at}[{i}]") for i, (x, y) in enumerate(zip(xa, xb)))
            if isinstance(b, collections.deque) and a.maxlen != b.maxlen:
                return f"{at}: maxlen {a.maxlen} where {b.maxlen} was expected"
        sa, sb = instance_state(a, derived=False), instance_state(b, derived=False)
        if sorted(sa) != sorted(sb):
            return f"{at}: attributes {sorted(sa)} where {sorted(sb)} were expected"
        stack.extend((sa[k], sb[k], f"{at}.{k}") for k in sb)
        for name in _cached(type(b)):
            stack.append((getattr(a, name), getattr(b, name), f"{at}.{name}"))
    return None


def _same_members(xa, xb, known, at):
    """Members of two sets, matched in any order.

    Plain leaves that are equal are the same member whatever their types
    (``{0} == {False}``): which of them a set keeps depends on the order its
    members came in, and placeholders (a ``Future`` hashes by an id of its
    own) come in no set order.
    """
    if len(xa) != len(xb):
        return f"{at}: {len(xa)} members where {len(xb)} were expected"
    left = list(xa)
    for y in xb:
        match = next((i for i, x in enumerate(left) if _same_member(x, y, known)), None)
        if match is None:
            return f"{at}: no member like {y!r} (members: {xa!r})"
        del left[match]
    return None


def _same_member(x, y, known):
    if type(x) in _PLAIN and type(y) in _PLAIN:
        return x == y and hash(x) == hash(y)
    return x is y or same_values(x, y, known) is None
