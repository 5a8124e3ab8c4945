"""DSPy 2.5's ChainOfThought -> DSPy 3's (checked against dspy 3.4.1):

    dspy.ChainOfThought(sig, rationale_type=field)   -> dspy.ChainOfThought(sig, rationale_field=field)
    pred = cot(...); pred.rationale                   -> pred.reasoning

2.5's ChainOfThought named its added output field ``rationale`` when it ran on a legacy client
(dspy.OpenAI, ...) and ``reasoning`` on dspy.LM; DSPy 3's is always ``reasoning``, and the codemod
turns those clients into dspy.LM, so ``.rationale`` of a ChainOfThought's prediction becomes
``.reasoning`` (2.5 on dspy.LM read it the same way). A prediction is recognised by name in the same
function (or at module level): ``cot = dspy.ChainOfThought(...)`` or ``self.cot = ...`` anywhere
in the file, then ``pred = cot(...)`` / ``pred = self.cot(...)``, or ``cot(...).rationale`` directly.
A ChainOfThought whose signature text names a ``rationale`` field of its own is left alone.
(2.5's rationale_type was a dspy.OutputField; so is DSPy 3's rationale_field. tidyq.dspy2's
ChainOfThoughtWithHint keeps the 2.x keyword.)
"""

from __future__ import annotations

import libcst as cst

from shared.migrate.cstutil import code
from shared.migrate.rule import Rule

COT = {"dspy.ChainOfThought", "dspy.predict.ChainOfThought", "dspy.predict.chain_of_thought.ChainOfThought"}
HINTED = {"dspy.ChainOfThoughtWithHint", "dspy.predict.ChainOfThoughtWithHint", "tidyq.dspy2.ChainOfThoughtWithHint"}


class CotRules(Rule):
    def __init__(self, m):
        super().__init__(m)
        self.handles: set[str] = set()  # source text of what a ChainOfThought is assigned to
        self.predictions: set[tuple[int, str]] = set()  # (id of the enclosing function or 0, name)

    def _is_cot(self, call: cst.BaseExpression, kinds: set[str] = COT | HINTED) -> bool:
        return isinstance(call, cst.Call) and bool(self.m.qnames(call.func) & kinds)

    def _scope(self, node: cst.CSTNode) -> int:
        return id(self.m.enclosing(node, cst.FunctionDef))  # id(None) for module level: one shared scope

    def analyze(self, module: cst.Module) -> None:
        rules = self
        assigns: list[cst.Assign] = []

        class _Assigns(cst.CSTVisitor):
            def visit_Assign(self, node: cst.Assign) -> None:
                assigns.append(node)

        module.visit(_Assigns())
        for node in assigns:  # a signature that names its own `rationale` keeps it
            if self._is_cot(node.value) and "rationale" not in code(node.value).split("rationale_type")[0]:
                self.handles.update(code(t.target).strip() for t in node.targets)
        for node in assigns:
            value = node.value
            if isinstance(value, cst.Call) and code(value.func).strip() in rules.handles:
                self.predictions.update((self._scope(node), t.target.value) for t in node.targets
                                        if isinstance(t.target, cst.Name))

    def _prediction(self, node: cst.BaseExpression) -> bool:
        if isinstance(node, cst.Name):
            return (self._scope(node), node.value) in self.predictions
        return isinstance(node, cst.Call) and (code(node.func).strip() in self.handles or self._is_cot(node.func))

    def leave_ref(self, original, updated):
        if isinstance(original, cst.Attribute) and original.attr.value == "rationale" and \
                self._prediction(original.value):
            return updated.with_changes(attr=cst.Name("reasoning"))
        return None

    def leave_call(self, original: cst.Call, updated: cst.Call):
        if not self._is_cot(original, COT) or not any(a.keyword and a.keyword.value == "rationale_type"
                                                       for a in updated.args):
            return None
        return updated.with_changes(args=[a.with_changes(keyword=cst.Name("rationale_field"))
                                          if a.keyword and a.keyword.value == "rationale_type" else a
                                          for a in updated.args])
