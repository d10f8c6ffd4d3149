"""pydantic models and attrs classes, walked with no registration (no cluster needed)."""

import concurrent.futures
import dataclasses
import functools
import pickle
import subprocess
import sys
from typing import Any

import attr
import attrs
import pydantic
import pytest
from helpers import failed
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, RootModel
from strategies import done

import unnest

# -- pydantic ---------------------------------------------------------------------


class Inner(BaseModel):
    b: list[Any]


class Plain(BaseModel):
    a: Any
    inner: Inner | None = None
    n: int = 0


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
    a: Any


class WithPrivate(BaseModel):
    a: Any
    _secret: str = PrivateAttr(default="s")
    _cache: dict = PrivateAttr(default_factory=dict)


class Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    value: Any = Field(alias="Value")


made = []


def _factory():
    made.append(1)
    return [len(made)]


class Factory(BaseModel):
    a: Any
    tag: list[int] = Field(default_factory=_factory)


class Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: Any


class Ignored(BaseModel):
    model_config = ConfigDict(extra="ignore")
    a: Any


class Validated(BaseModel):
    model_config = ConfigDict(validate_assignment=True)
    a: Any
    calls: list[str] = []

    @pydantic.field_validator("a")
    @classmethod
    def _no_futures(cls, value):
        VALIDATED.append(value)
        return value


VALIDATED: list[Any] = []


class Tricky(BaseModel):
    """Reading its fields the usual way runs code: unnest must not."""

    a: Any

    def __getattribute__(self, name):
        if name == "a":
            raise AssertionError("read through __getattribute__")
        return super().__getattribute__(name)


class Root(RootModel[list[Any]]):
    pass


@pydantic.dataclasses.dataclass
class PydanticDataclass:
    a: Any
    b: int = 1


@pydantic.dataclasses.dataclass(frozen=True)
class FrozenPydanticDataclass:
    a: Any


def test_pydantic_model_fields_are_resolved_to_any_depth():
    model = Plain(a=done(done(1)), inner=Inner(b=[0, done(2)]))
    result = unnest.unwrap({"m": model})["m"]
    assert type(result) is Plain and result.a == 1 and result.inner.b == [0, 2]
    assert type(result.inner) is Inner
    assert isinstance(model.a, concurrent.futures.Future)  # the input is not modified
    assert isinstance(model.inner.b[1], concurrent.futures.Future)


def test_pydantic_model_with_nothing_to_resolve_is_the_same_object():
    for model in [
        Plain(a=[1, {"x": 2}], inner=Inner(b=[3])),
        Frozen(a=1),
        WithPrivate(a=1),
        Extra(a=1, more=[2]),
        Root([1, 2]),
        PydanticDataclass(a=1),
    ]:
        assert unnest.unwrap(model) is model
        assert unnest.unwrap([model])[0] is model


def test_pydantic_fields_set_stays_as_it_was():
    model = Plain(a=done(1))
    result = unnest.unwrap(model)
    assert result.model_fields_set == {"a"}  # `inner` and `n` stay unset
    assert result.model_dump(exclude_unset=True) == {"a": 1}
    result.model_fields_set.add("n")
    assert model.model_fields_set == {"a"}  # not shared with the input
    constructed = Plain.model_construct(a=done(2), _fields_set={"n"})
    assert unnest.unwrap(constructed).model_fields_set == {"n"}


def test_pydantic_frozen_model_stays_frozen():
    result = unnest.unwrap(Frozen(a=done(1)))
    assert result.a == 1
    with pytest.raises(pydantic.ValidationError):
        result.a = 2
    assert hash(result) == hash(Frozen(a=1))


def test_pydantic_private_attributes_are_kept_not_shared():
    model = WithPrivate(a=done(1))
    model._secret = "mine"
    model._cache["k"] = done("cached")
    result = unnest.unwrap(model)
    assert result.a == 1 and result._secret == "mine"
    assert result._cache["k"] is model._cache["k"]  # kept as is, not walked
    result._secret = "changed"
    assert model._secret == "mine"


def test_pydantic_alias_and_default_factory_values_are_kept():
    result = unnest.unwrap(Aliased(Value=done(1)))
    assert result.value == 1 and result.model_dump(by_alias=True) == {"Value": 1}
    model = Factory(a=done(1))
    before = len(made)
    result = unnest.unwrap(model)
    assert result.tag == model.tag and len(made) == before  # no new default made


def test_pydantic_extra_values_are_walked():
    model = Extra(a=done(1), more=[done(2)], **{"not an identifier": done(3)})
    result = unnest.unwrap(model)
    assert result.a == 1 and result.more == [2]
    assert result.model_extra == {"more": [2], "not an identifier": 3}
    assert model.model_extra["more"][0] is not result.more[0]
    assert unnest.unwrap(Ignored(a=done(1), more=done(2))).a == 1


def test_pydantic_validators_are_not_rerun():
    model = Validated(a=done(1))
    count = len(VALIDATED)
    result = unnest.unwrap(model)
    assert result.a == 1 and len(VALIDATED) == count


def test_pydantic_fields_are_not_read_through_getattribute():
    model = Tricky(a=done(1))
    result = unnest.unwrap(model)
    assert result.__dict__["a"] == 1


def test_pydantic_root_model_and_dataclasses():
    assert unnest.unwrap(Root([done(1), 2])).root == [1, 2]
    result = unnest.unwrap(PydanticDataclass(a=done(1)))
    assert type(result) is PydanticDataclass and (result.a, result.b) == (1, 1)
    frozen = unnest.unwrap(FrozenPydanticDataclass(a=done(2)))
    assert frozen.a == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.a = 3


def test_pydantic_errors_name_the_field():
    model = Plain(a=1, inner=Inner(b=[0, failed(KeyError("nope"))]))
    with pytest.raises(KeyError) as info:
        unnest.unwrap({"m": model})
    assert info.value.__notes__[-1].endswith("at obj['m'].inner.b[1]")
    with pytest.raises(KeyError) as info:
        unnest.unwrap(Extra(a=1, **{"odd key": failed(KeyError("x"))}))
    assert info.value.__notes__[-1].endswith("at obj.model_extra['odd key']")


def test_pydantic_result_pickles():
    result = unnest.unwrap(WithPrivate(a=done([1])))
    again = pickle.loads(pickle.dumps(result))
    assert again == result and again._secret == "s"


# -- attrs --------------------------------------------------------------------------


@attrs.define
class Slotted:
    a: Any
    b: Any = None


@attrs.frozen
class FrozenAttrs:
    a: Any


@attr.s
class Classic:
    a = attr.ib()
    b = attr.ib(default=None)


@attrs.define
class Hidden:
    shown: Any
    derived: Any = attrs.field(init=False)
    never: Any = attrs.field(init=False)

    def __attrs_post_init__(self):
        POST_INIT.append(1)
        self.derived = ("derived", self.shown)


POST_INIT: list[int] = []


@attrs.define
class Checked:
    a: Any = attrs.field(validator=attrs.validators.instance_of(int))
    b: Any = attrs.field(default=0, on_setattr=attrs.setters.validate)


@attrs.define(slots=False)
class WithProperty:
    _a: Any

    @property
    def a(self):
        raise AssertionError("read through a property")


class Sub(Slotted):
    """Not decorated itself: attrs fields inherited."""


def test_attrs_classes_are_resolved_and_rebuilt_as_their_own_type():
    for make in [Slotted, FrozenAttrs, Classic]:
        obj = make(done(1))
        result = unnest.unwrap({"x": [obj]})["x"][0]
        assert type(result) is make and result.a == 1
        assert isinstance(obj.a, concurrent.futures.Future)
    assert type(unnest.unwrap(Sub(done(1), 2))) is Sub


def test_attrs_with_nothing_to_resolve_is_the_same_object():
    for obj in [Slotted([1]), FrozenAttrs(1), Classic(1), Hidden(1), Sub(1)]:
        assert unnest.unwrap(obj) is obj


def test_attrs_frozen_stays_frozen_and_dict_attributes_are_kept():
    result = unnest.unwrap(FrozenAttrs(done(1)))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.a = 2
    classic = Classic(done(1))
    classic.note = "kept"
    assert unnest.unwrap(classic).note == "kept"


def test_attrs_init_false_fields_and_no_post_init():
    obj = Hidden(done(1))
    calls = len(POST_INIT)
    result = unnest.unwrap(obj)
    assert result.shown == 1 and result.derived == ("derived", 1)
    assert len(POST_INIT) == calls  # __attrs_post_init__ is not run again
    assert not hasattr(result, "never")  # never assigned: stays unassigned


def test_attrs_validators_and_on_setattr_hooks_are_not_run():
    obj = Checked(1)
    object.__setattr__(obj, "b", done("not an int"))
    assert unnest.unwrap(obj).b == "not an int"


def test_attrs_fields_are_not_read_through_properties():
    assert unnest.unwrap(WithProperty(done(1)))._a == 1


def test_attrs_errors_name_the_field():
    obj = {"m": Slotted(1, [0, failed(KeyError("nope"))])}
    with pytest.raises(KeyError) as info:
        unnest.unwrap(obj)
    assert info.value.__notes__[-1].endswith("at obj['m'].b[1]")


# -- Registration ---------------------------------------------------------------------


@attr.s(frozen=True, hash=True, cache_hash=True)
class CachedHash:
    value = attr.ib()


@attr.s(frozen=True, hash=True, cache_hash=True, slots=True)
class SlottedCachedHash:
    value = attr.ib()


@pytest.mark.parametrize("cls", [CachedHash, SlottedCachedHash])
def test_attrs_cached_hash_is_the_resolved_objects_not_the_placeholders(cls):
    # Issue 17, bug 4: the rebuilt key kept the hash cached from the
    # placeholder, so the resolved dict could not find cls(42).
    key = cls(done(42))
    hash(key)  # cached now, from the future
    result = unnest.unwrap({key: "v"})
    assert result[cls(42)] == "v"
    assert hash(next(iter(result))) == hash(cls(42))


class WithCachedProperty(BaseModel):
    a: Any

    @functools.cached_property
    def shown(self) -> str:
        return f"a is {self.a!r}"


def test_pydantic_cached_property_is_not_carried_over():
    model = WithCachedProperty(a=done(1))
    assert model.shown.startswith("a is <Future")
    assert unnest.unwrap(model).shown == "a is 1"


def test_a_users_own_registration_wins():
    class Mine(BaseModel):
        a: Any

    @attrs.define
    class MineAttrs:
        a: Any

    def flatten(obj):
        return [], lambda values: obj  # nothing inside, says the user

    unnest.register_container(Mine, flatten)
    unnest.register_container(MineAttrs, flatten)
    model, obj = Mine(a=done(1)), MineAttrs(done(1))
    assert unnest.unwrap(model) is model and unnest.unwrap(obj) is obj


def test_a_users_registration_of_a_base_class_wins():
    class Base(BaseModel):
        a: Any

    class Child(Base):
        pass

    unnest.register_container(Base, lambda obj: ([], lambda values: obj))
    child = Child(a=done(1))
    assert unnest.unwrap(child) is child


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_classes_made_after_unnest_was_imported_are_walked():
    code = """if True:
        import concurrent.futures, unnest
        f = concurrent.futures.Future()
        f.set_result(1)
        assert unnest.unwrap([1, object()])[0] == 1  # classified before the imports
        import attrs, pydantic
        M = pydantic.create_model("M", a=(object, ...))
        A = attrs.make_class("A", ["a"])
        print(unnest.unwrap(M(a=f)).a, unnest.unwrap(A(f)).a)
    """
    assert _run(code) == "1 1"


def test_a_users_registration_before_the_support_is_set_up_wins():
    code = """if True:
        import concurrent.futures, unnest
        from pydantic import BaseModel
        unnest.register_container(BaseModel, lambda obj: ([], lambda values: obj))
        class M(BaseModel):
            a: object
        f = concurrent.futures.Future()
        f.set_result(1)
        m = M(a=f)
        print(unnest.unwrap(m) is m)
    """
    assert _run(code) == "True"
