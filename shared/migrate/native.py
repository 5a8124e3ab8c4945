"""``tidyq migrate --native``: lift the one assertion form whose semantics carry over to DSPy 3's own
``dspy.Refine``; every other form stays on tidyq.assertions (2.x's semantics), with a note saying why.

The form: a module activated in the same file with the default handler (``C().activate_assertions()``,
``assert_transform_module(C(), backtrack_handler)``, ``assert_transform_module(C().map_named_predictors(Retry))``),
whose ``forward`` calls one predictor of ``self``, then only assigns locals and calls
``dspy.Suggest(cond, msg)`` (no target_module, or that predictor), and returns the prediction:

    def forward(self, question):                    def forward(self, question):
        pred = self.prog(question=question)             def pred_reward(args, pred):
        ok = len(pred.answer) < 10                          ok = len(pred.answer) < 10
        dspy.Suggest(ok, "a number")                        checks = [(ok, "a number")]
        return pred                                         return sum(bool(c) for c, _ in checks) / len(checks)
                                                        pred = dspy.Refine(module=self.prog, N=3, reward_fn=pred_reward,
                                                                           threshold=1.0)(question=question)
                                                        return pred

Why that far and no further: 2.x's backtrack_handler re-ran the failing predictor up to
max_backtracks (2) more times, then bypassed a still-failing Suggest and returned the prediction;
Refine runs the predictor up to N=3 times and returns the first that meets the threshold or the best.
What differs, and is said in the docs: 2.x put the message into the retried prompt as ``feedback``,
Refine's retries get advice an LM writes from the reward's source (which holds the messages); the
best try is returned rather than the last one. Not lifted: ``dspy.Assert`` (2.x raised after the
backtracks; Refine never raises), several predictors or a target_module of another (2.x backtracked
only that one; Refine would re-run the whole module), a module not activated here with the default
handler (unactivated, a failing Suggest raised in 2.x), and any other statement after the call.
"""

from __future__ import annotations

import libcst as cst

from shared.migrate.cstutil import code, split_args
from shared.migrate.rule import Rule

ATTEMPTS = 3  # 2.x backtrack_handler's max_backtracks=2, plus the first run
CHECKS = ("Suggest", "Assert")


class NativeRules(Rule):
    def __init__(self, m):
        super().__init__(m)
        self.lifted: dict[int, tuple[str, str]] = {}  # id(forward) -> (predictor attribute, prediction name)
        self.claimed: set[int] = set()  # ids of the lifted Suggest calls' func nodes

    def _check_kind(self, call: cst.CSTNode) -> str | None:
        if not isinstance(call, cst.Call):
            return None
        return next((q.rsplit(".", 1)[1] for q in self.m.qnames(call.func)
                     if q.rsplit(".", 1)[-1] in CHECKS and (q.startswith("dspy.") or q.startswith("tidyq."))), None)

    def _statement_check(self, small: cst.BaseSmallStatement) -> str | None:
        """"Suggest"/"Assert" for a statement that is a check call, else None."""
        return self._check_kind(small.value) if isinstance(small, cst.Expr) else None

    def analyze(self, module: cst.Module) -> None:
        if not getattr(self.m, "native", False):
            return
        activated = self._activated_here(module)
        for cls in (s for s in module.body if isinstance(s, cst.ClassDef)):
            forward = next((s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == "forward"),
                           None)
            if forward is None or not any(self._check_kind(c) for c in _calls(forward)):
                continue
            why = self._why_not(forward) or (None if cls.name.value in activated else
                                             "it is not activated in this file with the default backtrack_handler "
                                             "(unactivated, a failing Suggest raised in 2.x)")
            if why:
                self.m.note(cls, f"--native: {cls.name.value} stays on tidyq.assertions: {why}")
                continue
            self.lifted[id(forward)] = _predictor_call(next(s for s in forward.body.body if _predictor_call(s))) \
                or ("", "")
            self.claimed |= self._func_ids(forward)
            self.m.note(cls, f"--native: {cls.name.value}.forward lifted to dspy.Refine(N={ATTEMPTS}, threshold=1.0); "
                             "retries get Refine's advice, not 2.x's feedback field")

    def _activated_here(self, module: cst.Module) -> set[str]:
        names: set[str] = set()
        rules = self

        class _Scan(cst.CSTVisitor):
            def visit_Call(self, node: cst.Call) -> None:
                func = node.func
                if isinstance(func, cst.Attribute) and func.attr.value == "activate_assertions" and not node.args:
                    names.add(_built_class(func.value))
                elif any(q.endswith(".assert_transform_module") for q in rules.m.qnames(func)) and node.args and \
                        all(a.keyword is None for a in node.args) and len(node.args) <= 2 and \
                        (len(node.args) == 1 or any(q.endswith(".backtrack_handler")
                                                    for q in rules.m.qnames(node.args[1].value))):
                    names.add(_built_class(node.args[0].value))

        module.visit(_Scan())
        return names - {""}

    def _why_not(self, forward: cst.FunctionDef) -> str | None:
        body = list(forward.body.body)
        at = next((i for i, s in enumerate(body) if _predictor_call(s)), None)
        if at is None:
            return "its forward does not assign one call of a predictor of self (pred = self.p(...))"
        attr, pred = _predictor_call(body[at]) or ("", "")
        after, last = body[at + 1:-1], body[-1]
        returned = last.body[0] if isinstance(last, cst.SimpleStatementLine) else None
        if at == len(body) - 1 or not (isinstance(returned, cst.Return) and isinstance(returned.value, cst.Name) and
                                       returned.value.value == pred):
            return f"its forward does not end with `return {pred}`"
        if any(self._check_kind(c) for s in body[:at] for c in _calls(s)):
            return "a check comes before the predictor's call"
        suggests = 0
        for stmt in after:
            if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
                return "its forward has other statements after the predictor's call (only assignments and checks lift)"
            small = stmt.body[0]
            kind = self._statement_check(small)
            if kind == "Assert":
                return "it has a dspy.Assert (2.x raised after the backtracks; Refine never raises)"
            if kind == "Suggest":
                if not self._suggest_fits(cst.ensure_type(cst.ensure_type(small, cst.Expr).value, cst.Call), attr):
                    return "a Suggest targets another module or is not (cond, msg)"
                suggests += 1
            elif not isinstance(small, (cst.Assign, cst.AnnAssign)) or any(self._check_kind(c) for c in _calls(small)) \
                    or any(_calls_self(c) for c in _calls(small)):
                return "its forward does more than assign locals and check after the predictor's call"
        return None if suggests else "no Suggest follows the predictor's call"

    def _suggest_fits(self, call: cst.Call, attr: str) -> bool:
        positional, keywords, starred = split_args(call)
        if starred or len(positional) != 2 or set(keywords) - {"target_module"}:
            return False
        target = keywords.get("target_module")
        return target is None or code(target.value).strip() == f"self.{attr}"

    def leave_ref(self, original, updated):
        if not self.lifted or id(original) not in self.claimed:
            return None
        self.m.mark(original)
        return updated  # kept for leave_function, which rebuilds the forward

    def leave_function(self, original: cst.FunctionDef, updated: cst.FunctionDef):
        if id(original) not in self.lifted:
            return None
        attr, pred = self.lifted[id(original)]
        body = list(updated.body.body)
        at = next(i for i, s in enumerate(body) if _predictor_call(s))
        call = cst.ensure_type(cst.ensure_type(body[at], cst.SimpleStatementLine).body[0], cst.Assign).value
        checks, kept = [], []
        for before, stmt in zip(original.body.body[at + 1:-1], body[at + 1:-1], strict=True):
            small = cst.ensure_type(stmt, cst.SimpleStatementLine).body[0]
            if self._statement_check(cst.ensure_type(before, cst.SimpleStatementLine).body[0]):
                positional, _, _ = split_args(cst.ensure_type(cst.ensure_type(small, cst.Expr).value, cst.Call))
                checks.append(f"({code(positional[0].value)}, {code(positional[1].value)})")
            else:
                kept.append(code(stmt).strip())
        reward = f"{pred}_reward"
        lines = [f"def {reward}(args, {pred}):", *(f"    {line}" for text in kept for line in text.splitlines()),
                 f"    checks = [{', '.join(checks)}]",
                 "    return sum(bool(passed) for passed, _ in checks) / len(checks)"]
        arguments = code(cst.ensure_type(call, cst.Call).with_changes(func=cst.Name("f")))[1:]
        new = [*body[:at], cst.parse_statement("\n".join(lines) + "\n"),
               cst.parse_statement(f"{pred} = {self.m.dspy('Refine')}(module=self.{attr}, N={ATTEMPTS}, "
                                   f"reward_fn={reward}, threshold=1.0){arguments}\n"), body[-1]]
        return updated.with_changes(body=updated.body.with_changes(body=new))

    def _func_ids(self, forward: cst.FunctionDef) -> set[int]:
        return {id(c.func) for c in _calls(forward) if self._check_kind(c) == "Suggest"}


def _calls(node: cst.CSTNode) -> list[cst.Call]:
    found: list[cst.Call] = []

    class _Collect(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            found.append(call)

    node.visit(_Collect())
    return found


def _calls_self(call: cst.Call) -> bool:
    """A call of one of self's modules (another predictor)."""
    func = call.func
    return isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self"


def _predictor_call(stmt: cst.CSTNode) -> tuple[str, str] | None:
    """(predictor attribute, prediction name) for ``pred = self.p(...)``."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Assign)):
        return None
    assign = stmt.body[0]
    if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name) or \
            not isinstance(assign.value, cst.Call) or not _calls_self(assign.value):
        return None
    func = cst.ensure_type(assign.value.func, cst.Attribute)
    return func.attr.value, assign.targets[0].target.value


def _built_class(node: cst.BaseExpression) -> str:
    """``C()`` or ``C().map_named_predictors(Retry)`` -> "C"."""
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and \
            node.func.attr.value == "map_named_predictors":
        node = node.func.value
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Name):
        return node.func.value
    return ""
