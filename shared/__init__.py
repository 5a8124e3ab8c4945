"""tidyq's shared package: the unified DSPy wrapper and what producers and workers both import."""

from shared.config import BackendType, CacheConfig, RetryConfig, UnifiedConfig, ValidationConfig
from shared.errors import BadInput, ConfigurationError, RetryLater, TidyqError, ValidationFailed
from shared.wrapper import UnifiedDSPyModule, UnifiedDSPyWrapper

__all__ = [
    "BackendType", "CacheConfig", "RetryConfig", "UnifiedConfig", "ValidationConfig",
    "UnifiedDSPyWrapper", "UnifiedDSPyModule",
    "TidyqError", "ConfigurationError", "BadInput", "ValidationFailed", "RetryLater",
]
