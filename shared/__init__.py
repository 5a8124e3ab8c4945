"""tidyq's shared package: the unified DSPy wrapper and what producers and workers both import.

Names are resolved lazily: `import shared.config` (every CLI command, the producers) must not pay
for importing DSPy (~4 s); only code that touches the wrapper does.
"""

from shared.lazy import lazy_exports

_EXPORTS = {
    "BackendType": "shared.config", "CacheConfig": "shared.config", "RetryConfig": "shared.config",
    "UnifiedConfig": "shared.config", "ValidationConfig": "shared.config", "Target": "shared.config",
    "TidyqError": "shared.errors", "ConfigurationError": "shared.errors", "BadInput": "shared.errors",
    "ValidationFailed": "shared.errors", "RetryLater": "shared.errors",
    "UnifiedDSPyWrapper": "shared.wrapper", "UnifiedDSPyModule": "shared.wrapper",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
