"""DSPy 2.6 assertions -> DSPy 3 (which has no dspy.Assert/Suggest).

For a module class whose forward() calls ``dspy.Assert(cond, msg)`` / ``dspy.Suggest(cond, msg)``:
- the calls leave forward() and become a generated ``assertion_checks(args, pred)`` staticmethod that
  yields ``("assert"|"suggest", cond, msg)`` in the original order, reading forward's inputs from
  ``args`` and the returned prediction as ``pred`` (2.6 ran the checks on those same values);
- ``assert_transform_module(m, backtrack_handler, max_backtracks=k)`` and
  ``m.activate_assertions(...)`` become ``RefineAssertions(m, C.assertion_checks, attempts=k+1)``:
  dspy.Refine with a reward built from the checks (hard Assert must hold, Suggest is soft);
- an instance that was never activated raised on the first failing check in 2.6: it becomes
  ``RefineAssertions(C(), C.assertion_checks, attempts=1, strict=True)``;
- activating a parent module activated its children's assertions: the children are wrapped with
  the parent's settings and the parent's activation goes away.

What it cannot move faithfully it reports (file:line and why) and leaves as written: checks nested
in if/for/try, checks reading locals other than the inputs and the returned variable, checks
reading ``self``, inputs or the returned variable changed after a check, other handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import libcst as cst

from shared.migrate.cstutil import (
    assigned_targets,
    code,
    expr,
    free_names,
    int_value,
    split_args,
    target_base_names,
)
from shared.migrate.transform import Rule

RUNTIME = "shared.migrate.runtime"
PREFIXES = ("dspy.", "dspy.primitives.", "dspy.primitives.assertions.")
HANDLERS = ("backtrack_handler", "noop_handler", "bypass_suggest_handler", "bypass_assert_handler",
            "assert_no_except_handler", "suggest_backtrack_handler", "default_assertion_handler")
ERRORS = ("DSPyAssertionError", "DSPySuggestionError")
NAMES = ("Assert", "Suggest", "assert_transform_module", "handle_assert_forward", "Constraint") + HANDLERS + ERRORS
CHECKS_METHOD = "assertion_checks"


def _short(qname: str) -> str | None:
    for prefix in PREFIXES:
        if qname.startswith(prefix) and qname[len(prefix):] in NAMES:
            return qname[len(prefix):]
    return None


@dataclass
class Check:
    kind: str  # "assert" | "suggest"
    condition: cst.BaseExpression
    message: cst.BaseExpression | None
    comments: list[str]  # comment lines above the call
    trailing: str | None = None  # comment after the call on its line
    note: str | None = None


@dataclass
class ClassPlan:
    name: str
    forward: cst.FunctionDef
    checks: list[Check] = field(default_factory=list)
    statements: set[int] = field(default_factory=set)  # ids of the forward() lines to remove
    bindings: list[str] = field(default_factory=list)
    args_name: str = "args"
    pred_name: str = "pred"


@dataclass(frozen=True)
class Settings:
    attempts: int
    strict: bool = False


@dataclass
class Activation:
    module: cst.BaseExpression  # the original module expression
    cls: str | None
    settings: Settings | None  # None: noop_handler (assertions off)


class AssertionRules(Rule):
    def __init__(self, m):
        super().__init__(m)
        self.plans: dict[str, ClassPlan] = {}
        self.blocked: dict[str, int] = {}  # class -> line of its first unmigratable check
        self.local_classes: dict[str, cst.ClassDef] = {}
        self.has_checks: set[str] = set()
        self.name_class: dict[str, set[str]] = {}  # name -> classes whose instances were assigned to it
        self.activations: dict[int, Activation] = {}
        self.activation_targets: set[int] = set()
        self.activated_names: set[str] = set()
        self.activated_classes: dict[str, Settings | None] = {}
        self.remove_lines: set[int] = set()

    def legacy_reason(self, qname: str) -> str | None:
        short = _short(qname)
        if short is None:
            return "dspy.primitives.assertions is gone in DSPy 3" if qname == "dspy.primitives.assertions" else None
        if short in ("Assert", "Suggest"):
            return f"dspy.{short} was removed in DSPy 3 and this call is not in a form tidyq migrate can move " \
                   "(a top-level statement of forward())"
        return f"{short} was removed with DSPy 2.6 assertions; tidyq migrate rewrites it only as " \
               "assert_transform_module(module, handler) / module.activate_assertions(handler)"

    def kind_of(self, func: cst.CSTNode) -> str | None:
        if not isinstance(func, (cst.Name, cst.Attribute)):
            return None
        for qname in self.m.qnames(func):
            short = _short(qname)
            if short:
                return short
        return None

    # ---- analysis ---------------------------------------------------------------------------
    def analyze(self, module: cst.Module) -> None:
        rules = self
        checks: list[cst.Call] = []
        activations: list[cst.Call] = []

        class _Scan(cst.CSTVisitor):
            def visit_ClassDef(self, node: cst.ClassDef) -> None:
                rules.local_classes[node.name.value] = node
                for stmt in node.body.body:
                    if isinstance(stmt, cst.FunctionDef) and stmt.name.value == CHECKS_METHOD:
                        rules.has_checks.add(node.name.value)

            def visit_Assign(self, node: cst.Assign) -> None:
                if isinstance(node.value, cst.Call) and isinstance(node.value.func, cst.Name):
                    for target in node.targets:
                        rules.name_class.setdefault(code(target.target), set()).add(node.value.func.value)

            def visit_Call(self, node: cst.Call) -> None:
                if isinstance(node.func, cst.Name) and node.func.value == "RefineAssertions" and node.args:
                    rules.activated_names.add(code(node.args[0].value))  # migrated already
                kind = rules.kind_of(node.func)
                if kind in ("Assert", "Suggest"):
                    checks.append(node)
                elif kind == "assert_transform_module" or (
                        isinstance(node.func, cst.Attribute) and node.func.attr.value == "activate_assertions"):
                    activations.append(node)

        module.visit(_Scan())
        for cls in self.local_classes.values():
            self._plan_class(cls)
        for call in checks:
            if id(call.func) not in self.m.accounted:
                self.m.report(call.func, f"dspy.{self.kind_of(call.func)} outside a module's forward() (a metric, a "
                                         "helper, module level): DSPy 3 has no equivalent; turn it into a reward "
                                         "function or a ValidationConfig check by hand")
        for call in activations:
            self._plan_activation(call)

    def asserting(self, name: str) -> bool:
        return name in self.plans or name in self.has_checks or name in self.m.knowledge.asserting_classes

    def _plan_class(self, cls: cst.ClassDef) -> None:
        forward = next((s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == "forward"),
                       None)
        if forward is None or not isinstance(forward.body, cst.IndentedBlock):
            return
        body = list(forward.body.body)
        found: list[tuple[int, cst.SimpleStatementLine, cst.Call]] = []
        for index, stmt in enumerate(body):
            if (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Expr)
                    and isinstance(stmt.body[0].value, cst.Call)
                    and self.kind_of(stmt.body[0].value.func) in ("Assert", "Suggest")):
                found.append((index, stmt, stmt.body[0].value))
        nested = self._nested_checks(forward, {id(call) for _, _, call in found})
        if not found and not nested:
            return
        name = cls.name.value

        def block(node: cst.CSTNode, why: str) -> None:
            self.blocked.setdefault(name, self.m.line(node))
            for _, _, call in found:
                if id(call.func) not in self.m.accounted:
                    self.m.report(call.func, f"{self.kind_of(call.func)} in {name}.forward(): {why}")

        for call in nested:
            self.m.report(call.func, f"dspy.{self.kind_of(call.func)} inside a nested block or expression of "
                                     f"{name}.forward(): move it to a top-level statement by hand, then re-run")
        if nested:
            block(nested[0], "another check in this forward() cannot be moved, so none are")
            return
        params = self._params(forward)
        last = body[-1]
        returned = None
        if (isinstance(last, cst.SimpleStatementLine) and isinstance(last.body[0], cst.Return)
                and isinstance(last.body[0].value, cst.Name)):
            returned = last.body[0].value.value
        allowed = set(params) | ({returned} if returned else set())
        local = {n for stmt in body for t in assigned_targets(stmt) for n in target_base_names(t)} | set(params)
        plan = ClassPlan(name, forward)
        used: set[str] = set()
        for _, stmt, call in found:
            check, why = self._check(call, stmt)
            if check is None:
                return block(call, why)
            names = free_names(check.condition) | (free_names(check.message) if check.message else set())
            if "self" in names:
                return block(call, "the check reads `self`, but the migrated checks run outside the module; "
                                   "compute the value into the returned prediction first")
            foreign = sorted((names & local) - allowed)
            if foreign:
                return block(call, f"the check reads {', '.join(foreign)}, computed inside forward(); DSPy 3's "
                                   "reward sees only the inputs and the returned prediction"
                                   + ("" if returned else " (forward() must end with `return <name>`)"))
            for star in ("*", "**"):
                if params.get(star) in names:
                    return block(call, "the check reads forward()'s *args/**kwargs")
            used |= names & allowed
            plan.checks.append(check)
            plan.statements.add(id(stmt))
        first = found[0][0]
        for stmt in body[first + 1:]:
            changed = {n for t in assigned_targets(stmt) for n in target_base_names(t)} & used
            if changed:
                return block(stmt, f"{', '.join(sorted(changed))} is changed after a check, so the check would "
                                   "see a different value")
        reserved = set(params) | local
        plan.pred_name = returned or "pred"
        plan.args_name = next(n for n in ("args", "inputs", "args_", "inputs_") if n not in reserved | {returned})
        for pname, default in params.items():
            if pname in ("*", "**") or pname not in used:
                continue
            if default is None:
                plan.bindings.append(f'{pname} = {plan.args_name}["{pname}"]')
            else:
                plan.bindings.append(f'{pname} = {plan.args_name}.get("{pname}", {code(default)})')
        for _, _, call in found:
            self.m.mark(call.func)
        self.plans[name] = plan

    def _nested_checks(self, forward: cst.FunctionDef, top: set[int]) -> list[cst.Call]:
        rules, out = self, []

        class _V(cst.CSTVisitor):
            def visit_Call(self, node: cst.Call) -> None:
                if id(node) not in top and rules.kind_of(node.func) in ("Assert", "Suggest"):
                    out.append(node)

        forward.body.visit(_V())
        return out

    @staticmethod
    def _params(forward: cst.FunctionDef) -> dict[str, cst.BaseExpression | None]:
        params: dict[str, cst.BaseExpression | None] = {}
        p = forward.params
        for param in list(p.posonly_params) + list(p.params) + list(p.kwonly_params):
            if param.name.value != "self":
                params[param.name.value] = param.default
        if isinstance(p.star_arg, cst.Param):
            params["*"] = p.star_arg.name.value  # type: ignore[assignment]
        if p.star_kwarg is not None:
            params["**"] = p.star_kwarg.name.value  # type: ignore[assignment]
        return params

    def _check(self, call: cst.Call, stmt: cst.SimpleStatementLine) -> tuple[Check | None, str]:
        positional, keywords, starred = split_args(call)
        unknown = set(keywords) - {"result", "msg", "target_module", "is_metric"}
        if starred or unknown or len(positional) > 2:
            return None, "unexpected arguments; expected dspy.Assert(condition, message)"
        condition = positional[0].value if positional else (keywords["result"].value if "result" in keywords else None)
        if condition is None:
            return None, "no condition given"
        message = positional[1].value if len(positional) > 1 else (keywords["msg"].value if "msg" in keywords else None)
        comments = [line.comment.value for line in stmt.leading_lines if line.comment is not None]
        trailing = stmt.trailing_whitespace.comment.value if stmt.trailing_whitespace.comment else None
        note = None
        if "target_module" in keywords:
            note = f"# was target_module={code(keywords['target_module'].value)}: dspy.Refine advises every predictor"
        kind = "assert" if self.kind_of(call.func) == "Assert" else "suggest"
        return Check(kind, condition, message, comments, trailing, note), ""

    def _handler_settings(self, handler: cst.BaseExpression | None, extra: dict[str, cst.Arg],
                          call: cst.Call) -> tuple[bool, Settings | None]:
        """(ok, settings); settings None means assertions switched off (noop_handler)."""
        max_backtracks, bypass_suggest = 2, True
        name = "backtrack_handler"
        if isinstance(handler, cst.Call) and any(q in ("functools.partial",) for q in self.m.qnames(handler.func)):
            positional, keywords, starred = split_args(handler)
            if starred or len(positional) != 1:
                self.m.report(call, "functools.partial(handler, ...) with unexpected arguments")
                return False, None
            self.m.mark(handler.func)
            extra = {**keywords, **extra}
            handler = positional[0].value
        if handler is not None:
            name = self.kind_of(handler) or ""
            self.m.mark(handler)
        for key, arg in extra.items():
            if key == "max_backtracks" and (backtracks := int_value(arg.value)) is not None:
                max_backtracks = backtracks
            elif key == "bypass_suggest" and isinstance(arg.value, cst.Name) and arg.value.value in ("True", "False"):
                bypass_suggest = arg.value.value == "True"
            else:
                self.m.report(call, f"handler argument {key}={code(arg.value)} is not a literal max_backtracks/"
                                    "bypass_suggest; migrate this activation by hand")
                return False, None
        if name in ("backtrack_handler", "default_assertion_handler"):
            if not bypass_suggest:
                self.m.report(call, "backtrack_handler(bypass_suggest=False) returned None after failing "
                                    "suggestions; no DSPy 3 equivalent, migrate by hand")
                return False, None
            return True, Settings(attempts=max_backtracks + 1)
        if name == "noop_handler":
            return True, None
        if name == "bypass_suggest_handler":
            return True, Settings(attempts=1)
        self.m.report(call, f"assertion handler {code(handler) if handler is not None else '?'} has no DSPy 3 "
                            "equivalent tidyq migrate knows (backtrack_handler, bypass_suggest_handler, noop_handler)")
        return False, None

    def _plan_activation(self, call: cst.Call) -> None:
        positional, keywords, starred = split_args(call)
        self.m.mark(call.func)
        if self.kind_of(call.func) == "assert_transform_module":
            module = positional[0].value if positional else (keywords.pop("module").value if "module" in keywords
                                                             else None)
            handler = positional[1].value if len(positional) > 1 else (
                keywords.pop("assertion_handler").value if "assertion_handler" in keywords else None)
            extra_positional = positional[2:]
        else:
            module = cast(cst.Attribute, call.func).value
            handler = positional[0].value if positional else (keywords.pop("handler").value if "handler" in keywords
                                                              else None)
            extra_positional = positional[1:]
        if module is None or starred or extra_positional:
            self.m.report(call, "assertion activation with unexpected arguments; migrate it by hand")
            return
        ok, settings = self._handler_settings(handler, {k: v for k, v in keywords.items()}, call)
        if not ok:
            return
        cls = None
        if isinstance(module, cst.Call) and isinstance(module.func, cst.Name):
            cls = module.func.value
            self.activation_targets.add(id(module))
        elif isinstance(module, (cst.Name, cst.Attribute)):
            candidates = {c for c in self.name_class.get(code(module), ())
                          if self.asserting(c) or c in self.local_classes}
            cls = candidates.pop() if len(candidates) == 1 else None
        if cls is None or not (self.asserting(cls) or cls in self.local_classes):
            self.m.report(call, f"cannot tell which module class {code(module)} is, so not which assertions this "
                                "activates; wrap it by hand: RefineAssertions(module, Class.assertion_checks)")
            return
        if cls in self.blocked:
            self.m.report(call, f"{cls}'s checks could not be migrated (line {self.blocked[cls]}), so neither can "
                                "this activation")
            return
        if isinstance(module, (cst.Name, cst.Attribute)):
            self.activated_names.add(code(module))
        if not self.asserting(cls):
            self.activated_classes[cls] = settings
        self.activations[id(call)] = Activation(module, cls, settings)

    # ---- rewriting --------------------------------------------------------------------------
    def _wrap(self, module_text: str, cls: str, settings: Settings) -> cst.BaseExpression:
        self.m.need_import(RUNTIME, "RefineAssertions")
        extra = ", strict=True" if settings.strict else ""
        return expr(f"RefineAssertions({module_text}, {cls}.{CHECKS_METHOD}, attempts={settings.attempts}{extra})")

    def leave_call(self, original: cst.Call, updated: cst.Call):
        activation = self.activations.get(id(original))
        if activation is not None:
            module = self._module_arg(original, updated)
            if activation.settings is None or activation.cls is None or not self.asserting(activation.cls):
                return module
            return self._wrap(code(module), activation.cls, activation.settings)
        if isinstance(original.func, cst.Name) and self.asserting(original.func.value):
            return self._instantiation(original, updated)
        return None

    def _module_arg(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        if self.kind_of(original.func) != "assert_transform_module":
            return cast(cst.Attribute, updated.func).value
        for arg in updated.args:
            if arg.keyword is None or arg.keyword.value == "module":
                return arg.value
        raise AssertionError("activation without a module was reported in analysis")

    def _instantiation(self, original: cst.Call, updated: cst.Call):
        if id(original) in self.activation_targets:
            return None
        parent = self.m.parent(original)
        if isinstance(parent, cst.Arg):
            call = self.m.parent(parent)
            if isinstance(call, cst.Call) and isinstance(call.func, cst.Name) and call.func.value == "RefineAssertions":
                return None
        if isinstance(parent, cst.Assign) and any(code(t.target) in self.activated_names for t in parent.targets):
            return None
        owner = self.m.enclosing(original, cst.ClassDef)
        while owner is not None and owner.name.value not in self.activated_classes:
            owner = self.m.enclosing(owner, cst.ClassDef)
        if owner is not None:
            settings = self.activated_classes[owner.name.value]
            if settings is None:
                return None
        else:
            settings = Settings(attempts=1, strict=True)
        return self._wrap(code(updated), cast(cst.Name, original.func).value, settings)

    def leave_statement(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        for plan in self.plans.values():
            if id(original) in plan.statements:
                return cst.RemoveFromParent()
        # `m.activate_assertions()` / `assert_transform_module(m)` as a statement changed m in place.
        if len(original.body) == 1 and isinstance(original.body[0], cst.Expr):
            activation = self.activations.get(id(original.body[0].value))
            if activation is not None and isinstance(activation.module, (cst.Name, cst.Attribute)):
                new_value = cast(cst.Expr, updated.body[0]).value
                if code(new_value) == code(activation.module):
                    return cst.RemoveFromParent()  # the activation was a no-op now (noop_handler, parent class)
                target = cast(cst.BaseAssignTargetExpression, expr(code(activation.module)))
                assign = cst.Assign(targets=[cst.AssignTarget(target=target)], value=new_value)
                return updated.with_changes(body=[assign])
        return None

    def leave_class(self, original: cst.ClassDef, updated: cst.ClassDef):
        plan = self.plans.get(original.name.value)
        if plan is None:
            return None
        method = cst.parse_statement(self._checks_source(plan))
        body = list(updated.body.body)
        index = next((i for i, s in enumerate(body) if isinstance(s, cst.FunctionDef) and s.name.value == "forward"),
                     len(body) - 1)
        body.insert(index + 1, method.with_changes(leading_lines=[cst.EmptyLine(indent=False)]))
        return updated.with_changes(body=updated.body.with_changes(body=body))

    def _checks_source(self, plan: ClassPlan) -> str:
        lines = [
            "@staticmethod",
            f"def {CHECKS_METHOD}({plan.args_name}, {plan.pred_name}):",
            '    """The dspy.Assert/Suggest checks `tidyq migrate` moved out of forward() (DSPy 3 has neither)."""',
            "    # Yields (kind, passed, message) in the original order: \"assert\" must hold, \"suggest\" is soft.",
            "    # RefineAssertions builds a dspy.Refine reward from them.",
        ]
        lines += [f"    {binding}" for binding in plan.bindings]
        for check in plan.checks:
            lines += [f"    {comment}" for comment in check.comments]
            condition = code(check.condition)
            if "\n" in condition:
                condition = f"({condition})"
            message = code(check.message) if check.message is not None else '""'
            if "\n" in message:
                message = f"({message})"
            if check.note:
                lines.append(f"    {check.note}")
            trailing = f"  {check.trailing}" if check.trailing else ""
            lines.append(f'    yield "{check.kind}", {condition}, {message}{trailing}')
        return "\n".join(lines) + "\n"

    # ---- the assertion module's error classes move to the runtime ------------------------------
    def leave_ref(self, original, updated):
        for qname in self.m.qnames(original):
            short = _short(qname)
            if short in ERRORS:
                parent = self.m.parent(original)
                if isinstance(parent, (cst.ImportAlias, cst.Attribute)) and not (
                        isinstance(parent, cst.Attribute) and parent.value is original):
                    return None
                self.m.mark(original)
                if isinstance(original, cst.Attribute):
                    self.m.need_import(RUNTIME, short)
                    return cst.Name(short)
                self.m.need_import(RUNTIME, short, None if original.value == short else original.value)
                return None
        return None

    def leave_import_from(self, original: cst.ImportFrom, updated: cst.ImportFrom):
        if original.module is None or isinstance(updated.names, cst.ImportStar):
            return None
        module = cst.helpers.get_full_name_for_node(original.module) or ""
        if not any(module + "." + e in (p + e for p in PREFIXES) for e in ERRORS):
            return None
        keep = [a for a in updated.names if a.name.value not in ERRORS]
        if len(keep) == len(updated.names):
            return None
        if not keep:
            return cst.RemoveFromParent()
        keep[-1] = keep[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return updated.with_changes(names=keep)
