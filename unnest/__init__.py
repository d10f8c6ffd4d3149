"""unnest: resolve Dask futures within futures, to any depth, without polling."""

from unnest.resolve import ForgottenFutureError, unwrap, unwrap_async, unwrap_or_wait
from unnest.traverse import register_container

__version__ = "0.1.0"

__all__ = [
    "ForgottenFutureError",
    "__version__",
    "register_container",
    "unwrap",
    "unwrap_async",
    "unwrap_or_wait",
]
