"""Where the input's placeholders sit: the paths :func:`unnest.as_resolved` yields.

Paths are read off the input's nodes once, before the call starts, in the
consumer's thread: each node's parents lead up to the root, and the
registry names each step (``Container.keys`` in :mod:`unnest.traverse`). A
placeholder met at several places (twice in a list, or inside a container
the input holds twice) has several paths, enumerated when it is asked for,
one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from unnest._graph import Node, parents
from unnest.traverse import HERE, ROOT

__all__ = ["Path", "Place", "elements", "paths", "places"]

Path = tuple[Any, ...]


class Place:
    """Where a node sits in the input: ``up`` lists ``(place above, element)``.

    The place above is None for the root (the element is then unused).
    """

    __slots__ = ("up",)

    def __init__(self) -> None:
        self.up: list[tuple[Place | None, Any]] = []


def places(nodes: list[Node]) -> dict[Node, Place]:
    """The place of each of ``nodes`` (the input's placeholders), up to the root.

    Read before the call starts: later, a node can gain parents inside
    resolved values, which are no places in the input.
    """
    found = {node: Place() for node in nodes}
    named: dict[Node, Any] = {}  # container node -> its children's elements
    work = list(nodes)
    while work:
        node = work.pop()
        place = found[node]
        for parent, i in parents(node):
            if parent.kind is ROOT:
                place.up.append((None, None))
                continue
            if parent in named:
                keys = named[parent]
            else:
                keys = named[parent] = elements(parent)
            above = found.get(parent)
            if above is None:
                above = found[parent] = Place()
                work.append(parent)
            place.up.append((above, i if keys is None else keys[i]))
    return {node: found[node] for node in nodes}


def elements(node: Node) -> list[Any] | None:
    """The path elements of a container node's children; None: their indices."""
    keys = node.kind.keys
    return None if keys is None else list(keys(node.obj))


def paths(place: Place) -> Iterator[Path]:
    """Every path from the root to ``place``, made one at a time.

    An explicit stack (paths can be as deep as the input), and a linked list
    of the elements below each step, so that a path costs its length and a
    structure that shares containers many times over costs nothing until its
    paths are asked for.
    """
    stack: list[tuple[Place | None, Any]] = [(place, None)]
    while stack:
        at, below = stack.pop()
        if at is None:
            path = []
            while below is not None:
                element, below = below
                path.append(element)
            yield tuple(path)
            continue
        for above, element in reversed(at.up):
            # HERE: a step that is none (an allow_failure, replaced by its value).
            step = above is not None and element is not HERE
            stack.append((above, (element, below) if step else below))
