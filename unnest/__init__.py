"""unnest: resolve Dask futures within futures, to any depth, without polling."""

import warnings
from typing import TYPE_CHECKING, Any

from unnest import _models  # noqa: F401  (pydantic and attrs support, set up lazily)
from unnest._exceptions import ForgottenFutureError, HandOffUnavailable
from unnest.decorators import resolves_nested, resolving
from unnest.handoff import hand_off, hand_off_async
from unnest.resolve import unwrap, unwrap_async, unwrap_or_wait
from unnest.stream import as_resolved, as_resolved_async
from unnest.traverse import Key, allow_failure, quote, register_container, register_placeholder

if TYPE_CHECKING:  # at run time, __getattr__ below: it warns
    opaque = quote  # deprecated: unnest.quote

__version__ = "0.1.0"

__all__ = [
    "ForgottenFutureError",
    "HandOffUnavailable",
    "Key",
    "__version__",
    "allow_failure",
    "as_resolved",
    "as_resolved_async",
    "hand_off",
    "hand_off_async",
    "quote",
    "register_container",
    "register_placeholder",
    "resolves_nested",
    "resolving",
    "unwrap",
    "unwrap_async",
    "unwrap_or_wait",
]


def __getattr__(name: str) -> Any:
    # Deprecated names (PEP 562): they warn where they are used.
    if name == "opaque":
        warnings.warn(
            "unnest.opaque is deprecated and goes in the next release: it is "
            "unnest.quote now, the name Prefect gives it (Prefect 3's own "
            "`opaque` means something else)",
            DeprecationWarning,
            stacklevel=2,
        )
        return quote
    raise AttributeError(f"module 'unnest' has no attribute {name!r}")
