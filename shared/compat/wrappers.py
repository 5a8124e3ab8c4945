"""Deprecated stand-ins for the legacy wrapper classes and configure function, as thin adapters
over UnifiedDSPyWrapper. Each warns with DeprecationWarning naming its replacement; `tidyq migrate`
rewrites the calls for good."""

from __future__ import annotations

import warnings
from typing import Any

import dspy

from shared.compat.legacy_config import ENTRY_POINTS, build_config

REPLACEMENT = "shared.UnifiedDSPyWrapper(shared.UnifiedConfig.from_env(...))"


def _deprecated(name: str, replacement: str = REPLACEMENT) -> None:
    warnings.warn(f"{name} is deprecated: use {replacement} (run `tidyq migrate` to rewrite your code)",
                  DeprecationWarning, stacklevel=3)


class _LegacyWrapper:
    """Shared shape of the three legacy wrapper classes: built from keyword settings,
    ``create_module(signature)`` -> module with ``predict(**inputs)``, ``predict(signature, **inputs)``."""

    _entry = ""

    def __init__(self, *args: Any, **kwargs: Any):
        from shared import UnifiedDSPyWrapper

        _deprecated(self._entry)
        self._wrapper = UnifiedDSPyWrapper(build_config(ENTRY_POINTS[self._entry], args, kwargs))

    @property
    def unified(self):
        """The UnifiedDSPyWrapper doing the work."""
        return self._wrapper

    @property
    def config(self):
        return self._wrapper.config

    @property
    def lm(self):
        return self._wrapper.lm

    def create_module(self, signature: Any):
        return self._wrapper.create_module(signature)

    def predict(self, signature: Any, **inputs: Any) -> dspy.Prediction:
        return self._wrapper.create_module(signature).predict(**inputs)

    def get_info(self) -> dict[str, Any]:
        return self._wrapper.get_info()

    def close(self) -> None:
        self._wrapper.close()


class DSPyEnhancedWrapper(_LegacyWrapper):
    """Legacy ``tidyllm.dspy_enhanced.DSPyEnhancedWrapper(model=None, **settings)``; backend from
    ``backend=`` or the environment (TIDYQ_BACKEND, else AUTO)."""

    _entry = "DSPyEnhancedWrapper"


class DSPyBedrockEnhancedWrapper(_LegacyWrapper):
    """Legacy ``tidyllm.dspy_bedrock_enhanced.DSPyBedrockEnhancedWrapper(model_id=None, region=None,
    **settings)``; backend TIDYQ_BACKEND, else Bedrock."""

    _entry = "DSPyBedrockEnhancedWrapper"


class DSPyWrapper(_LegacyWrapper):
    """Legacy ``tidyllm.dspy_wrapper.DSPyWrapper(model=None, **settings)``, the simple wrapper;
    backend TIDYQ_BACKEND, else DIRECT (LiteLLM/DSPy providers)."""

    _entry = "DSPyWrapper"


def configure_dspy_with_gateway(*args: Any, **kwargs: Any) -> dspy.LM:
    """Legacy ``tidyllm.dspy_gateway_backend.configure_dspy_with_gateway(model, gateway_url=None,
    **settings)``: configures DSPy globally with an LM routed through the MLflow AI Gateway (backend
    TIDYQ_BACKEND, else GATEWAY) and returns that LM."""
    from shared import UnifiedDSPyWrapper

    _deprecated("configure_dspy_with_gateway", "dspy.configure(lm=UnifiedDSPyWrapper(UnifiedConfig.from_env("
                "backend=..., model=...)).lm)")
    lm = UnifiedDSPyWrapper(build_config(ENTRY_POINTS["configure_dspy_with_gateway"], args, kwargs)).lm
    dspy.configure(lm=lm)
    return lm
