"""The registry and the walk over plain containers (no cluster needed)."""

import collections
import concurrent.futures
import copy
import dataclasses
import functools
import gc
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    Attrs,
    FrozenPair,
    Pair,
    Point,
    WithHidden,
    done,
    examples,
    same_types,
    structures,
    swap_leaves,
)

import unnest


@examples(0.15)  # of the profile's count: 300 in CI, 3,000 with --slow
@given(structures())
def test_nothing_to_resolve_gives_the_same_object(obj):
    assert unnest.unwrap(obj) is obj


@examples(0.15)  # of the profile's count: 300 in CI, 3,000 with --slow
@given(structures())
def test_finished_futures_swapped_in_give_equal_values_of_equal_types(obj):
    with_futures = swap_leaves(obj, done)
    before = repr(with_futures)
    result = unnest.unwrap(with_futures)
    assert same_types(result, obj)
    assert repr(with_futures) == before  # the input is never mutated


@pytest.mark.parametrize(
    "make",
    [
        list,
        tuple,
        lambda xs: Point(*xs),
        lambda xs: dict(enumerate(xs)),
        lambda xs: collections.OrderedDict(enumerate(xs)),
        lambda xs: collections.Counter(dict(enumerate(xs))),
        lambda xs: collections.defaultdict(set, enumerate(xs)),
        lambda xs: Attrs("tag", enumerate(xs)),
        lambda xs: collections.deque(xs, maxlen=5),
        lambda xs: Pair(*xs),
        lambda xs: FrozenPair(*xs),
    ],
)
def test_each_container_is_rebuilt_as_its_own_type(make):
    original = make([done(1), 2])
    result = unnest.unwrap(original)
    assert type(result) is type(original)
    assert list(result.values() if isinstance(result, dict) else _fields(result)) == [1, 2]
    if isinstance(original, collections.defaultdict):
        assert result.default_factory is set
    if isinstance(original, collections.deque):
        assert result.maxlen == 5
    if isinstance(original, Attrs):
        assert result.tag == "tag"


def _fields(obj):
    if dataclasses.is_dataclass(obj):
        return [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    return list(obj)


def test_sets_and_frozensets():
    assert unnest.unwrap({done(1), 2}) == {1, 2}
    result = unnest.unwrap(frozenset({done("a"), "b"}))
    assert type(result) is frozenset and result == {"a", "b"}


def test_dict_keys_that_are_resolvable_are_resolved():
    assert unnest.unwrap({done("k"): done("v"), "x": 1}) == {"k": "v", "x": 1}


def test_unhashable_resolved_key_is_a_clear_error():
    with pytest.raises(TypeError, match=r"cannot rebuild the dict at obj\['a'\]"):
        unnest.unwrap({"a": {done([1]): 1}})


def test_dataclass_init_false_field_and_custom_init_are_kept():
    @dataclasses.dataclass
    class Custom:
        a: object
        b: object = dataclasses.field(init=False)

        def __init__(self, a):
            self.a = a
            self.b = done("b")

    result = unnest.unwrap(Custom(done("a")))
    assert (result.a, result.b) == ("a", "b")
    hidden = unnest.unwrap(WithHidden(done(3)))
    # init=False field holds ("derived", <future>): walked and resolved too.
    assert hidden.shown == 3 and hidden.hidden == ("derived", 3)


def test_leaves_come_back_as_the_very_same_object():
    def gen():
        yield 1

    class Thing:
        pass

    import numpy as np

    leaves = ["s", b"b", 10**100, 1.5, np.arange(3), iter([1, 2]), gen(), Thing, Thing()]
    result = unnest.unwrap([*leaves, done(0)])
    assert all(a is b for a, b in zip(result, leaves))
    assert next(leaves[5]) == 1 and next(leaves[6]) == 1  # never consumed


def test_structural_sharing_and_no_mutation():
    clean = {"deep": [1, 2, {"x": (3,)}]}
    dirty = [done(1)]
    obj = {"clean": clean, "dirty": dirty, "again": dirty}
    snapshot = copy.copy(obj)
    result = unnest.unwrap(obj)
    assert result["clean"] is clean
    assert result["dirty"] is result["again"] == [1]
    assert (
        obj == snapshot
        and obj["dirty"] is dirty
        and isinstance(dirty[0], concurrent.futures.Future)
    )


def test_deep_nesting_is_iterative():
    obj = inner = []
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    assert unnest.unwrap(obj) is obj
    inner.append(done("bottom"))
    result = unnest.unwrap(obj)
    for _ in range(100_001):
        result = result[0]
    assert result == "bottom"


def test_long_chain_of_concurrent_futures():
    chain = "end"
    for _ in range(100_000):
        chain = done(chain)
    assert unnest.unwrap(chain) == "end"


def test_self_reference_without_anything_to_resolve_is_returned_as_is():
    a = [1, 2]
    a.append(a)
    d = {"a": a}
    d["d"] = d
    assert unnest.unwrap(a) is a
    assert unnest.unwrap(d) is d


def test_self_reference_with_something_to_resolve_is_a_value_error():
    a = [done(1)]
    a.append({"back": a})
    with pytest.raises(ValueError, match=r"cycle at obj: this list contains itself"):
        unnest.unwrap(a)
    b = {"x": [done(1)]}
    b["x"].append(b["x"])
    with pytest.raises(ValueError, match=r"cycle at obj\['x'\]"):
        unnest.unwrap(b)


class Box:
    def __init__(self, value):
        self.value = value


@unnest.register_container(Box, label=lambda box, i: ".value")
def _flatten_box(box):
    return [box.value], lambda values: Box(values[0])


class SubBox(Box):
    pass


def test_registered_user_container_is_walked():
    box = Box([done(1), Box(done(2))])
    result = unnest.unwrap(box)
    assert isinstance(result, Box) and result.value[0] == 1 and result.value[1].value == 2
    plain = Box([1])
    assert unnest.unwrap(plain) is plain
    assert isinstance(unnest.unwrap(SubBox(done(1))), Box)  # subclasses follow the base


def test_registered_container_errors_name_the_path():
    failed = concurrent.futures.Future()
    failed.set_exception(KeyError("nope"))
    with pytest.raises(KeyError) as info:
        unnest.unwrap({"a": Box([0, failed])})
    assert info.value.__notes__[-1].endswith("at obj['a'].value[1]")


def test_register_container_rejects_bad_arguments():
    with pytest.raises(TypeError, match="`cls` must be a type"):
        unnest.register_container("Box", lambda x: x)
    with pytest.raises(TypeError, match="`flatten` must be callable"):
        unnest.register_container(Box, 3)


def test_broken_flatten_is_reported_with_its_place():
    class Broken:
        pass

    def flatten(obj):
        raise RuntimeError("broken")

    unnest.register_container(Broken, flatten)
    with pytest.raises(TypeError, match=r"cannot take apart the Broken at obj\[1\]"):
        unnest.unwrap([0, Broken()])


class Record:
    pass


@dataclasses.dataclass
class RecordRow(Record):
    value: object


class RecordPoint(Record, collections.namedtuple("RecordPointBase", "x y")):
    __slots__ = ()


def test_a_registered_base_covers_dataclass_and_namedtuple_subclasses():
    # Issue 17, bug 3: the built-in dataclass and namedtuple rules won over a
    # registration of their base, though subclasses are promised the base's.
    seen = []

    def flatten(obj):
        seen.append(type(obj))
        children = list(obj) if isinstance(obj, tuple) else [obj.value]
        return children, lambda values: ("rebuilt", type(obj).__name__, values)

    unnest.register_container(Record, flatten)
    assert unnest.unwrap(RecordRow(done(1))) == ("rebuilt", "RecordRow", [1])
    assert unnest.unwrap(RecordPoint(done(1), 2)) == ("rebuilt", "RecordPoint", [1, 2])
    assert seen == [RecordRow, RecordPoint]


class Unreadable(list):
    """A list subclass whose own ways of being read all raise."""

    def __iter__(self):
        raise RuntimeError("no iteration here")

    def __getitem__(self, i):
        raise RuntimeError("no indexing here")

    def __len__(self):
        raise RuntimeError("no len here")


class UnreadableDict(dict):
    def __iter__(self):
        raise RuntimeError("no iteration here")

    def values(self):
        raise RuntimeError("no values here")


def test_builtin_subclasses_are_taken_apart_by_the_builtin_not_their_own_code():
    # Issue 17, bug 8: a list subclass whose __iter__ raises gave an error
    # naming no place, from the walk iterating it outside the named step. A
    # builtin subclass is taken apart as it is rebuilt, by the builtin's own
    # methods, so its overrides never run.
    rows = Unreadable([done(1), 2])
    result = unnest.unwrap({"rows": [0, rows]})
    assert type(result["rows"][1]) is Unreadable
    assert list.copy(result["rows"][1]) == [1, 2]
    table = UnreadableDict(a=done(1))
    assert dict.copy(unnest.unwrap(table)) == {"a": 1}


class Rows:
    def __init__(self, rows):
        self.rows = rows


class RaisingSequence:
    def __iter__(self):
        raise RuntimeError("no iteration here")


def test_children_a_registered_flatten_returns_are_read_at_a_named_place():
    # The class of bug 8: whatever user code raises while the walk reads a
    # container names the container's place.
    unnest.register_container(Rows, lambda obj: (RaisingSequence(), Rows))
    with pytest.raises(TypeError, match=r"cannot take apart the Rows at obj\['rows'\]\[1\]"):
        unnest.unwrap({"rows": [0, Rows([done(1)])]})
    unnest.register_container(Rows, lambda obj: obj.rows)  # not (children, rebuild)
    with pytest.raises(TypeError, match=r"at obj\[0\]: .*must return \(children, rebuild\)"):
        unnest.unwrap([Rows([done(1)])])


# -- Rebuilds write only into objects they made --------------------------------------


@dataclasses.dataclass
class CopiesToItself:
    value: object

    def __copy__(self):
        return self


@dataclasses.dataclass
class ReducesToAGlobal:
    value: object

    def __reduce__(self):
        return "A_GLOBAL"


A_GLOBAL = ReducesToAGlobal(None)


@dataclasses.dataclass(frozen=True)
class SlottedCopiesToItself:
    __slots__ = ("value",)
    value: object

    def __copy__(self):
        return self


@pytest.mark.parametrize(
    "make",
    [CopiesToItself, SlottedCopiesToItself, lambda f: A_GLOBAL.__init__(f) or A_GLOBAL],
    ids=["copy-returns-self", "slotted", "reduce-to-a-global"],
)
def test_a_rebuild_never_writes_into_the_input(make):
    # Issue 17, bug 2: dataclasses were rebuilt by copy.copy, which these
    # classes answer with the input itself; the resolved value was then
    # written into the user's object.
    future = done(5)
    obj = make(future)
    result = unnest.unwrap({"x": obj})
    assert result["x"] is not obj and result["x"].value == 5
    assert obj.value is future


@dataclasses.dataclass
class Described:
    value: object

    @functools.cached_property
    def described(self):
        return f"value {self.value!r}"


def test_cached_properties_of_the_placeholder_do_not_survive_a_rebuild():
    # Issue 17, bug 4: a value derived from the placeholder, cached on the
    # instance, came back on the rebuilt object.
    obj = Described(done(3))
    assert obj.described.startswith("value <Future")
    result = unnest.unwrap([obj])[0]
    assert result.described == "value 3"
    assert obj.described.startswith("value <Future")  # the input keeps its own


@given(st.lists(st.integers(), max_size=20))
def test_sets_of_futures(xs):
    assert unnest.unwrap({done(x) for x in xs} | {"plain"}) == set(xs) | {"plain"}


def _shared_without_other_references():
    dirty = [done(1)]
    return {"a": dirty, "b": (dirty,)}


def _cycle_without_other_references(resolvable):
    inner = [done(1) if resolvable else 1]
    inner.append(inner)
    return [[inner]]


def test_sharing_and_cycles_are_seen_without_outside_references():
    # Only the structure refers to these containers: the walker must still
    # notice that they are met twice (see resolve._refcount_gate).
    result = unnest.unwrap(_shared_without_other_references())
    assert result["a"] is result["b"][0] == [1]
    clean = _cycle_without_other_references(resolvable=False)
    assert unnest.unwrap(clean) is clean
    with pytest.raises(ValueError, match="cycle"):
        unnest.unwrap(_cycle_without_other_references(resolvable=True))


def test_shared_subtrees_are_walked_once():
    dag = [1]
    for _ in range(64):  # 2**64 paths: walking each would never end
        dag = [dag, (dag,)]
    assert unnest.unwrap(dag) is dag
    bottom = dag
    while isinstance(bottom[0], list):
        bottom = bottom[0]
    bottom.append(done("x"))
    result = unnest.unwrap(dag)
    assert result[0] is result[1][0]


# -- Types made at run time are not kept alive -------------------------------------


def _runtime_namedtuple():
    cls = collections.namedtuple("Made", "x y")
    return cls, cls(done(1), 2)


def _runtime_dataclass():
    cls = dataclasses.make_dataclass("Made", ["a"])
    return cls, cls(done(1))


def _runtime_leaf():
    cls = type("Made", (), {})
    return cls, [cls(), done(1)]


def _runtime_list_subclass():
    cls = type("Made", (list,), {})
    return cls, cls([done(1)])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "make", [_runtime_namedtuple, _runtime_dataclass, _runtime_leaf, _runtime_list_subclass]
)
def test_types_made_at_run_time_can_be_collected_after_unwrap(make):
    cls, obj = make()
    alive = weakref.ref(cls)
    unnest.unwrap(obj, timeout=5)
    unnest.unwrap({"nothing": [cls]}, timeout=5)  # the class itself, as a leaf
    del cls, obj
    gc.collect()
    assert alive() is None


@pytest.mark.timeout(30)
def test_classes_created_in_a_loop_can_be_collected_after_unwrap():
    refs = []
    for i in range(20):
        cls = type(f"Loop{i}", (), {"__init__": lambda self, i=i: setattr(self, "i", i)})
        refs.append(weakref.ref(cls))
        assert unnest.unwrap([cls(), done(i)], timeout=5)[1] == i
    del cls
    gc.collect()
    assert [r for r in refs if r() is not None] == []


# -- Rebuilt subclasses keep what they carried -------------------------------------


class TaggedDeque(collections.deque):
    """A keyword-only constructor argument kept as an attribute."""

    def __init__(self, iterable=(), maxlen=None, *, tag="default"):
        super().__init__(iterable, maxlen)
        self.tag = tag


class NamedDeque(collections.deque):
    """A required positional constructor argument."""

    def __init__(self, name, iterable=(), maxlen=None):
        super().__init__(iterable, maxlen)
        self.name = name


class PlainDeque(collections.deque):
    pass


class NamedSet(set):
    def __init__(self, name, items):
        super().__init__(items)
        self.name = name


class NamedOrderedDict(collections.OrderedDict):
    def __init__(self, name, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = name


class NamedCounter(collections.Counter):
    def __init__(self, name, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = name


class NamedDefaultDict(collections.defaultdict):
    def __init__(self, name, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = name


class SlottedDeque(collections.deque):
    __slots__ = ("tag",)


class SubNamedTuple(collections.namedtuple("Base", "a b")):
    pass  # no __slots__: instances have a __dict__


def _tagged_deque():
    obj = TaggedDeque([done(1), 2], 5, tag="mine")
    obj.extra = "x"
    return obj, [1, 2]


def _named_deque():
    return NamedDeque("n", [done(1), 2], 4), [1, 2]


def _plain_deque():
    obj = PlainDeque([done(1), 2], 3)
    obj.attr = 7
    return obj, [1, 2]


def _named_set():
    return NamedSet("n", [done(1), 2]), {1, 2}


def _named_ordered_dict():
    return NamedOrderedDict("n", [("a", done(1)), ("b", 2)]), [("a", 1), ("b", 2)]


def _named_counter():
    return NamedCounter("n", {"a": done(3)}), [("a", 3)]


def _named_defaultdict():
    return NamedDefaultDict("n", int, {"a": done(1)}), [("a", 1)]


def _sub_namedtuple():
    obj = SubNamedTuple(done(1), 2)
    obj.note = "n"
    return obj, (1, 2)


def _contents(obj):
    if isinstance(obj, dict):
        return list(obj.items())
    if isinstance(obj, set):
        return set(obj)
    if isinstance(obj, tuple):
        return tuple(obj)
    return list(obj)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "make",
    [
        _tagged_deque,
        _named_deque,
        _plain_deque,
        _named_set,
        _named_ordered_dict,
        _named_counter,
        _named_defaultdict,
        _sub_namedtuple,
    ],
)
def test_rebuilt_subclasses_keep_type_attributes_and_maxlen(make):
    obj, expected = make()
    attributes = dict(vars(obj))
    result = unnest.unwrap(obj, timeout=5)
    assert type(result) is type(obj)
    assert _contents(result) == expected
    assert vars(result) == attributes  # never an attribute lost or holding a future
    assert vars(obj) == attributes  # the input is not modified
    if isinstance(obj, collections.deque):
        assert result.maxlen == obj.maxlen
    if isinstance(obj, collections.defaultdict):
        assert result.default_factory is obj.default_factory


@pytest.mark.timeout(30)
def test_rebuilt_deque_subclass_keeps_its_slots():
    obj = SlottedDeque([done(1), 2], 3)
    obj.tag = "mine"
    result = unnest.unwrap(obj, timeout=5)
    assert type(result) is SlottedDeque
    assert list(result) == [1, 2] and result.maxlen == 3
    assert getattr(result, "tag", None) == "mine"


# -- opaque: handed on as is, never entered -----------------------------------------


def test_opaque_is_replaced_by_the_very_object_it_wraps():
    inner = [done(1), {"x": done(2)}]
    assert unnest.unwrap(unnest.quote(inner)) is inner
    result = unnest.unwrap({"resolved": done(3), "as_is": unnest.quote(inner), "n": 4})
    assert result == {"resolved": 3, "as_is": inner, "n": 4}
    assert result["as_is"] is inner
    assert isinstance(inner[0], concurrent.futures.Future)  # neither resolved nor modified


def test_opaque_in_a_resolved_value_and_opaque_of_opaque():
    futures = [done(1)]
    result = unnest.unwrap([done(unnest.quote(futures)), done(done(unnest.quote(7)))])
    assert result[0] is futures and result[1] == 7
    wrapped = unnest.quote(futures)
    assert unnest.unwrap(unnest.quote(wrapped)) is wrapped  # only one layer comes off


def test_opaque_shared_and_in_registered_containers():
    inner = [done(1)]
    wrapper = unnest.quote(inner)
    result = unnest.unwrap({"a": wrapper, "b": (wrapper,), "box": Box(wrapper)})
    assert result["a"] is result["b"][0] is result["box"].value is inner


def test_opaque_is_a_small_value_object():
    import pickle

    wrapper = unnest.quote([1, "a"])
    assert repr(wrapper) == "quote([1, 'a'])"
    assert wrapper == unnest.quote([1, "a"]) and wrapper != unnest.quote([2])
    assert wrapper != [1, "a"]
    assert hash(unnest.quote((1, 2))) == hash(unnest.quote((1, 2)))
    assert not hasattr(wrapper, "__dict__")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(wrapper, protocol)) == wrapper
    assert unnest.quote[int](3).obj == 3  # generic, for type checkers


def test_placeholders_look_inside_opaque():
    from unnest.traverse import CFUTURE, placeholders

    f, g = done(1), done(2)
    wrapper = unnest.quote({"f": f, "deeper": [unnest.quote((g,))]})
    assert {id(x) for x in placeholders([wrapper, wrapper], (CFUTURE,))} == {id(f), id(g)}


def test_resolving_passes_opaque_contents_to_the_function():
    seen = []

    @unnest.resolving
    def task(resolved, as_is):
        seen.append((resolved, as_is))
        return "ok"

    inner = [done(1)]
    assert task(done(5), unnest.quote(inner)) == "ok"
    assert seen[0][0] == 5 and seen[0][1] is inner
