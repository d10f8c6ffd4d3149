"""Copies of objects with instance state, made without running their code.

The rebuild of a dataclass, an attrs class, a pydantic model or a subclass of
a builtin container. Imports nothing else of unnest.

Rules, each forced by an input that broke the one before:

* **A new object, always.** The copy comes from the first built-in base's
  ``__new__``, never from ``copy.copy``: a ``__copy__`` that returns
  ``self``, or a ``__reduce__`` that returns a global's name, hands back the
  input itself, and the rebuild then wrote the resolved values into the
  user's object (issue 17). Nothing runs of the class's own code: no
  ``__init__``, ``__post_init__``, validator, ``__getattribute__`` or
  ``__setattr__``.
* **The state as stored**: the instance ``__dict__`` (a dict of the copy's
  own) and every slot, read and written through the slot descriptors.
* **No derived state**: values computed from the object's old contents
  must not survive a change of contents. ``functools.cached_property``
  values (in ``__dict__``) are dropped; attrs' hash cache
  (``cache_hash=True``) is reset, as attrs' own ``__init__`` does, so the
  copy hashes its resolved fields, not the placeholder's.
"""

from __future__ import annotations

import contextlib
import functools
import types
import weakref
from typing import Any

__all__ = ["copy_instance", "read", "slot"]

MISSING = object()
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE
# attrs keeps the cached hash of a cache_hash=True class here (attr._make),
# set to None by its __init__ and filled by the first __hash__.
_ATTRS_HASH_CACHE = "_attrs_cached_hash"

# Per class: its slot descriptors, and the names of its cached properties.
# Weak keys: classes made at run time must be freed with their last instance.
_layouts: weakref.WeakKeyDictionary[type, tuple[tuple[Any, ...], tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def slot(cls: type, name: str) -> Any:
    """The slot descriptor that stores ``name`` on ``cls``'s instances, or None.

    Looked up past properties or other descriptors of the same name.
    """
    for klass in cls.__mro__:
        found = vars(klass).get(name)
        if type(found) is types.MemberDescriptorType:
            return found
    return None


def read(obj: Any, name: str) -> Any:
    """``obj.name`` as stored (slot or ``__dict__``), or ``MISSING``."""
    descriptor = slot(type(obj), name)
    try:
        if descriptor is not None:
            return descriptor.__get__(obj, type(obj))
        return object.__getattribute__(obj, "__dict__")[name]
    except (AttributeError, KeyError):
        return MISSING


def _layout(cls: type) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    try:
        return _layouts[cls]
    except KeyError:
        pass
    slots = []
    cached = []
    seen = set()
    for klass in cls.__mro__:
        for name, found in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            if type(found) is types.MemberDescriptorType:
                slots.append(found)
            elif isinstance(found, functools.cached_property):
                cached.append(found.attrname or name)
    layout = _layouts[cls] = (tuple(slots), tuple(cached))
    return layout


def blank(cls: type) -> Any:
    """An instance of ``cls`` made by its first built-in base's ``__new__``."""
    for base in cls.__mro__:
        if not base.__flags__ & _HEAPTYPE:
            return base.__new__(cls)  # type: ignore[call-overload]
    raise TypeError(f"{cls.__name__} has no built-in base")  # pragma: no cover


def copy_instance(obj: Any, changes: dict[str, Any], new: Any = None) -> Any:
    """A copy of ``obj``'s instance state, with ``changes`` to its attributes.

    ``new`` is the object to give the state to (a subclass of a builtin
    container, already filled through the builtin's methods); by default a
    :func:`blank` instance of ``obj``'s class. Never ``obj`` itself.
    """
    cls = type(obj)
    if new is None:
        new = blank(cls)
    if new is obj:  # pragma: no cover  (a bug of ours: never write into the input)
        raise AssertionError("a rebuild must make a new object")
    slots, cached = _layout(cls)
    try:
        state = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        state = None  # slots only
    if state:
        state = dict(state)
        for name in cached:
            state.pop(name, None)
        object.__setattr__(new, "__dict__", state)
    for descriptor in slots:
        with contextlib.suppress(AttributeError):  # an unset slot stays unset
            descriptor.__set__(new, descriptor.__get__(obj, cls))
    for name, value in changes.items():
        descriptor = slot(cls, name)
        if descriptor is not None:
            descriptor.__set__(new, value)
        else:
            object.__getattribute__(new, "__dict__")[name] = value
    if read(new, _ATTRS_HASH_CACHE) is not MISSING:
        descriptor = slot(cls, _ATTRS_HASH_CACHE)
        if descriptor is not None:
            descriptor.__set__(new, None)
        else:
            object.__getattribute__(new, "__dict__")[_ATTRS_HASH_CACHE] = None
    return new
