"""A reference resolver: what unnest must compute, worked out the slow, obvious way.

Written without unnest's engine: it uses only the markers of unnest's API
(``unnest.quote`` is not entered, ``unnest.Key`` names a dict key in a path,
``unnest.allow_failure`` excuses the failures below it)
and the ``flatten``/``label`` functions a test registered, as a user declares
them. ``tests/test_reference.py`` checks ``unwrap``, ``unwrap_async`` and
``as_resolved`` against it.

The model
---------
* **Sequential.** The input is walked depth first, children in order. A
  placeholder is resolved the moment it is met, one at a time -- a
  ``distributed.Future`` with ``.result()``, a ``concurrent.futures.Future``
  with ``.result()``, a dask collection with ``client.compute(...).result()``
  -- and what it resolved to is walked in turn.
* **Once per identity.** A distributed future is one placeholder per key,
  any other placeholder per object, a container per object: met again, it
  has the value it had (so a placeholder at two places gives one object).
* **Rebuilt on the path to a change only.** A container none of whose children
  changed is the very object; one that changed is a new object of its own
  type with its own instance state (dict and slots, shared, not copied),
  made without running the class's code, except a registered type, which
  its own ``rebuild`` makes. State derived from the old fields (a
  ``functools.cached_property`` value, attrs' cached hash) is not carried over.
  A subclass of a builtin is read through the builtin's own methods too (its
  own ``__iter__`` never runs); a registered type through its ``flatten``.
* **Places.** Each container and placeholder is a :class:`Spot`; every place
  it is met is a :class:`Link`. Its name in an error is unnest's notation
  (``obj['a'][2]``, ``.keys()[0]``, ``.x``, ``{element 1}``, ``.result()``);
  its path in ``as_resolved`` the tuple of steps (index, key, ``Key(key)``,
  field name, set member). A spot at several places may be named by any of
  them (unnest names the place whose container it finished walking first;
  inside resolved values, that depends on timing), but a spot of the input
  only by its places in the input: unnest walks the whole input before it
  waits for anything.
* **Errors.** A failing placeholder is a :class:`Failure` (its exception, at
  its names). A structure that cannot be resolved is a :class:`WalkError`: a
  container that contains itself and holds something to resolve, a resolved
  value that contains what is waiting for it (``ValueError``), a container
  that cannot be taken apart or rebuilt (``TypeError``). Errors in the input
  itself are found by the walk of the input (:meth:`Reference.places`) and
  end the call before anything is waited for; the others may come in any
  order. A failure is *excused* when every place of its placeholder -- in
  the input and in values, followed up to the input -- lies inside an
  ``unnest.allow_failure``: its exception takes its place, whatever the
  call's ``errors``. Exploring goes on past every error, so that every possible error is
  listed and every task of the input has finished when :func:`resolve`
  returns. What a computation made (a placeholder found below a
  ``.compute()``) is made anew by each run of it, unnest's and this one: its
  key is not known here.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import re
import types
from typing import Any, NamedTuple

import attr
import dask
import distributed
import pydantic

import unnest

TIMEOUT = 60  # seconds for any one placeholder


class Link(NamedTuple):
    """One place where a spot was met: child ``label`` of ``parent`` (None: the input)."""

    parent: Any  # Spot | None
    label: str  # unnest's notation of the step: "[2]", "['a']", ".x", ".result()", ...
    element: Any  # the step of an as_resolved path (None below a placeholder)


class Spot:
    """A container or placeholder of the call, once per identity."""

    def __init__(self, obj, placeholder):
        self.obj = obj  # kept: its id stays its own
        self.placeholder = placeholder
        self.input_links = []  # its places in the input, in depth-first order
        self.value_links = []  # its places inside resolved values
        self.changes = False  # (a container of the input) something inside it changes


class Failure(NamedTuple):
    """A placeholder that raised ``exc``: the error unnest raises, noted with a place."""

    spot: Spot
    exc: BaseException
    what: str  # "the future 'key'", as unnest's note says it

    def excused(self):
        """Does every place of the placeholder lie inside an ``allow_failure``?"""
        seen = set()
        work = [self.spot]
        while work:
            spot = work.pop()
            if id(spot) in seen:
                continue
            seen.add(id(spot))
            links = spot.input_links + spot.value_links
            if not links:
                return False
            for link in links:
                if link.parent is None:
                    return False  # the input itself, outside every allow_failure
                if not isinstance(link.parent.obj, unnest.allow_failure):
                    work.append(link.parent)
        return True

    def notes(self):
        """The notes unnest may add; ``'*'`` stands for a key not known here.

        What a computation made (a placeholder only found below a
        ``.compute()``) is made anew each time it is computed: unnest's run
        and this one make other keys.
        """
        out = []
        spot = self.spot
        found = names(spot)
        if spot.input_links and spot.value_links and _inside_allow(spot.input_links):
            # Excused where the input holds it, the failure is raised where a
            # value holds it again, outside: named there.
            found += [n for link in spot.value_links for n in link_names(link) if n not in found]
        for name in found:
            what = self.what
            if ".compute()" in name:
                what = re.sub(r"'.*'$", "'*'", what)
            out.append(f"raised by {what} at {name}")
        return out


def _inside_allow(links):
    """Is one of ``links`` inside an ``allow_failure`` (following the input up)?"""
    work, seen = list(links), set()
    while work:
        link = work.pop()
        parent = link.parent
        if parent is None or id(parent) in seen:
            continue
        seen.add(id(parent))
        if isinstance(parent.obj, unnest.allow_failure):
            return True
        work.extend(parent.input_links or parent.value_links)
    return False


class WalkError(NamedTuple):
    """A structure that cannot be resolved: an error that ends the call whatever else."""

    type: type
    why: str
    at: Any  # the Spot of the container, or the Link where a cycle closes
    in_input: bool

    def names(self):
        if isinstance(self.at, Spot):
            return names(self.at)
        found = link_names(self.at)
        if self.why == "waiting for":
            # unnest may name the cycle by the value met again, one step
            # below the placeholder that waits for it: its .result() there.
            found += [name + step for name in found for step in (".result()", ".compute()")]
        return found


BROKEN = type("Broken", (), {"__repr__": lambda self: "BROKEN"})()  # what an error leaves
ALLOWED = type("Allowed", (), {"__repr__": lambda self: "ALLOWED"})()  # no step of a path
WALKING = object()  # a container or placeholder whose parts are being walked


# -- Places --------------------------------------------------------------------------


def names(spot, limit=500):
    """The names unnest may give ``spot`` in an error (see the module docstring)."""
    links = spot.input_links or spot.value_links
    out = []
    for link in links:
        out.extend(n for n in link_names(link, limit) if n not in out)
        if len(out) >= limit:
            break
    return out[:limit]


def link_names(link, limit=500):
    if link.parent is None:
        return ["obj" + link.label]
    return [name + link.label for name in names(link.parent, limit)]


def paths(spot):
    """Every ``as_resolved`` path from the input to ``spot`` (a spot of the input)."""
    out = []
    for link in spot.input_links:
        if link.parent is None:
            out.append(())
        elif link.element is ALLOWED:
            out.extend(paths(link.parent))  # an allow_failure is no step
        else:
            out.extend((*path, link.element) for path in paths(link.parent))
    return out


def same_step(a, b):
    """Two steps of a path are the same: equal indices and names, the very keys and members."""
    if type(a) is unnest.Key or type(b) is unnest.Key:
        return type(a) is type(b) and same_step(a.key, b.key)
    if a is b:
        return True
    return type(a) is type(b) and type(a) in (int, str) and a == b


def normalized(name):
    """A name with the state of futures and the keys of made Delayed left out.

    A dict value is named by its key's ``repr``, which for a future says its
    status: pending when unnest names it, finished when the reference does.
    """
    name = re.sub(r"<Future: [^<>]*?key: ([^<>]*)>", r"<Future key: \1>", name)
    # A dict key that is a Delayed a computation made (below a .compute())
    # has a key of its run: unnest's run and this one make others.
    name = re.sub(r"Delayed\('[^']*'\)", "Delayed('*')", name)
    return re.sub(r"<Future at (0x[0-9a-f]+) state=[^<>]*>", r"<Future at \1>", name)


# -- Kinds ---------------------------------------------------------------------------


def is_placeholder(obj):
    if isinstance(obj, (distributed.Future, concurrent.futures.Future)):
        return True
    return not isinstance(obj, type) and dask.is_dask_collection(obj)


def describe(obj):
    """A placeholder as unnest's notes name it."""
    if isinstance(obj, distributed.Future):
        return f"the future {obj.key!r}"
    if isinstance(obj, concurrent.futures.Future):
        return "the concurrent.futures.Future"
    if hasattr(type(obj), "key"):
        return f"the dask collection {obj.key!r}"
    return f"the dask collection {type(obj).__name__}"


def suffix(obj):
    """The step from a placeholder to its value, in unnest's notation."""
    if isinstance(obj, (distributed.Future, concurrent.futures.Future)):
        return ".result()"
    return ".compute()"


def identity(obj):
    if isinstance(obj, distributed.Future):
        return ("key", obj.key)
    return ("object", id(obj))


class Parts(NamedTuple):
    """A container taken apart: its children, their labels and path steps, and how to rebuild it."""

    children: list
    labels: list
    elements: list
    rebuild: Any  # new children -> new container


def take_apart(obj, registered):
    """The :class:`Parts` of a container, or None for a leaf.

    A type registered by the user (or a subclass of one) is taken apart by
    its own ``flatten``, before any built-in kind: the user's word wins.
    Subclasses of builtins are read through the builtin's own methods, as
    they are rebuilt: none of the subclass's code runs.
    """
    cls = type(obj)
    if cls is unnest.allow_failure:  # replaced by its content, always
        return Parts([obj.obj], [""], [ALLOWED], lambda new: new[0])
    for base in cls.__mro__:
        if base in registered:
            flatten, label = registered[base]
            children, rebuild = flatten(obj)
            children = list(children)
            n = len(children)
            return Parts(children, [label(obj, i) for i in range(n)], list(range(n)), rebuild)
    if isinstance(obj, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make"):
        children = list(tuple.__iter__(obj))
        labels = [f".{field}" for field in cls._fields]
        return Parts(children, labels, list(range(len(children))), lambda new: _tuple(obj, new))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        present = [f.name for f in dataclasses.fields(obj) if hasattr(obj, f.name)]
        return _fields(obj, present, [getattr(obj, name) for name in present])
    if isinstance(obj, dict):
        keys = list(dict.keys(obj))
        children = keys + list(dict.values(obj))
        labels = [f".keys()[{i}]" for i in range(len(keys))] + [f"[{k!r}]" for k in keys]
        elements = [unnest.Key(k) for k in keys] + keys
        return Parts(children, labels, elements, lambda new: _dict(obj, new))
    if isinstance(obj, (list, tuple, collections.deque)):
        base = next(b for b in (list, tuple, collections.deque) if isinstance(obj, b))
        children = list(base.__iter__(obj))
        n = len(children)
        rebuild = {list: _list, tuple: _tuple, collections.deque: _deque}[base]
        labels = [f"[{i}]" for i in range(n)]
        return Parts(children, labels, list(range(n)), lambda new: rebuild(obj, new))
    if isinstance(obj, (set, frozenset)):
        members = list((set if isinstance(obj, set) else frozenset).__iter__(obj))
        labels = [f"{{element {i}}}" for i in range(len(members))]
        return Parts(members, labels, members, lambda new: _set(obj, new))
    if isinstance(obj, pydantic.BaseModel):
        state = object.__getattribute__(obj, "__dict__")
        present = [name for name in cls.model_fields if name in state]
        extra = obj.__pydantic_extra__ or {}
        children = [state[name] for name in present] + list(extra.values())
        labels = [f".{name}" for name in present] + [
            f".{key}" if str(key).isidentifier() else f".model_extra[{key!r}]" for key in extra
        ]
        return Parts(children, labels, present + list(extra), lambda new: _model(obj, present, new))
    if attr.has(cls):
        present = [f.name for f in attr.fields(cls) if hasattr(obj, f.name)]
        return _fields(obj, present, [getattr(obj, name) for name in present])
    return None


# -- Rebuilding ----------------------------------------------------------------------


def _with_state(obj, new):
    """``new`` given ``obj``'s instance attributes (the objects themselves), minus derived ones."""
    state = _instance_dict(obj)
    if state:
        object.__getattribute__(new, "__dict__").update(state)
    for _, slot in _slots(type(obj)):
        with contextlib.suppress(AttributeError):  # an unset slot stays unset
            slot.__set__(new, slot.__get__(obj, type(obj)))
    _forget_derived(new)
    return new


def _instance_dict(obj):
    try:
        return object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None


def _slots(cls):
    for klass in cls.__mro__:
        for name, found in vars(klass).items():
            if type(found) is types.MemberDescriptorType:
                yield name, found


def derived_names(cls):
    """Attributes that hold state computed from the fields: not the rebuilt object's."""
    found = {"_attrs_cached_hash"}  # attrs' cache_hash=True (None: not computed yet)
    for klass in cls.__mro__:
        found.update(
            name for name, v in vars(klass).items() if isinstance(v, functools.cached_property)
        )
    return found


def _forget_derived(new):
    state = _instance_dict(new)
    for name in derived_names(type(new)):
        if state is not None:
            state.pop(name, None)
        slot = dict(_slots(type(new))).get(name)
        if slot is not None:
            slot.__set__(new, None)


def _blank_copy(obj):
    """A new instance of ``obj``'s class with its state, made without the class's code."""
    return _with_state(obj, object.__new__(type(obj)))


def _fields(obj, present, children):
    def rebuild(new):
        copy = _blank_copy(obj)
        for name, value in zip(present, new):
            object.__setattr__(copy, name, value)
        return copy

    return Parts(children, [f".{name}" for name in present], list(present), rebuild)


def _list(obj, new):
    if type(obj) is list:
        return new
    copy = list.__new__(type(obj))
    list.extend(copy, new)
    return _with_state(obj, copy)


def _tuple(obj, new):
    if type(obj) is tuple:
        return tuple(new)
    return _with_state(obj, tuple.__new__(type(obj), new))


def _dict(obj, new):
    n = len(new) // 2
    pairs = list(zip(new[:n], new[n:]))
    cls = type(obj)
    if cls is dict:
        return dict(pairs)
    bases = (collections.OrderedDict, collections.defaultdict, dict)
    base = next(b for b in cls.__mro__ if b in bases)
    copy = base.__new__(cls)
    if base is collections.defaultdict:
        copy.default_factory = obj.default_factory
    for key, value in pairs:
        base.__setitem__(copy, key, value)
    return _with_state(obj, copy)


def _set(obj, new):
    cls = type(obj)
    if cls in (set, frozenset):
        return cls(new)
    if isinstance(obj, set):
        copy = set.__new__(cls)
        set.update(copy, new)
        return _with_state(obj, copy)
    return _with_state(obj, frozenset.__new__(cls, new))


def _deque(obj, new):
    if type(obj) is collections.deque:
        return collections.deque(new, maxlen=obj.maxlen)
    copy = collections.deque.__new__(type(obj))
    collections.deque.__init__(copy, new, obj.maxlen)
    return _with_state(obj, copy)


def _model(obj, present, new):
    copy = pydantic.BaseModel.__copy__(obj)  # pydantic's own shallow copy, not a subclass's
    state = object.__getattribute__(copy, "__dict__")
    state.update(zip(present, new))
    extra = copy.__pydantic_extra__
    if extra:
        extra.update(zip(list(extra), new[len(present) :]))
    return copy


# -- The resolver --------------------------------------------------------------------


class Reference:
    """One sequential resolution. See :func:`resolve`."""

    def __init__(self, client, registered):
        self.client = client
        self.registered = dict(registered)
        self.spots = {}  # ("object", id) or ("key", key) -> Spot
        self.failures = []
        self.input_errors = []  # in the order the walk of the input meets them
        self.value_errors = []
        self.resolved = {}  # identity -> value; WALKING while its value is walked
        self.containers = {}  # id -> value; WALKING while walked
        self.cyclic = set()  # ids of containers met again while walked
        self.input_cyclic = set()  # the same, in the walk of the input
        self.stack = []  # spots being walked, outermost first
        self.keep = []  # futures of ours (computations, take-overs), until the end

    def spot(self, obj):
        placeholder = is_placeholder(obj)
        key = identity(obj) if placeholder else ("object", id(obj))
        spot = self.spots.get(key)
        if spot is None:
            spot = self.spots[key] = Spot(obj, placeholder)
        return spot

    # -- the input: its places, and the errors of its shape --------------------------

    def places(self, obj, link):
        """Record the places of the input; True if the part at ``link`` changes."""
        if isinstance(obj, unnest.quote):
            return True  # replaced by what it wraps
        if is_placeholder(obj):
            self.spot(obj).input_links.append(link)
            return True
        if self.containers.get(id(obj)) is WALKING:
            self.input_cyclic.add(id(obj))  # a cycle: fine while nothing inside changes
            return False
        spot = self.spots.get(("object", id(obj)))
        if spot is not None:
            spot.input_links.append(link)
            return spot.changes
        try:
            parts = take_apart(obj, self.registered)
        except Exception:
            self.spot(obj).input_links.append(link)
            self.input_errors.append(WalkError(TypeError, "cannot take apart", link, True))
            return False
        if parts is None:
            return False
        spot = self.spot(obj)
        spot.input_links.append(link)
        self.containers[id(obj)] = WALKING
        changes = False
        for child, label, element in zip(parts.children, parts.labels, parts.elements):
            changes |= self.places(child, Link(spot, label, element))
        del self.containers[id(obj)]
        changes |= isinstance(obj, unnest.allow_failure)  # always replaced
        spot.changes = changes
        if changes and id(obj) in self.input_cyclic:
            self.input_errors.append(WalkError(ValueError, "contains itself", spot, True))
        return changes

    # -- resolving -------------------------------------------------------------------

    def walk(self, obj, link):
        if isinstance(obj, unnest.quote):
            return obj.obj
        if is_placeholder(obj):
            return self.placeholder(obj, link)
        return self.container(obj, link)

    def note(self, spot, link):
        """Record ``link`` as a place of ``spot`` if it is a place inside a value."""
        parent = link.parent
        if parent is not None and (parent.placeholder or not parent.input_links):
            spot.value_links.append(link)

    def closes_a_cycle(self, spot):
        """Is there a placeholder between ``spot`` (a container being walked) and here?"""
        below = self.stack[self.stack.index(spot) + 1 :]
        return any(s.placeholder for s in below)

    def container(self, obj, link):
        done = self.containers.get(id(obj))
        spot = self.spots.get(("object", id(obj)))
        if done is WALKING:
            if self.closes_a_cycle(spot):
                self.value_errors.append(WalkError(ValueError, "waiting for", link, False))
                return BROKEN
            self.cyclic.add(id(obj))
            return obj
        if done is not None:
            self.note(spot, link)
            return done
        in_input = spot is not None and bool(spot.input_links)
        try:
            parts = take_apart(obj, self.registered)
        except Exception:
            if not in_input:
                spot = self.spot(obj)
                self.note(spot, link)
                self.value_errors.append(WalkError(TypeError, "cannot take apart", spot, False))
            return BROKEN
        if parts is None:
            return obj
        spot = self.spot(obj)
        self.note(spot, link)
        self.containers[id(obj)] = WALKING
        self.stack.append(spot)
        new = [
            self.walk(child, Link(spot, label, element))
            for child, label, element in zip(parts.children, parts.labels, parts.elements)
        ]
        self.stack.pop()
        if isinstance(obj, unnest.allow_failure):
            value = new[0]  # replaced by its content, always
        elif all(n is c for n, c in zip(new, parts.children)):
            value = obj
        elif id(obj) in self.cyclic:
            if not in_input:  # the walk of the input found it already
                self.value_errors.append(WalkError(ValueError, "contains itself", spot, False))
            value = BROKEN
        else:
            try:
                value = parts.rebuild(new)
            except Exception:
                self.value_errors.append(WalkError(TypeError, "cannot rebuild", spot, False))
                value = BROKEN
        self.containers[id(obj)] = value
        return value

    def placeholder(self, obj, link):
        spot = self.spot(obj)
        self.note(spot, link)
        key = identity(obj)
        done = self.resolved.get(key)
        if done is WALKING:
            self.value_errors.append(WalkError(ValueError, "waiting for", link, False))
            return BROKEN
        if done is not None:
            return done[0]
        self.resolved[key] = WALKING
        self.stack.append(spot)
        try:
            value = self.fetch(obj)
        except Exception as e:
            e.__traceback__ = None  # no frame of ours kept alive by it
            self.failures.append(Failure(spot, e, describe(obj)))
            value = e
        else:
            value = self.walk(value, Link(spot, suffix(obj), None))
        self.stack.pop()
        self.resolved[key] = (value,)
        return value

    def fetch(self, obj):
        """The value of one placeholder, by the book."""
        if isinstance(obj, concurrent.futures.Future):
            return obj.result(timeout=TIMEOUT)
        if isinstance(obj, distributed.Future):
            future = obj if obj.status is not None else self.take_over(obj.key)
            return future.result(timeout=TIMEOUT)
        if self.client is None:
            return dask.compute(obj)[0]
        future = self.client.compute(obj)
        self.keep.append(future)  # a carrier of what its value hands off
        return future.result(timeout=TIMEOUT)

    def take_over(self, key):
        """A future of this client for ``key``, which a task returned (unbound).

        The client's own protocol: say that it wants the key, then ask for its
        state; the answer comes on the client's stream like any report.
        """
        future = distributed.Future(key, self.client)
        self.keep.append(future)
        self.client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
        self.client._send_to_scheduler({"op": "report-key", "key": key})
        return future


class Resolution:
    """What :func:`resolve` found."""

    def __init__(self, ref, value):
        self.value = value  # as with return_exceptions=True
        self.all_failures = ref.failures
        # The failures the call's errors= policy applies to.
        self.failures = [f for f in ref.failures if not f.excused()]
        self.input_errors = ref.input_errors
        self.value_errors = ref.value_errors
        self.pairs = [
            (path, ref.resolved[identity(spot.obj)][0])
            for spot in ref.spots.values()
            if spot.placeholder and spot.input_links and identity(spot.obj) in ref.resolved
            for path in paths(spot)
        ]

    def errors(self, errors):
        """The errors a call with ``errors=`` may raise; empty if it must return.

        Under ``"group"``, the failures are raised together, after everything
        else: see :meth:`group`.
        """
        if self.input_errors:
            return list(self.input_errors)
        if errors != "raise":
            return list(self.value_errors)
        return [*self.failures, *self.value_errors]

    def group(self, errors):
        """The failures an ``errors=`` call raises as one group (empty: none)."""
        if errors != "group" or self.input_errors or self.value_errors:
            return []
        return list(self.failures)


def resolve(obj, client, registered=()):
    """Resolve ``obj`` with the reference model; a :class:`Resolution`.

    ``client`` computes collections and takes over futures that tasks
    returned; ``registered`` maps a type to the ``(flatten, label)`` it was
    registered with. Everything reachable is resolved, past errors, and the
    futures this made are released before it returns.
    """
    ref = Reference(client, registered)
    root = Link(None, "", None)
    ref.places(obj, root)
    value = ref.walk(obj, root)
    ref.keep.clear()
    return Resolution(ref, value)


def follow(obj, path, registered=()):
    """The part of ``obj`` at an ``as_resolved`` path (a LookupError if there is none)."""
    for step in path:
        while type(obj) is unnest.allow_failure:  # no step
            obj = obj.obj
        parts = take_apart(obj, dict(registered))
        if parts is None:
            raise LookupError(f"{type(obj).__name__} has no parts")
        matches = [c for c, e in zip(parts.children, parts.elements) if same_step(e, step)]
        if len(matches) != 1:
            raise LookupError(f"{len(matches)} parts of the {type(obj).__name__} at step {step!r}")
        obj = matches[0]
    while type(obj) is unnest.allow_failure:
        obj = obj.obj
    return obj
