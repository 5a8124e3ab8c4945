"""tidyq: a job queue for DSPy programs. The public import package.

    from tidyq import Client, UnifiedDSPyWrapper, UnifiedConfig, BackendType

A thin facade over the implementation packages (shared/, producers/, workers/), so user code,
the docs and migrated code never import a top-level name as generic as ``shared``. Names resolve
lazily: ``import tidyq`` (or ``from tidyq import Client``) does not import DSPy (~4 s); only the
wrapper's names do. Submodules such as ``tidyq.assertions`` are imported only when asked for.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from shared.lazy import lazy_exports

try:
    __version__ = version("tidyq")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

_EXPORTS = {
    "AsyncClient": "producers.async_client", "AsyncJob": "producers.async_client",
    "Client": "producers.client", "Job": "producers.client", "JobFailed": "producers.client",
    "JobNotFound": "producers.client", "JobTimeout": "producers.client",
    "UnifiedDSPyWrapper": "shared.wrapper", "UnifiedDSPyModule": "shared.wrapper",
    "UnifiedConfig": "shared.config", "RetryConfig": "shared.config", "CacheConfig": "shared.config",
    "ValidationConfig": "shared.config", "BackendType": "shared.config", "Target": "shared.config",
    "TidyqError": "shared.errors", "BadInput": "shared.errors", "ConfigurationError": "shared.errors",
    "ValidationFailed": "shared.errors", "RetryLater": "shared.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
