"""The graph of one call: nodes, the walk, filling, and the places of errors.

Knows nothing of how placeholders are waited on (that is the engines' job,
:mod:`unnest._wait_distributed` and :mod:`unnest._wait_local`); uses only the
registry of :mod:`unnest.traverse` to take containers apart and put them back.

Outcomes
--------
The walk sorts every element of a structure into one of three outcomes:

* ``SAME``: nothing inside to resolve; the object is reused as is;
* a new value: something inside was already resolved, the container was
  rebuilt (only containers on the path to a change are ever copied); or an
  :class:`unnest.quote`, replaced by the object it wraps (never entered);
* a pending :class:`Node`: something inside is still waiting.

Failures
--------
A placeholder's exception ends the call (``errors="raise"``: :meth:`Graph.fail`
returns it, with a note naming its place), or takes the placeholder's place
-- under ``errors="return"``, and inside an :class:`unnest.allow_failure`
(every path from the node up to the root passes through one; checked only
when a failure happens, and only in a call whose walk met one) -- or takes
its place *and* is kept, noted, for the ``ExceptionGroup`` that ends the call
once everything else is resolved (``errors="group"``).

Invariants
----------
* **One node per placeholder identity for the whole call**: a
  ``distributed.Future`` by its key and its client's state of that key (a
  stale future of a cancelled, re-submitted key is another placeholder),
  anything else by the object (the memo keeps the object, so its ``id`` stays
  unique). However often and whenever a
  placeholder is met again, it is the same node.
* **Every node has an explicit life**: ``PENDING``, then ``DONE`` with its
  value or ``FAILED`` with its exception; it never goes back. The walk never
  hands out a node that is not pending: meeting a done placeholder (or a
  container whose node is done) again yields its value at once, so a parent
  never attaches to a node that will not be filled again.
* A pending node knows its parents (several when a container or a future is
  referenced more than once); a node whose last pending slot is filled
  rebuilds its container and fills its parents in turn, with a work list,
  never recursion (a chain can be 100,000 nodes long). Filling the root ends
  the call (``Graph.finished``).
* A pending node that would have to wait for itself (a value that contains
  the very container or placeholder waiting for it) is a ``ValueError``
  naming the cycle, checked only where a pending node is met again, so a
  long chain of new futures costs nothing.
* The input is never modified; memory follows the path: only containers that
  can be met twice (shared, or part of a cycle) and containers that changed
  are memoized; CPython's reference counts tell the first cheaply
  (:func:`_refcount_gate`).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from typing import Any

from unnest._distributed import same_future
from unnest._exceptions import add_note, detached, flatten_error, rebuild_error
from unnest.traverse import (
    AFUTURE,
    ALLOWED,
    CFUTURE,
    COLLECTION,
    FUTURE,
    LEAF,
    OPAQUE,
    ROOT,
    Container,
    Placeholder,
    kind_of,
    known_kinds,
)

SAME = object()  # outcome: nothing inside to resolve
_MISS = object()  # a type not classified yet
_EXPANDING = object()  # memo marker: container on the walk stack (cycle check)


class State(enum.Enum):
    """A node's life: pending, then done (with its value) or failed (with its error)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


PENDING, DONE, FAILED = State


class Errors(enum.Enum):
    """What a placeholder's failure does to a call (the ``errors=`` option)."""

    RAISE = "raise"  # end the call with it
    RETURN = "return"  # put it in the placeholder's place
    GROUP = "group"  # put it in place, keep it; raise all as a group at the end


RAISE, RETURN, GROUP = Errors


class Node:
    """A container, placeholder or root whose value is not known yet.

    Lean, because a call holds one per pending container and placeholder and
    the garbage collector scans them all: the first parent is two slots (most
    nodes have one), further parents a list; a placeholder (and the root)
    has no ``values`` list, its value goes to ``value``.
    """

    __slots__ = (
        "kind",
        "npending",
        "obj",
        "others",
        "parent",
        "pidx",
        "rebuild",
        "state",
        "value",
        "values",
    )

    def __init__(
        self, obj: Any, kind: Any, rebuild: Any = None, values: Any = None, npending: int = 1
    ):
        self.obj = obj
        self.kind = kind  # a Container, FUTURE, CFUTURE, COLLECTION or ROOT
        self.rebuild = rebuild
        self.values: list[Any] | None = values  # a container's slots
        self.npending = npending
        self.parent: Node | None = None  # where the node's value goes
        self.pidx = 0  # ... in which slot of it
        self.others: list[tuple[Node, int]] | None = None  # further parents
        self.state = PENDING
        self.value: Any = None  # the value (DONE) or the exception (FAILED)


class _Frame:
    """A container on the walk's stack."""

    __slots__ = (
        "changes",
        "children",
        "cyclic",
        "index",
        "kind",
        "memoized",
        "obj",
        "pending",
        "rebuild",
    )

    def __init__(self, obj: Any, kind: Container, flat: Any, memoized: bool):
        self.obj = obj
        self.kind = kind
        self.children, self.rebuild = flat  # what kind.flatten(obj) returned
        self.index = 0  # the next child to look at
        self.changes: list[tuple[int, Any]] | None = None  # (i, new value)
        self.pending: list[tuple[int, Node]] | None = None  # (i, pending node)
        self.memoized = memoized  # in the memo: record its outcome there
        self.cyclic = False  # a child refers back to it


def _record(frame: _Frame, i: int, out: Any) -> None:
    """Note child ``i``'s outcome (not ``SAME``) in ``frame``."""
    if isinstance(out, Node):
        if frame.pending is None:
            frame.pending = []
        frame.pending.append((i, out))
    else:
        if frame.changes is None:
            frame.changes = []
        frame.changes.append((i, out))


# ---------------------------------------------------------------------------
# Places


def _label(node: Node, i: int) -> str:
    kind = node.kind
    if kind is ROOT:
        return ""
    if kind is FUTURE or kind is CFUTURE or kind is AFUTURE:
        return ".result()"
    if kind is COLLECTION:
        return ".compute()"
    if type(kind) is Placeholder:
        # A registered placeholder's one child is its stand-in, at its own
        # place; with an engine of its own (Ray), its value.
        return "" if kind.engine is None else ".result()"
    label: str = kind.label(node.obj, i)
    return label


def attach(child: Node, parent: Node, i: int) -> None:
    """Make slot ``i`` of ``parent`` wait for ``child``."""
    if child.parent is None:
        child.parent = parent
        child.pidx = i
    elif child.others is None:
        child.others = [(parent, i)]
    else:
        child.others.append((parent, i))


def parents(node: Node) -> list[tuple[Node, int]]:
    """Every ``(parent, slot)`` that waits for ``node``, the first first."""
    if node.parent is None:
        return []
    return [(node.parent, node.pidx), *(node.others or ())]


def path(node: Node, i: int) -> str:
    """Where slot ``i`` of ``node`` sits in the user's structure, as Python."""
    parts = []
    seen = set()
    while node.kind is not ROOT and id(node) not in seen and node.parent is not None:
        seen.add(id(node))
        parts.append(_label(node, i))
        node, i = node.parent, node.pidx
    return "obj" + "".join(reversed(parts))


def where(node: Node) -> str:
    """Where a node sits in the user's structure."""
    return path(node.parent, node.pidx) if node.parent is not None else "obj"


def describe(node: Node) -> str:
    parent = node.parent
    if parent is not None and type(parent.kind) is Placeholder and parent.kind.engine is None:
        return describe(parent)  # a stand-in: named as what it stands for
    if node.kind is FUTURE:
        return f"the future {node.obj.key!r}"
    if node.kind is CFUTURE:
        return "the concurrent.futures.Future"
    if node.kind is AFUTURE:
        return "the asyncio future"
    if type(node.kind) is Placeholder:
        return f"the {type(node.obj).__qualname__}"
    return f"the dask collection {collection_name(node.obj)}"


def collection_name(obj: Any) -> str:
    key = getattr(type(obj), "key", None)
    if key is not None:
        try:
            return repr(obj.key)
        except Exception:
            pass
    return type(obj).__name__


# ---------------------------------------------------------------------------
# The graph


class Graph:
    """The nodes of one call, and the walk that makes them.

    ``new`` lists the placeholder nodes discovered and not yet handed to an
    engine; the coordinator takes them with :meth:`take_new`. Walk errors
    (a container that cannot be taken apart or rebuilt, a cycle) are raised
    to the caller of :meth:`walk_input`, :meth:`complete` or :meth:`fail`:
    they end the call.
    """

    def __init__(
        self,
        errors: Errors,
        on_done: Callable[[Node, Any], None] | None = None,
        on_failed: Callable[[Node, BaseException | None], None] | None = None,
    ):
        self.errors = errors
        # Failures kept under errors="group", each with the note naming its
        # place, in the order they happened.
        self.failures: list[BaseException] = []
        # The walk met an allow_failure: a failure may be excused by its place.
        self.allowing = False
        self.excused: set[Node] = set()  # failed nodes excused by allow_failure
        self.tainted: set[int] = set()  # ids of values that hold kept failures
        # id of a value that holds an excused failure (a container rebuilt
        # around one, to the allow_failure) -> the node that failed: met again
        # outside every allow_failure, the failure counts there.
        self.excusals: dict[int, Node] = {}
        self.memo: dict[int, Any] = {}  # a container's Node, or (obj, outcome)
        self.by_key: dict[Any, Node] = {}
        self.new: list[Node] = []
        self.root = Node(None, ROOT)
        self.finished = False  # the root is filled; its value is root.value
        # The kinds of the types met in this call. A copy of the registry's
        # cache of static types, filled as the walk meets others: for the
        # call's length it keeps heap types alive, which the global cache
        # must not (see unnest.traverse), at the cost of one miss per type.
        self.kinds: dict[type, Any] = known_kinds()
        self.discovered = 0  # placeholders found so far
        self.resolved = 0  # of which done or failed
        # Told of every placeholder node done (value, or exception put in its
        # place), with its fully resolved value: unnest.stream. And of every
        # failure kept for the group (not in place for the user).
        self.on_done = on_done
        self.on_failed = on_failed

    def _classify(self, tp: type) -> Any:
        kind = self.kinds[tp] = kind_of(tp)
        return kind

    def take_new(self) -> list[Node]:
        new, self.new = self.new, []
        return new

    def stand_in(self, node: Node, placeholder: Any) -> Node:
        """A new node for ``placeholder``, waited on in place of ``node``'s.

        For a registered placeholder type (:mod:`unnest._placeholders`): its
        value fills ``node``, at ``node``'s place. A node of its own, not met
        by the walk, so it is never shared with the same placeholder met
        elsewhere (whose value is not transformed); the caller hands it to
        its engine (it is not queued in ``new``).
        """
        child = Node(placeholder, kind_of(type(placeholder)))
        attach(child, node, 0)
        self.discovered += 1
        return child

    # -- walking -----------------------------------------------------------

    def walk_input(self, obj: Any) -> Any:
        """The input's outcome: ``SAME``, its new value, or ``self.root``."""
        out = self.walk(obj, self.root, 0)
        if out is SAME or not isinstance(out, Node):
            return out
        attach(out, self.root, 0)
        return self.root

    def walk(self, obj: Any, parent: Node, pidx: int) -> Any:
        """The outcome of ``obj``: ``SAME``, a new value or a pending ``Node``.

        ``parent``/``pidx`` say where ``obj`` sits: they name places in error
        messages and bound the cycle check. Memory stays proportional to the
        path, not to the structure: only containers that may be met twice
        (shared, or part of a cycle) go in the memo. A container with a
        single referrer cannot be met twice, and CPython's reference count
        tells us so cheaply (``_refcount_gate``).
        """
        kinds = self.kinds
        try:
            kind = kinds[type(obj)]
        except KeyError:
            kind = self._classify(type(obj))
        if kind is LEAF:
            return SAME
        if type(kind) is not Container:
            return self._placeholder(obj, kind, parent, pidx, ())

        memo = self.memo
        hit = memo.get(id(obj))
        if hit is not None:
            return self._memo_outcome(hit, obj, parent, pidx, ())
        stack: list[_Frame] = []
        first = self._open(obj, kind, True, parent, pidx, stack)
        if first is None:
            return SAME
        stack.append(first)
        refcount = _refcount_gate()
        while True:
            # Scan the top frame's children from where it stopped: leaves are
            # passed over, placeholders and containers met before give their
            # outcome, a container met for the first time is opened. The hot
            # path: every element of the input passes here.
            frame = stack[-1]
            children = frame.children
            i = frame.index
            n = len(children)
            # References to an unshared child while we look at it: its slot in
            # `children` (plus its slot in the container when `children` is a
            # separate list), the loop variable and getrefcount's argument.
            base = 3 if children is frame.obj else 4
            descend = None
            while i < n:
                child = children[i]
                i += 1
                try:
                    kind = kinds[type(child)]
                except KeyError:
                    kind = self._classify(type(child))
                if kind is LEAF:
                    continue
                if type(kind) is Container:
                    if refcount is not None and refcount(child) <= base:
                        descend, memoize = child, False
                        break
                    hit = memo.get(id(child))
                    if hit is None:
                        descend, memoize = child, True
                        break
                    frame.index = i  # for the places named in errors
                    out = self._memo_outcome(hit, child, parent, pidx, stack)
                else:
                    frame.index = i
                    out = self._placeholder(child, kind, parent, pidx, stack)
                # _record, inlined: this is the walk's hot path.
                if out is SAME:
                    continue
                if type(out) is Node:
                    if frame.pending is None:
                        frame.pending = [(i - 1, out)]
                    else:
                        frame.pending.append((i - 1, out))
                elif frame.changes is None:
                    frame.changes = [(i - 1, out)]
                else:
                    frame.changes.append((i - 1, out))
            frame.index = i
            if descend is not None:
                opened = self._open(descend, kind, memoize, parent, pidx, stack)
                if opened is not None:
                    stack.append(opened)
                continue
            stack.pop()
            out = self._close(frame, parent, pidx, stack)
            if not stack:
                return out
            if out is not SAME:
                parent_frame = stack[-1]
                _record(parent_frame, parent_frame.index - 1, out)

    def _open(
        self,
        obj: Any,
        kind: Container,
        memoize: bool,
        parent: Node,
        pidx: int,
        stack: list[_Frame],
    ) -> _Frame | None:
        """Take container ``obj`` apart: its frame, or None if it holds leaves only.

        ``memoize``: it may be met again (shared, or in a cycle), so it goes
        in the memo, marked as being expanded until its outcome is known.
        """
        memo = self.memo
        if memoize:
            memo[id(obj)] = (obj, _EXPANDING)
        try:
            flat = kind.flatten(obj)
        except Exception as e:
            raise flatten_error(obj, self._place(parent, pidx, stack), e) from e
        # Most containers hold leaves only, or leaves and containers of
        # leaves only (records of small lists): settle them without a frame.
        # A container of leaves only needs no memo even when shared: it is
        # SAME wherever it is met, and in no cycle.
        if kind is ALLOWED:
            # Always replaced by its content, even one with nothing to resolve.
            self.allowing = True
            frame = _Frame(obj, kind, flat, memoize)
            frame.changes = []
            return frame
        kinds = self.kinds
        children = flat[0]
        j = 0
        m = len(children)
        while j < m:
            child = children[j]
            try:
                k = kinds[type(child)]
            except KeyError:
                k = self._classify(type(child))
            if k is not LEAF and (type(k) is not Container or not self._leaves(k, child)):
                break
            j += 1
        if j == m:
            if memoize:
                memo[id(obj)] = (obj, SAME)
            return None
        frame = _Frame(obj, kind, flat, memoize)
        frame.index = j  # the leaves before j need no second look
        return frame

    def _close(self, frame: _Frame, parent: Node, pidx: int, stack: list[_Frame]) -> Any:
        """The outcome of a container whose children have all been looked at."""
        if frame.changes is None and frame.pending is None:
            out = SAME
        else:
            out = self._finish(frame, parent, pidx, stack)
        if type(out) is Node:
            # A pending container is always remembered (its node keeps the
            # object, and so its id): a value that arrives later (a concurrent
            # future's, in this process) may refer to it again although it had
            # a single referrer now.
            self.memo[id(frame.obj)] = out
        elif frame.memoized or out is not SAME:
            # So is a changed one, with the object, for the same reason.
            self.memo[id(frame.obj)] = (frame.obj, out)
        return out

    def _leaves(self, kind: Container, obj: Any) -> bool:
        """Does ``obj`` hold leaves only? (False if it cannot be taken apart.)"""
        if kind is ALLOWED:
            return False  # replaced by its content: never the same object
        try:
            children = kind.flatten(obj)[0]
        except Exception:
            return False  # the walk takes it apart again and names the place
        kinds = self.kinds
        for child in children:
            try:
                if kinds[type(child)] is not LEAF:
                    return False
            except KeyError:
                if self._classify(type(child)) is not LEAF:
                    return False
        return True

    def _memo_outcome(self, hit: Any, obj: Any, parent: Node, pidx: int, stack: Any) -> Any:
        """The outcome of a container met before; ``hit`` is its memo entry.

        A memo entry is the node of a container that was pending (which keeps
        its object, and its value once done), or a pair of the object and its
        outcome (``_EXPANDING``, ``SAME`` or a new value).
        """
        if type(hit) is Node:
            return self._pending_again(hit, parent, pidx, stack)
        out = hit[1]
        if out is _EXPANDING:
            # A reference back to a container we are inside of: a cycle. It is
            # fine while that container turns out to hold nothing to resolve.
            for frame in stack:
                if frame.obj is obj:
                    frame.cyclic = True
            return SAME
        return out

    def _pending_again(self, node: Node, parent: Node, pidx: int, stack: Any) -> Any:
        """``node`` met again: its value if done, else itself (cycle-checked)."""
        if node.state is DONE:
            if self.excusals:
                failed = self.excusals.get(id(node.value))
                if failed is not None and not self._allowed_here(parent, stack):
                    return self._excused_elsewhere(failed, node, parent, pidx, stack)
            return node.value
        if node.state is FAILED:
            # Under errors="raise", only a failure that was excused by its
            # place: met again, it is excused by this place, or raised.
            excused = node in self.excused
            if self.errors is not RAISE and not excused:
                return node.value
            if self._allowed_here(parent, stack):
                return node.value
            exc = add_note(
                detached(node.value),
                f"raised by {describe(node)} at {self._place(parent, pidx, stack)}",
            )
            if self.errors is RAISE:
                raise exc
            if self.errors is GROUP:
                self.excused.discard(node)  # kept once
                self.failures.append(exc)
                self.tainted.add(id(node.value))
            return node.value
        if parent is not self.root and _reaches(node, parent):
            where = self._place(parent, pidx, stack)
            raise ValueError(
                f"cycle at {where}: a resolved value contains a container or "
                "placeholder that is waiting for that very value"
            )
        return node

    def _finish(self, frame: _Frame, parent: Node, pidx: int, stack: list[_Frame]) -> Any:
        obj = frame.obj
        if frame.cyclic:
            where = self._place(parent, pidx, stack)
            raise ValueError(
                f"cycle at {where}: this {type(obj).__name__} contains itself and "
                "holds something to resolve, so it cannot be rebuilt"
            )
        rebuild = frame.rebuild
        values = list(frame.children)
        for i, value in frame.changes or ():
            values[i] = value
        pending = frame.pending
        if pending is None:
            try:
                value = rebuild(values)
            except Exception as e:
                raise rebuild_error(obj, self._place(parent, pidx, stack), e) from e
            if (self.tainted or self.excusals) and frame.changes:
                self._carry([v for _, v in frame.changes], value)
            return value
        node = Node(obj, frame.kind, rebuild, values, len(pending))
        for i, child in pending:
            attach(child, node, i)
        return node

    def _place(self, parent: Node, pidx: int, frames: Any) -> str:
        """The path of the child each of ``frames`` is looking at, innermost last."""
        parts = [path(parent, pidx)]
        for frame in frames:
            parts.append(frame.kind.label(frame.obj, frame.index - 1))
        return "".join(parts)

    def _placeholder(self, obj: Any, kind: Any, parent: Node, pidx: int, stack: Any) -> Any:
        if kind is OPAQUE:
            return obj.obj  # a new value: what it wraps, not looked into
        if kind is COLLECTION:
            # dask.is_dask_collection, without importing dask for other types.
            try:
                graph = obj.__dask_graph__()
            except Exception:
                graph = None
            if graph is None:
                return SAME
        if kind is FUTURE:
            # A key's identity in a client is its FutureState: a stale future
            # of a key that was cancelled and submitted again has its own.
            # Keyed by the key alone while one state is met (the rule), by
            # (key, state) for the others.
            key = obj.key
            node = self.by_key.get(key)
            if node is not None and not same_future(node.obj, obj):
                key = (key, id(obj))
                node = self.by_key.get(key)
            if node is not None:
                return self._pending_again(node, parent, pidx, stack)
            node = self.by_key[key] = Node(obj, kind)
        else:
            hit = self.memo.get(id(obj))
            if hit is not None:
                return self._pending_again(hit, parent, pidx, stack)
            node = self.memo[id(obj)] = Node(obj, kind)
        self.new.append(node)
        self.discovered += 1
        return node

    # -- completing ----------------------------------------------------------

    def complete(self, node: Node, value: Any) -> list[Node]:
        """A placeholder produced ``value``: walk it and fill the node.

        Returns the placeholders discovered in ``value`` (also queued in
        ``new`` for :meth:`take_new`).
        """
        if node.state is not PENDING:
            return []
        if self.kinds.get(type(value), _MISS) is LEAF:
            # The common case -- a plain value -- needs no walk.
            self._fill(node, value)
            return []
        found = len(self.new)
        out = self.walk(value, node, 0)
        if isinstance(out, Node):
            attach(out, node, 0)
        else:
            self._fill(node, value if out is SAME else out)
        return self.new[found:] if len(self.new) > found else []

    def fail(self, node: Node, exc: BaseException, noted: bool = False) -> BaseException | None:
        """A placeholder raised ``exc``: the error that ends the call, or None.

        Under ``errors="return"``, and inside an ``allow_failure``, the
        exception takes the node's place as it is and None is returned; else
        a copy with a note naming the place, which ends the call
        (``errors="raise"``: returned) or is kept for the group and takes
        the place (``errors="group"``). ``noted``: ``exc`` is already such a
        copy, named in this call's terms (by a relay call).
        """
        if node.state is not PENDING:
            return None
        errors = self.errors
        if errors is RETURN or (self.allowing and excused(node)):
            if errors is not RETURN:
                self.excused.add(node)
                self.excusals[id(exc)] = node
            self._fill(node, exc)
            node.state = FAILED
            return None
        if not noted:
            # A copy: the exception is the user's (a concurrent future's) or
            # the client's; the note naming this call's place goes on ours.
            exc = add_note(detached(exc), f"raised by {describe(node)} at {where(node)}")
        if errors is GROUP:
            self.failures.append(exc)
            self.tainted.add(id(exc))
            self._fill(node, exc, exc)
            node.state = FAILED
            return None
        node.state = FAILED
        node.value = exc
        self.resolved += 1
        return exc

    def _carry(self, parts: list[Any], value: Any) -> None:
        """``value`` was built of ``parts``: it holds the failures they hold.

        Kept ones (``tainted``) and excused ones (``excusals``), marked by id.
        Called only while either is non-empty: nothing without failures.
        """
        tainted, excusals = self.tainted, self.excusals
        if tainted and any(id(part) in tainted for part in parts):
            tainted.add(id(value))
        for part in parts:
            failed = excusals.get(id(part))
            if failed is not None:
                excusals.setdefault(id(value), failed)
                return

    def _excused_elsewhere(
        self, failed: Node, node: Node, parent: Node, pidx: int, stack: Any
    ) -> Any:
        """``node``'s value holds ``failed``'s excused failure, met outside any allow_failure.

        It counts here, named at its place below this one: raised
        (``errors="raise"``), or kept for the group once (``"group"``).
        """
        below = _labels_down(node, failed)
        exc = add_note(
            detached(failed.value),
            f"raised by {describe(failed)} at {self._place(parent, pidx, stack)}{below}",
        )
        if self.errors is RAISE:
            raise exc
        if failed in self.excused:
            self.excused.discard(failed)  # kept once
            self.failures.append(exc)
        self.tainted.add(id(node.value))
        return node.value

    def _allowed_here(self, parent: Node, stack: Any) -> bool:
        """Is the place being walked (``parent`` and the frames) inside an allow_failure?"""
        if not self.allowing:
            return False
        if any(frame.kind is ALLOWED for frame in stack):
            return True
        return parent.kind is ALLOWED or excused(parent)

    def _fill(self, node: Node, value: Any, failure: BaseException | None = None) -> None:
        """Put ``value`` in slot 0 of ``node``; complete what that completes.

        ``failure``: the placeholder ``node`` failed with it and it is kept
        for the group (``value``, in its place, is no value of the user's).
        Under ``errors="group"``, every value that holds such a failure is
        marked (``tainted``, by id: each is kept by its node for the call's
        length), and the placeholders it fills are told to ``on_failed``, not
        ``on_done``: the streams yield good values only.

        A work list, not recursion, allocated only where a completed node has
        several parents.
        """
        tainted = self.tainted
        i = 0
        work: list[tuple[Node, int, Any]] | None = None
        while True:
            kind = node.kind
            if type(kind) is Container:
                values = node.values
                values[i] = value  # type: ignore[index]
                node.npending -= 1
                if node.npending:
                    kind = None  # not complete yet
                else:
                    try:
                        value = node.rebuild(values)
                    except Exception as e:
                        raise rebuild_error(node.obj, where(node), e) from e
                    if tainted or self.excusals:
                        self._carry(values, value)  # type: ignore[arg-type]
                    # It stays the container's memo entry: met again, its
                    # value (a new pair per container here cost allocation
                    # and collection: benchmarks/run.py, finished_futures).
                    node.values = node.rebuild = None
            elif kind is ROOT:
                self.finished = True
            else:
                self.resolved += 1
                if failure is not None or (tainted and id(value) in tainted):
                    if self.on_failed is not None:
                        self.on_failed(node, failure)
                    failure = None
                elif self.on_done is not None:
                    self.on_done(node, value)
            if kind is not None:
                node.state = DONE
                node.value = value
                parent = node.parent
                if node.others is not None:
                    if work is None:
                        work = []
                    work.extend((p, j, value) for p, j in node.others)
                if parent is not None:
                    node, i = parent, node.pidx
                    continue
            if not work:
                return
            node, i, value = work.pop()

    def clear(self) -> None:
        """Forget every node (the call has ended)."""
        self.memo.clear()
        self.by_key.clear()
        self.new.clear()
        # These keep nodes too, and so the user's placeholders: the call and
        # its engines refer to each other, and a placeholder must go with the
        # user's last reference, not with the next garbage collection.
        self.excused.clear()
        self.excusals.clear()
        self.failures.clear()
        self.tainted.clear()
        self.root = Node(None, ROOT)

    def pending_placeholders(self) -> list[Node]:
        """Placeholder nodes still waiting (for the timeout message)."""
        nodes = [node for node in self.by_key.values() if node.state is PENDING]
        nodes += [
            hit
            for hit in self.memo.values()
            if type(hit) is Node and type(hit.kind) is not Container and hit.state is PENDING
        ]
        return [node for node in nodes if node.parent is not None]


def _labels_down(top: Node, node: Node) -> str:
    """The steps from ``top`` down to ``node`` (one of its descendants), as Python."""
    seen = set()
    work: list[tuple[Node, list[str]]] = [(node, [])]
    while work:
        at, labels = work.pop()
        if at is top:
            return "".join(reversed(labels))
        if id(at) in seen:
            continue
        seen.add(id(at))
        work.extend((up, [*labels, _label(up, i)]) for up, i in parents(at))
    return ""


def excused(node: Node) -> bool:
    """Does every path from ``node`` up to the root pass through an allow_failure?"""
    seen = set()
    work = [node]
    while work:
        node = work.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        ups = parents(node)
        if not ups:
            return False  # the root, or a node not attached yet
        for parent, _ in ups:
            if parent.kind is ROOT:
                return False
            if parent.kind is not ALLOWED:
                work.append(parent)
    return True


def _reaches(start: Node, target: Node) -> bool:
    """Is ``start`` an ancestor of ``target`` (would waiting on it be a cycle)?"""
    seen = set()
    work = [target]
    while work:
        node = work.pop()
        if node is start:
            return True
        if id(node) in seen:
            continue
        seen.add(id(node))
        work.extend(p for p, _ in parents(node))
    return False


_gate: list[Callable[[Any], int] | None] = []


def _refcount_gate() -> Callable[[Any], int] | None:
    """``sys.getrefcount`` if it tells unshared containers apart here, else None.

    Checked once, on this interpreter, with the walker itself: a shared child
    and a cycle must land in the memo. Where they would not (another
    implementation, or a CPython that stops counting some references), every
    container is memoized instead: slower and bigger, never wrong.
    """
    if not _gate:
        _gate.append(None)  # while checking, and if the check fails
        getrefcount = getattr(sys, "getrefcount", None)
        if getrefcount is not None:
            _gate[0] = getrefcount
            ok = _memoizes(_shared_pair) and _memoizes(_cycle)
            _gate[0] = getrefcount if ok else None
    return _gate[0]


def _shared_pair() -> tuple[Any, Any]:
    # Not leaves only: a container of leaves only is never memoized (it is
    # SAME wherever it is met), so it would prove nothing here.
    shared = [[1]]
    return {"a": [shared], "b": (shared,)}, shared


def _cycle() -> tuple[Any, Any]:
    inner: list[Any] = [1]
    inner.append(inner)
    return [[inner]], inner


def _memoizes(make: Callable[[], tuple[Any, Any]]) -> bool:
    obj, target = make()
    target_id = id(target)
    del target  # only the structure refers to it now
    graph = Graph(RAISE)
    graph.walk(obj, graph.root, 0)
    return target_id in graph.memo
