"""What a waiting engine may ask of the call it serves: the contract, as a type.

The engines (:mod:`unnest._wait_distributed`, :mod:`unnest._wait_local`)
wait on placeholders and report each outcome; the call
(:class:`unnest.resolve.Call`) owns the graph, the loop and the task group,
and decides what an outcome means. Engines import this protocol, never the
call: imports go one way, from the call down to its engines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from unnest._graph import Node
from unnest._runtime import TaskGroup

__all__ = ["Caller"]


class Caller(Protocol):
    """The call an engine serves. Every method runs on :attr:`loop`."""

    #: Every coroutine an engine starts belongs to it.
    group: TaskGroup

    @property
    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the call runs on (engines exist only while it runs)."""
        ...

    @property
    def ended(self) -> bool:
        """The call is over: engines stop reporting and start nothing new."""
        ...

    @property
    def places_failures(self) -> bool:
        """May a failed placeholder leave the call running (its error in place,
        or kept for a group)? Then each failure must reach its own node."""
        ...

    @property
    def blocked_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop of the thread a blocking call blocks while it waits
        (``unwrap`` called in a coroutine), if any: it cannot run until the
        call is over."""
        ...

    def guard(self, func: Callable[..., Any]) -> Callable[..., None]:
        """``func`` as a loop callback whose exceptions end the call."""
        ...

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Report several outcomes, then hand on what they revealed at once."""
        ...

    def complete(self, node: Node, value: Any) -> list[Node]:
        """``node``'s placeholder gave ``value``; returns the placeholders in it."""
        ...

    def fail(self, node: Node, exc: BaseException) -> None:
        """``node``'s placeholder raised ``exc``."""
        ...

    def end(self, error: BaseException | None = None) -> None:
        """End the call now, with ``error`` (None: with the root's value)."""
        ...
