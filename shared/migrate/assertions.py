"""DSPy 2.x assertions -> ``tidyq.assertions`` (DSPy 3 has no dspy.Assert/Suggest).

``tidyq.assertions`` keeps 2.x's semantics on DSPy 3 (shared/assertions.py), so every form is a
mechanical rewrite of names, wherever the call is (forward(), helpers, metrics, if/try blocks, reading
locals or self) and whichever file activates which class:

    dspy.Assert(c, m) / dspy.Suggest(c, m)              -> Assert(c, m) / Suggest(c, m)
    from dspy.primitives.assertions import X            -> from tidyq.assertions import X
    import dspy.primitives.assertions as A              -> import tidyq.assertions as A
    from dspy import Assert, Predict                    -> from dspy import Predict; from tidyq.assertions import Assert
    m.activate_assertions(h, **kw)                      -> activate_assertions(m, h, **kw)
    m.map_named_predictors(Retry)                       -> m   (backtracking needs no dspy.Retry here)

with ``from tidyq.assertions import X`` added, or ``import tidyq.assertions`` and
``tidyq.assertions.X`` when the file already uses the name ``X`` for something else.
"""

from __future__ import annotations

import libcst as cst

from shared.migrate.cstutil import expr
from shared.migrate.rule import RuntimeRule

RUNTIME = "tidyq.assertions"
OLD_MODULES = ("dspy.primitives.assertions",)
PREFIXES = ("dspy.", "dspy.primitives.", "dspy.primitives.assertions.")
PROVIDED = ("Assert", "Suggest", "Constraint", "DSPyAssertionError", "DSPySuggestionError", "assert_transform_module",
            "activate_assertions", "handle_assert_forward", "backtrack_handler", "noop_handler",
            "bypass_suggest_handler", "bypass_assert_handler", "assert_no_except_handler", "default_assertion_handler")
ACTIVATE = "activate_assertions"
RETRY = {"dspy.Retry", "dspy.predict.Retry", "dspy.predict.retry.Retry"}


def short_name(qname: str) -> str | None:
    """The runtime's name for a 2.x assertion name (dspy.Assert, dspy.primitives.assertions.X), else None."""
    for prefix in PREFIXES:
        if qname.startswith(prefix) and qname[len(prefix):] in PROVIDED:
            return qname[len(prefix):]
    return None


class AssertionRules(RuntimeRule):
    runtime = RUNTIME
    provided = PROVIDED

    def target(self, qname: str) -> str | None:
        return short_name(qname)

    def moves_from(self, module: str) -> bool:
        return module not in OLD_MODULES  # `from dspy.primitives.assertions import X`: leave_import_from

    def legacy_reason(self, qname: str) -> str | None:
        if qname in OLD_MODULES:
            return "dspy.primitives.assertions is gone in DSPy 3 (tidyq.assertions replaces it)"
        if short_name(qname):
            return f"dspy 2.x's {short_name(qname)} is gone in DSPy 3, and this use could not be rewritten to " \
                   f"tidyq.assertions.{short_name(qname)}"
        return None

    def analyze(self, module: cst.Module) -> None:
        self.find_taken(module)

    # ---- m.activate_assertions(...) ----------------------------------------------------------------
    def leave_call(self, original: cst.Call, updated: cst.Call):
        func = updated.func
        if self._maps_retry(original):
            return cst.ensure_type(func, cst.Attribute).value
        if not (isinstance(func, cst.Attribute) and func.attr.value == ACTIVATE):
            return None
        owner = cst.ensure_type(original.func, cst.Attribute).value
        if any(q in OLD_MODULES or short_name(q) for q in self.m.qnames(owner)):  # A.activate_assertions(m)
            return None
        self.m.mark(original.func)
        module = cst.Arg(value=func.value)
        return updated.with_changes(func=self.runtime_ref(ACTIVATE), args=[module, *updated.args])

    def _maps_retry(self, call: cst.Call) -> bool:
        """``m.map_named_predictors(Retry)``: 2.x's backtracking needed every predictor wrapped in
        dspy.Retry; tidyq.assertions backtracks plain predictors, so the call is just ``m``."""
        if not (isinstance(call.func, cst.Attribute) and call.func.attr.value == "map_named_predictors"
                and len(call.args) == 1 and call.args[0].keyword is None):
            return False
        if not self.m.qnames(call.args[0].value) & RETRY:
            return False
        self.m.mark(call.args[0].value)
        return True

    # ---- imports ------------------------------------------------------------------------------------
    def leave_import(self, original: cst.Import, updated: cst.Import):
        names = [alias.with_changes(name=expr(RUNTIME))
                 if alias.asname is not None and cst.helpers.get_full_name_for_node(alias.name) in OLD_MODULES
                 else alias for alias in updated.names]
        if all(new is old for new, old in zip(names, updated.names, strict=True)):
            return None
        self.m.mark(original)
        return updated.with_changes(names=names)

    def leave_import_from(self, original: cst.ImportFrom, updated: cst.ImportFrom):
        if original.module is None or original.relative:
            return None
        module = cst.helpers.get_full_name_for_node(original.module)
        if module in OLD_MODULES:
            self.m.mark(original)
            return updated.with_changes(module=expr(RUNTIME))
        if module == "dspy.primitives" and not isinstance(updated.names, cst.ImportStar) and \
                [a.name.value for a in updated.names] == ["assertions"]:
            self.m.mark(original)
            return updated.with_changes(module=cst.Name("tidyq"))
        return None
