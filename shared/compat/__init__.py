"""Compatibility shims for the five legacy DSPy wrapper patterns (the seed's tidyllm modules).

Keep old calls working while teams migrate; every entry point warns with DeprecationWarning naming
its replacement, and `tidyq migrate` rewrites the calls to UnifiedDSPyWrapper/UnifiedConfig. This
is deliberately not a package named ``tidyllm`` (that would clash with the teams' own): change
``from tidyllm.dspy_enhanced import DSPyEnhancedWrapper`` to ``from shared.compat import ...``, or
let `tidyq migrate` remove the legacy calls altogether.

    tidyllm.dspy_enhanced.DSPyEnhancedWrapper                -> DSPyEnhancedWrapper
    tidyllm.dspy_gateway_backend.configure_dspy_with_gateway -> configure_dspy_with_gateway
    tidyllm.dspy_bedrock_enhanced.DSPyBedrockEnhancedWrapper -> DSPyBedrockEnhancedWrapper
    tidyllm.dspy_wrapper.DSPyWrapper                         -> DSPyWrapper
    tidyllm.base_module.DynamicModule                        -> DynamicModule
"""

from shared.compat.modules import DynamicModule
from shared.compat.wrappers import (
    DSPyBedrockEnhancedWrapper,
    DSPyEnhancedWrapper,
    DSPyWrapper,
    configure_dspy_with_gateway,
)

__all__ = ["DSPyEnhancedWrapper", "configure_dspy_with_gateway", "DSPyBedrockEnhancedWrapper", "DSPyWrapper",
           "DynamicModule"]
