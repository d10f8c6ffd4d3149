"""pydantic models and attrs classes, walked like dataclasses, with no registration.

Registered lazily (:func:`unnest.traverse.register_lazy`): the support for a
library is set up by the first classification that finds it imported, so
importing unnest imports neither pydantic nor attrs, and a model class made
at any time is walked. A user's own ``register_container`` for such a class
(or for a base class of it) wins over this.

What is walked: a pydantic ``BaseModel``'s fields and its extra values
(``extra="allow"``); an attrs class's fields, ``init=False`` ones too (a
field that was never assigned is skipped). pydantic dataclasses are
dataclasses and take the dataclass path of :mod:`unnest.traverse`.

Rebuilding runs none of the class's code -- no ``__init__``, validator,
``__attrs_post_init__``, ``on_setattr`` hook, ``__getattribute__`` or
property: :func:`unnest._instances.copy_instance` gives a new instance the
original's state, read and written where it is stored (the instance
``__dict__`` or the slot), with the changed fields replaced and derived
state (cached properties, attrs' hash cache) dropped. So a pydantic
model keeps its private attributes (a shallow copy of them),
``model_fields_set`` (a field unset in the input stays unset), the values of
its default-factory fields and its frozen-ness; validators are not run on the
resolved values (the values the model was validated with were placeholders).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from unnest._instances import MISSING, copy_instance, read
from unnest.traverse import Container, register_builtin, register_lazy

# pydantic ---------------------------------------------------------------------


def _register_pydantic() -> None:
    import pydantic

    if int(pydantic.VERSION.split(".")[0]) < 2:
        return  # pydantic 1 models are leaves
    from pydantic import BaseModel

    extra_slot = vars(BaseModel)["__pydantic_extra__"]
    fields_set_slot = vars(BaseModel)["__pydantic_fields_set__"]
    private_slot = vars(BaseModel)["__pydantic_private__"]

    def fields(obj: Any) -> tuple[list[str], dict[str, Any], dict[str, Any] | None]:
        state = object.__getattribute__(obj, "__dict__")
        names = [name for name in type(obj).model_fields if name in state]
        try:
            extra = extra_slot.__get__(obj)
        except AttributeError:
            extra = None
        return names, state, extra if type(extra) is dict else None

    def flatten(obj: Any) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
        names, state, extra = fields(obj)
        children = [state[name] for name in names]
        if extra:
            children += extra.values()
        n = len(names)

        def rebuild(values: list[Any]) -> Any:
            new = copy_instance(obj, dict(zip(names, values[:n])))
            if extra:
                extra_slot.__set__(new, dict(zip(extra, values[n:])))
            for slot in (fields_set_slot, private_slot):
                try:
                    value = slot.__get__(new)
                except AttributeError:
                    continue
                if isinstance(value, (set, dict)):
                    slot.__set__(new, value.copy())  # not shared with the input
            return new

        return children, rebuild

    def label(obj: Any, i: int) -> str:
        names, _, extra = fields(obj)
        if i < len(names):
            return f".{names[i]}"
        key = list(extra or ())[i - len(names)]
        return f".{key}" if str(key).isidentifier() else f".model_extra[{key!r}]"

    def keys(obj: Any) -> list[Any]:
        names, _, extra = fields(obj)
        return [*names, *(extra or ())]

    register_builtin(BaseModel, Container(flatten, label, keys))


# attrs ------------------------------------------------------------------------


def _register_attrs() -> None:
    import attr

    def present(obj: Any) -> tuple[list[str], list[Any]]:
        names, values = [], []
        for field in attr.fields(type(obj)):
            value = read(obj, field.name)
            if value is not MISSING:
                names.append(field.name)
                values.append(value)
        return names, values

    def flatten(obj: Any) -> tuple[Sequence[Any], Callable[[list[Any]], Any]]:
        names, values = present(obj)
        return values, lambda new: copy_instance(obj, dict(zip(names, new)))

    def label(obj: Any, i: int) -> str:
        return f".{present(obj)[0][i]}"

    register_builtin(attr.has, Container(flatten, label, lambda obj: present(obj)[0]))


register_lazy("pydantic", _register_pydantic)
register_lazy("attr", _register_attrs)
