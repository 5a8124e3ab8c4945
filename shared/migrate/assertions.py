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

from shared.migrate.cstutil import code, expr
from shared.migrate.rule import Rule

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


class AssertionRules(Rule):
    def __init__(self, m):
        super().__init__(m)
        self.taken: set[str] = set()  # runtime names the file binds to something else

    def legacy_reason(self, qname: str) -> str | None:
        if qname in OLD_MODULES:
            return "dspy.primitives.assertions is gone in DSPy 3 (tidyq.assertions replaces it)"
        if short_name(qname):
            return f"dspy 2.x's {short_name(qname)} is gone in DSPy 3, and this use could not be rewritten to " \
                   f"tidyq.assertions.{short_name(qname)}"
        return None

    def analyze(self, module: cst.Module) -> None:
        rules = self

        class _Names(cst.CSTVisitor):
            def visit_Attribute(self, node: cst.Attribute) -> bool:
                node.value.visit(self)  # `x.Assert` does not bind the name Assert
                return False

            def visit_Name(self, node: cst.Name) -> None:
                if node.value in PROVIDED and not any(short_name(q) for q in rules.m.qnames(node)):
                    rules.taken.add(node.value)

        module.visit(_Names())

    def _runtime_ref(self, name: str) -> cst.BaseExpression:
        """``X`` (imported from tidyq.assertions), or ``tidyq.assertions.X`` when X is taken."""
        if name in self.taken:
            self.m.need_import(RUNTIME)
            return expr(f"{RUNTIME}.{name}")
        self.m.need_import(RUNTIME, name)
        return cst.Name(name)

    # ---- references: dspy.Assert, dspy.primitives.assertions.backtrack_handler, A.Suggest ---------
    def leave_ref(self, original, updated):
        short = next((s for s in map(short_name, self.m.qnames(original)) if s), None)
        if short is None or self._inside_import(original):
            return None
        self.m.mark(original)
        if isinstance(original, cst.Name):
            return None  # bound by a `from ... import` that leave_import_from rewrites
        root = original
        while isinstance(root, cst.Attribute):
            root = root.value
        if isinstance(root, cst.Name) and any(q.startswith("dspy") for q in self.m.qnames(root)) and \
                root.value in ("dspy", self.m.dspy_alias):
            return self._runtime_ref(short)
        return None  # A.Suggest with `import dspy.primitives.assertions as A`: the import is rewritten

    def _inside_import(self, node: cst.CSTNode) -> bool:
        cur = self.m.parent(node)
        while cur is not None and not isinstance(cur, cst.BaseStatement):
            if isinstance(cur, (cst.Import, cst.ImportFrom)):
                return True
            cur = self.m.parent(cur)
        return False

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
        return updated.with_changes(func=self._runtime_ref(ACTIVATE), args=[module, *updated.args])

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

    def leave_statement(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        """``from dspy import Assert, Predict``: the assertion names move to their own import."""
        stmt = updated.body[0] if len(updated.body) == 1 else None
        if not isinstance(stmt, cst.ImportFrom) or stmt.module is None or stmt.relative or \
                isinstance(stmt.names, cst.ImportStar):
            return None
        module = cst.helpers.get_full_name_for_node(stmt.module)
        moved = [a for a in stmt.names if short_name(f"{module}.{a.name.value}") and module not in OLD_MODULES]
        if not moved:
            return None
        self.m.mark(original)
        moved = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in moved]
        runtime = cst.parse_statement(f"from {RUNTIME} import {', '.join(code(a) for a in moved)}")
        kept = [a for a in stmt.names if a.name.value not in {m.name.value for m in moved}]
        if not kept:
            return runtime.with_changes(leading_lines=updated.leading_lines)
        kept[-1] = kept[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return cst.FlattenSentinel([updated.with_changes(body=[stmt.with_changes(names=kept)]), runtime])
