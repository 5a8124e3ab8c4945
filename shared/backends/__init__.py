"""Backends: one small module each, one ``complete(Request) -> Response`` attempt, vendor errors
mapped to dspy.lm15 errors at the boundary. ``build_backend`` picks by BackendType."""

from __future__ import annotations

from shared.config import BackendType, UnifiedConfig


def build_backend(config: UnifiedConfig):
    """The backend object for an already-resolved (non-AUTO) config."""
    if config.backend is BackendType.MOCK:
        from shared.backends.mock import MockBackend

        return MockBackend(config)
    if config.backend is BackendType.DIRECT:
        from shared.backends.direct import DirectBackend

        return DirectBackend(config)
    if config.backend is BackendType.BEDROCK:
        from shared.backends.bedrock import BedrockBackend

        return BedrockBackend(config)
    if config.backend is BackendType.GATEWAY:
        from shared.backends.gateway import GatewayBackend

        return GatewayBackend(config)
    raise ValueError(f"resolve AUTO before building a backend (got {config.backend})")
