"""Registered placeholder types: how a call waits on them, and the built-in ones.

Design
------
A type registered with :func:`unnest.register_placeholder` (or built in,
below) is classified by the registry (:mod:`unnest.traverse`) as a
:class:`~unnest.traverse.Placeholder`, the third kind of type beside the
containers and unnest's own placeholders: the walk makes one node per object,
as for every placeholder. When the call hands that node on (``Call.start``),
:class:`PlaceholderWaiter` does one of two things:

* **Converts**, for every type registered by users: ``as_future(obj)`` gives a
  placeholder unnest already knows (a concurrent, asyncio or distributed
  future, or a dask collection), and the graph makes a *stand-in* node for it
  (:meth:`unnest._graph.Graph.stand_in`) whose value fills the object's node.
  The stand-in goes to the engine of its own kind, so a registered type needs
  no engine of its own and gets every engine's batching, errors and cleanup
  as they are: a ``distributed.Future`` joins the distributed engine's fetch
  chunks, a done concurrent future is taken in the local engine's batch.
  The stand-in is the only placeholder of its node (never shared with the
  same object met elsewhere), its value is walked like every value, errors
  are named as the object and at its place (``raised by the Job at
  obj['a']``), and its object is used as it is: engines never cancel or
  release a node's own object, so the user's futures stay theirs.
* **Hands the node to the type's own engine** (``Placeholder.engine``), built
  in only: Ray's refs (:mod:`unnest._ray`), which fetches many ready refs
  with one ``ray.get``, where a stand-in each would cost a round trip each.

``Placeholder.then`` (built in only) maps the stand-in's value before it is
walked: the future a Prefect future wraps gives a ``State``, whose result is
the task's value.

Built in, registered lazily by module name (``register_lazy``, as pydantic
and attrs in :mod:`unnest._models`): unnest imports none of these libraries,
and a user who has them registers nothing.

* **Ray** (``ray``): ``ray.ObjectRef``, with the engine of :mod:`unnest._ray`.
* **Prefect 3** (``prefect``): a ``PrefectWrappedFuture`` (the thread pool's
  ``PrefectConcurrentFuture``, prefect-dask's ``PrefectDaskFuture``) stands
  in as the future it wraps, which then goes to the engine of its kind --
  prefect-dask's ``distributed.Future`` to the distributed engine, batched;
  any other ``PrefectFuture`` as a concurrent future its done callback
  settles with its result.
* **Parsl**: nothing to register. ``AppFuture`` and ``DataFuture`` are
  ``concurrent.futures.Future`` subclasses, resolved as such (a
  ``DataFuture`` to its ``File``, as ``DataFuture.result()`` gives).
* **asyncio**: not a registration but a kind of the registry (``AFUTURE``),
  waited on by :mod:`unnest._wait_local` through the future's own loop.

A ``State``'s result is read by stepping Prefect's public ``State.aresult()``
coroutine once, in place: a result held in memory (the default, no result
persistence) comes back without the coroutine ever waiting, in about 10 µs,
where ``State.result()`` hands a coroutine to Prefect's loop thread and back
(about 1 ms a future: 1,000 futures took 0.9 s). A coroutine that does wait
(a result in storage) is closed, and ``State.result()`` is called in a
thread of its own, without an event loop, where Prefect reads synchronously
(on the loop's thread it would return a coroutine). Public API only, checked
on Prefect 3.9.1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from unnest._caller import Caller
from unnest._graph import Graph, Node
from unnest.traverse import (
    AFUTURE,
    CFUTURE,
    COLLECTION,
    FUTURE,
    Placeholder,
    kind_of,
    register_builtin,
    register_lazy,
)

__all__ = ["PlaceholderWaiter"]

# What as_future may give: the placeholders unnest waits on itself.
KNOWN = (FUTURE, CFUTURE, AFUTURE, COLLECTION)


class PlaceholderWaiter:
    """The registered placeholders of one call: converted, or handed to their engine."""

    def __init__(self, call: Caller, graph: Graph):
        self.call = call
        self.graph = graph
        self.engines: dict[Any, Any] = {}  # Placeholder.engine -> its instance for this call
        # Stand-ins whose value is mapped before it is walked (Placeholder.then).
        self.then: dict[Node, Callable[[Any], Any]] = {}

    def add(self, node: Node) -> Node | None:
        """The node to wait on for ``node``: its stand-in, or None.

        None: an engine of the type's own has it, or it failed (``as_future``
        raised, or gave something unnest does not wait on).
        """
        kind = node.kind
        if kind.engine is not None:
            engine = self.engines.get(kind.engine)
            if engine is None:
                engine = self.engines[kind.engine] = kind.engine(self.call)
            engine.add(node)
            return None
        try:
            future = kind.as_future(node.obj)
        except Exception as e:
            self.call.fail(node, e)
            return None
        known = kind_of(type(future))
        engine_kind = type(known) is Placeholder and known.engine is not None
        if known not in KNOWN and not engine_kind:
            self.call.fail(
                node,
                TypeError(
                    f"as_future() for {type(node.obj).__qualname__} returned a "
                    f"{type(future).__qualname__}, not a placeholder unnest knows "
                    "(a concurrent.futures.Future, an asyncio.Future, a "
                    "distributed.Future or a dask collection)"
                ),
            )
            return None
        child = self.graph.stand_in(node, future)
        if kind.then is not None:
            self.then[child] = kind.then
        if engine_kind:  # a built-in's wrapped future of an engine's type
            return self.add(child)
        return child

    def value(self, node: Node, value: Any) -> Any:
        """``value`` as ``node``'s placeholder gave it, mapped if it is a stand-in's."""
        then = self.then.pop(node, None)
        return value if then is None else then(value)

    async def aclose(self) -> None:
        """The call has ended: close the engines, forget the stand-ins."""
        self.then.clear()
        engines, self.engines = self.engines, {}
        for engine in engines.values():
            await engine.aclose()


# Ray ---------------------------------------------------------------------------


def _register_ray() -> None:
    import ray

    from unnest._ray import RayWaiter

    register_builtin(ray.ObjectRef, Placeholder(_ray_future, engine=RayWaiter))


def _ray_future(ref: Any) -> Any:
    return ref.future()  # what the engine replaces; kept for a complete Placeholder


# Prefect -----------------------------------------------------------------------


def _register_prefect() -> None:
    try:
        from prefect.futures import PrefectFuture
    except ImportError:  # Prefect 2, or a module named prefect that is not it
        return
    register_builtin(PrefectFuture, Placeholder(_prefect_stand_in, then=_state_value))


def _prefect_stand_in(future: Any) -> Any:
    """The future a Prefect future wraps, if unnest knows its kind; else one of ours."""
    wrapped = getattr(future, "wrapped_future", None)  # PrefectWrappedFuture's, public
    if wrapped is not None:
        known = kind_of(type(wrapped))
        if known in KNOWN or (type(known) is Placeholder and known.engine is not None):
            return wrapped
    ours: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def settle(done: Any) -> None:
        try:
            ours.set_result(done.result(raise_on_failure=True))
        except BaseException as e:
            ours.set_exception(e)

    future.add_done_callback(settle)
    return ours


def _state_value(value: Any) -> Any:
    """A Prefect ``State``'s result (raised if it failed); anything else as it is.

    What ``PrefectConcurrentFuture.result`` and ``PrefectDaskFuture.result``
    do with the value of the future they wrap.
    """
    from prefect.client.schemas.objects import State

    if not isinstance(value, State):
        return value
    read = getattr(value, "aresult", None)
    if read is not None:
        coro = read(raise_on_failure=True)
        try:
            coro.send(None)
        except StopIteration as done:  # it never waited: the result was in memory
            return done.value
        coro.close()  # it waits on storage: read it the synchronous way
    return _in_plain_thread(lambda: value.result(raise_on_failure=True))


def _in_plain_thread(func: Callable[[], Any]) -> Any:
    """``func()`` in a thread of its own, with no event loop; its outcome, here."""
    box: list[Any] = []

    def run() -> None:
        try:
            out = func()
            if asyncio.iscoroutine(out):  # a dispatcher that chose async after all
                out = asyncio.run(out)
            box.append((out, None))
        except BaseException as e:
            box.append((None, e))

    thread = threading.Thread(target=run, name="unnest-prefect-result", daemon=True)
    thread.start()
    thread.join()
    value, error = box[0]
    if error is not None:
        raise error
    return value


register_lazy("ray", _register_ray)
register_lazy("prefect", _register_prefect)
