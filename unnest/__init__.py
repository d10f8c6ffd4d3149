"""unnest: resolve Dask futures within futures, to any depth, without polling."""

from unnest import _models  # noqa: F401  (pydantic and attrs support, set up lazily)
from unnest._exceptions import ForgottenFutureError, HandOffUnavailable
from unnest.decorators import resolves_nested, resolving
from unnest.handoff import hand_off, hand_off_async
from unnest.resolve import unwrap, unwrap_async, unwrap_or_wait
from unnest.stream import as_resolved, as_resolved_async
from unnest.traverse import Key, opaque, register_container

__version__ = "0.1.0"

__all__ = [
    "ForgottenFutureError",
    "HandOffUnavailable",
    "Key",
    "__version__",
    "as_resolved",
    "as_resolved_async",
    "hand_off",
    "hand_off_async",
    "opaque",
    "register_container",
    "resolves_nested",
    "resolving",
    "unwrap",
    "unwrap_async",
    "unwrap_or_wait",
]
