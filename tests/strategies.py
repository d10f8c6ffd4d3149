"""Hypothesis strategies, and the expected values that properties compare against.

Nested structures of every container unnest walks; a reference walk that
swaps leaves for finished futures (``swap_leaves``); a comparison of values
and types all the way down (``same_types``); and a snapshot of every object's
identity, to prove nothing was mutated (``snapshot``).
"""

import collections
import concurrent.futures
import copy
import dataclasses
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
