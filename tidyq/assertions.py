"""DSPy 2.x assertions on DSPy 3: ``from tidyq.assertions import Assert, Suggest, backtrack_handler``.

What ``tidyq migrate`` rewrites ``dspy.Assert``/``dspy.Suggest``/``dspy.primitives.assertions`` to;
the implementation is shared.assertions.
"""

from shared.assertions import (
    Assert,
    Constraint,
    DSPyAssertionError,
    DSPySuggestionError,
    Suggest,
    activate_assertions,
    assert_no_except_handler,
    assert_transform_module,
    backtrack_handler,
    bypass_assert_handler,
    bypass_suggest_handler,
    default_assertion_handler,
    handle_assert_forward,
    noop_handler,
)

__all__ = ["Assert", "Constraint", "DSPyAssertionError", "DSPySuggestionError", "Suggest", "activate_assertions",
           "assert_no_except_handler", "assert_transform_module", "backtrack_handler", "bypass_assert_handler",
           "bypass_suggest_handler", "default_assertion_handler", "handle_assert_forward", "noop_handler"]
