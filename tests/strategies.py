"""Hypothesis strategies: nested structures of every container unnest walks."""

import collections
import dataclasses
import typing

from hypothesis import strategies as st


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
