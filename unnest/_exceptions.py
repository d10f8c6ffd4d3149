"""The public errors of unnest, and the texts and notes of the others.

Imports nothing else of unnest. Every error that names a place in the user's
structure gets the place as a Python accessor path (``obj['a'][2]``).
"""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Any

__all__ = ["ForgottenFutureError", "HandOffUnavailable"]


class ForgottenFutureError(RuntimeError):
    """The scheduler no longer knows a future's key, so its value is gone.

    This is what happens to futures that a task returns when the task did not
    hand them off: the scheduler forgets them as soon as the producing task
    drops its references. Use :func:`unnest.hand_off` in the producer, or
    decorate it with :func:`unnest.resolving` / :func:`unnest.resolves_nested`.
    ``reason`` says more where unnest knows more (a hand-off whose carrier was
    released, say); ``key`` and ``path`` name the future.
    """

    def __init__(self, key: Any, path: str, reason: str | None = None):
        self.key = key
        self.path = path
        self.reason = reason
        if reason is None:
            reason = (
                "This happens when a task returns futures without handing them off: "
                "the task's own references were the last ones. Call "
                "unnest.hand_off(...) on the value the task returns, or decorate the "
                "task with @unnest.resolving / @unnest.resolves_nested."
            )
        super().__init__(
            f"the scheduler has forgotten key {key!r} (the future at {path}), so its "
            f"value is lost. {reason}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.key, self.path, self.reason)


class HandOffUnavailable(RuntimeError):
    """The scheduler has no hand-off plugin and it could not be installed.

    The plugin runs on the scheduler, so the scheduler needs unnest
    installed, as it needs any library that the graphs it receives use.
    """


def add_note(exc: BaseException, note: str) -> BaseException:
    """Add ``note`` to ``exc`` once (PEP 678), and return ``exc``."""
    # The exception object may be shared (a future's stored exception); never
    # add the same note twice across repeated calls.
    notes = getattr(exc, "__notes__", None) or []
    if note not in notes:
        if sys.version_info >= (3, 11):
            with contextlib.suppress(Exception):
                exc.add_note(note)
        else:  # PEP 678 by hand: tracebacks on 3.10 do not print it
            with contextlib.suppress(Exception):
                exc.__notes__ = [*notes, note]  # type: ignore[attr-defined]
    return exc


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE
_FIELDS = (types.MemberDescriptorType, types.GetSetDescriptorType)
_OWN = {"args", "__traceback__", "__context__", "__cause__", "__suppress_context__", "__dict__"}


def detached(exc: BaseException) -> BaseException:
    """A copy of ``exc``, an exception that is not unnest's to change.

    The exception a client keeps for an erred future: raising the kept one
    would attach the frames it passes through -- the caller's, which hold
    the user's structure and so the future -- to the client's state of that
    key: the future could never be released while the client lives, and its
    key stayed on the scheduler (``Future.result`` has that leak). The
    exception a concurrent future holds: the user's object, which a note
    naming a place in one call must not reach (met again by another call,
    it had two). A copy has the same type, arguments, attributes, notes and
    traceback; notes unnest adds go on the copy. An exception that cannot
    be copied is returned as is.
    """
    import copy

    try:
        new = copy.copy(exc)
    except Exception:
        return exc
    if type(new) is not type(exc) or new is exc:
        return exc
    try:
        # A dict of its own: copy.copy may hand the copy the very __dict__
        # of the original (seen with exceptions a worker sent), and a note
        # added to the copy would land on the kept exception.
        new.__dict__ = dict(exc.__dict__)
    except (AttributeError, TypeError):
        return exc
    # What the builtin bases keep in C fields, which copy.copy leaves out
    # (SystemExit.code, StopIteration.value, OSError.errno, ...).
    for klass in type(exc).__mro__:
        if klass.__flags__ & _HEAPTYPE:
            continue
        for name, field in vars(klass).items():
            if type(field) in _FIELDS and name not in _OWN:
                with contextlib.suppress(Exception):
                    setattr(new, name, getattr(exc, name))
    new.__traceback__ = exc.__traceback__
    new.__cause__ = exc.__cause__
    new.__context__ = exc.__context__
    new.__suppress_context__ = exc.__suppress_context__
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        new.__notes__ = list(notes)  # type: ignore[attr-defined]  # else shared
    return new


def rebuild_error(obj: Any, where: str, error: BaseException) -> TypeError:
    return TypeError(
        f"cannot rebuild the {type(obj).__name__} at {where} from its resolved contents: {error!r}"
    )


def flatten_error(obj: Any, where: str, error: BaseException) -> TypeError:
    return TypeError(f"cannot take apart the {type(obj).__name__} at {where}: {error!r}")


def loop_thread_error(client: Any, name: str = "unwrap", use: str | None = None) -> RuntimeError:
    use = use or f"await unnest.{name}_async(...)"
    return RuntimeError(
        f"{name}() was called in the event loop thread of {client!r}; blocking "
        "there would deadlock (distributed hands back a coroutine in this "
        f"situation). Use `{use}` instead."
    )


def failure_group(name: str, failures: list[BaseException], discovered: int) -> BaseException:
    """The ``ExceptionGroup`` that ends a call under ``errors="group"``.

    ``BaseExceptionGroup`` gives an ``ExceptionGroup`` when every failure is
    an ``Exception``; on Python 3.10, from the ``exceptiongroup`` backport.
    """
    if sys.version_info >= (3, 11):
        from builtins import BaseExceptionGroup as group
    else:  # pragma: no cover  (3.10)
        from exceptiongroup import BaseExceptionGroup as group
    what = "placeholder" if discovered == 1 else "placeholders"
    error: BaseException = group(f"{name}: {len(failures)} of {discovered} {what} failed", failures)
    return error
