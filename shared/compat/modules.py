"""Deprecated stand-in for the legacy ``tidyllm.base_module.DynamicModule``: a dspy.Module built
from a signature at run time. Like any DSPy module it runs on the LM DSPy is configured with; when
none is configured it runs on a UnifiedDSPyWrapper built from the environment (TIDYQ_BACKEND ...)."""

from __future__ import annotations

import warnings
from typing import Any

import dspy

from shared.compat.legacy_config import MODULE_TYPES
from shared.errors import ConfigurationError


class DynamicModule(dspy.Module):
    """``DynamicModule(signature, module_type="predict")``; module_type "predict" or "chain_of_thought"."""

    def __init__(self, signature: Any, module_type: str = "predict"):
        super().__init__()
        warnings.warn("DynamicModule is deprecated: use dspy.Predict(signature) or dspy.ChainOfThought(signature), "
                      "through shared.UnifiedDSPyWrapper.create_module(...) or dspy.configure(lm=wrapper.lm) "
                      "(run `tidyq migrate` to rewrite your code)", DeprecationWarning, stacklevel=3)
        kind = MODULE_TYPES.get(str(module_type).lower())
        if kind is None:
            raise ConfigurationError(f"DynamicModule: unknown module_type {module_type!r}; "
                                     f"known: {', '.join(sorted(MODULE_TYPES))}")
        self.predictor = getattr(dspy, kind)(signature)
        self._fallback: Any = None  # a UnifiedDSPyWrapper, built on the first call without dspy.settings.lm

    def forward(self, **inputs: Any) -> dspy.Prediction:
        if dspy.settings.lm is not None:
            return self.predictor(**inputs)
        if self._fallback is None:
            from shared import UnifiedConfig, UnifiedDSPyWrapper

            self._fallback = UnifiedDSPyWrapper(UnifiedConfig.from_env())
        with dspy.context(lm=self._fallback.lm):
            return self.predictor(**inputs)
