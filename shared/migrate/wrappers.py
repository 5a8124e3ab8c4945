"""Rewrites the five legacy wrapper entry points (the seed's tidyllm modules) to UnifiedDSPyWrapper
and UnifiedConfig, so the program configures DSPy the way it did before, with the backend taken
from TIDYQ_BACKEND when set and the legacy default otherwise:

    DSPyEnhancedWrapper(model="m", max_retries=5)
        -> UnifiedDSPyWrapper(UnifiedConfig.from_env(model="m", retry=RetryConfig(max_retries=5)))
    configure_dspy_with_gateway("claude-3-sonnet")
        -> dspy.configure(lm=UnifiedDSPyWrapper(UnifiedConfig.from_env(
               backend=os.environ.get("TIDYQ_BACKEND", "gateway"), model="claude-3-sonnet")).lm)
    lm = configure_dspy_with_gateway(...)     -> lm = UnifiedDSPyWrapper(...).lm; dspy.configure(lm=lm)
    DSPyBedrockEnhancedWrapper(model_id=...)  -> UnifiedDSPyWrapper(UnifiedConfig.from_env(backend=... "bedrock" ...))
    DSPyWrapper(model=...)                    -> UnifiedDSPyWrapper(UnifiedConfig.from_env(backend=... "direct" ...))
    DynamicModule(sig, "chain_of_thought")    -> dspy.ChainOfThought(sig)   (it ran on DSPy's configured LM)
    w.predict(sig, **inputs)  (w a legacy wrapper) -> w.create_module(sig).predict(**inputs)

The argument table is shared with the compatibility shims (shared.compat.legacy_config).
"""

from __future__ import annotations

import libcst as cst

from shared.compat.legacy_config import (
    ENTRY_POINTS,
    KEYWORDS,
    LEGACY_MODULES,
    MODULE_TYPES,
    PART_CLASSES,
    SAME_ATTRIBUTES,
    SAME_METHODS,
    EntryPoint,
)
from shared.migrate.cstutil import code, expr, split_args, string_value
from shared.migrate.rule import Rule


class WrapperRules(Rule):
    def __init__(self, m):
        super().__init__(m)
        self.instances: set[str] = set()  # source text of names bound to legacy wrapper objects
        self.comments: dict[int, list[str]] = {}  # statement id -> comments of rewritten argument lists

    def legacy_reason(self, qname: str) -> str | None:
        for module in LEGACY_MODULES:
            if qname == module or qname.startswith(module + "."):
                if qname.rsplit(".", 1)[-1] in ENTRY_POINTS:
                    return "this use of a legacy wrapper cannot be rewritten automatically; call it directly " \
                           "(not through an alias or a container) or switch to shared.compat"
                return f"not one of the legacy entry points tidyq knows ({', '.join(ENTRY_POINTS)}); " \
                       "port it by hand to shared.UnifiedDSPyWrapper"
        return None

    def entry(self, func: cst.CSTNode) -> EntryPoint | None:
        for qname in self.m.qnames(func):
            module, _, name = qname.rpartition(".")
            entry = ENTRY_POINTS.get(name)
            if entry is not None and entry.module == module:
                return entry
        return None

    def analyze(self, module: cst.Module) -> None:
        rules = self

        class _Instances(cst.CSTVisitor):
            def visit_Assign(self, node: cst.Assign) -> None:
                if isinstance(node.value, cst.Call):
                    entry = rules.entry(node.value.func)
                    if entry is not None and entry.kind == "wrapper":
                        for target in node.targets:
                            rules.instances.add(code(target.target))

        module.visit(_Instances())

    # ---- calls ---------------------------------------------------------------------------------
    def leave_call(self, original: cst.Call, updated: cst.Call):
        entry = self.entry(original.func)
        if entry is not None:
            return self._entry_call(entry, original, updated)
        if isinstance(original.func, cst.Attribute) and code(original.func.value) in self.instances:
            return self._method_call(original, updated)
        return None

    def _bind(self, entry: EntryPoint, original: cst.Call, updated: cst.Call) -> dict[str, cst.BaseExpression] | None:
        positional, keywords, starred = split_args(updated)
        if starred:
            self.m.report(original.func, f"{entry.name}(*args/**kwargs): the arguments cannot be mapped statically; "
                                         "spell them out or use shared.compat")
            return None
        if len(positional) > len(entry.positional):
            self.m.report(original.func, f"{entry.name} takes at most {len(entry.positional)} positional argument(s)")
            return None
        bound = {name: arg.value for name, arg in zip(entry.positional, positional, strict=False)}
        for key, arg in keywords.items():
            if entry.kind != "module" and key not in KEYWORDS:
                self.m.report(original.func, f"{entry.name}: argument {key!r} has no UnifiedConfig counterpart; "
                                             f"known: {', '.join(sorted(KEYWORDS))}")
                return None
            bound[key] = arg.value
        return bound

    def config_text(self, entry: EntryPoint, bound: dict[str, cst.BaseExpression]) -> str:
        args: list[str] = []
        parts: dict[str, list[str]] = {}
        default_backend = f'"{entry.default_backend}"' if entry.default_backend else None
        for key, value in bound.items():
            target = KEYWORDS[key]
            if target == "backend":
                default_backend = code(value)
            elif "." in target:
                part, name = target.split(".", 1)
                parts.setdefault(part, []).append(f"{name}={code(value)}")
            else:
                args.append(f"{target}={code(value)}")
        if default_backend:
            self.m.need_import("os")
            args.insert(0, f'backend=os.environ.get("TIDYQ_BACKEND", {default_backend})')
        for part, values in parts.items():
            self.m.need_import("shared", PART_CLASSES[part])
            args.append(f"{part}={PART_CLASSES[part]}({', '.join(values)})")
        self.m.need_import("shared", "UnifiedConfig")
        return f"UnifiedConfig.from_env({', '.join(args)})"

    def _entry_call(self, entry: EntryPoint, original: cst.Call, updated: cst.Call):
        bound = self._bind(entry, original, updated)
        if bound is None:
            return None
        self._keep_comments(original)
        if entry.kind == "module":
            return self._dynamic_module(entry, original, bound)
        wrapper = f"UnifiedDSPyWrapper({self.config_text(entry, bound)})"
        self.m.need_import("shared", "UnifiedDSPyWrapper")
        if entry.kind == "wrapper":
            self.m.mark(original.func)
            return expr(wrapper)
        parent = self.m.parent(original)
        if isinstance(parent, cst.Expr):
            self.m.mark(original.func)
            return expr(f"{self.m.dspy('configure')}(lm={wrapper}.lm)")
        if self._assigned_to_one_name(original):
            self.m.mark(original.func)
            return expr(f"{wrapper}.lm")
        self.m.report(original.func, f"{entry.name}(...) is used inside an expression; tidyq migrate rewrites it as "
                                     "a statement or `name = configure_dspy_with_gateway(...)`")
        return None

    def _keep_comments(self, call: cst.Call) -> None:
        """Comments inside a rewritten argument list move above the statement, never vanish."""
        found: list[str] = []

        class _C(cst.CSTVisitor):
            def visit_Comment(self, node: cst.Comment) -> None:
                found.append(node.value)

        call.visit(_C())
        statement = self.m.enclosing(call, cst.SimpleStatementLine)
        if found and statement is not None:
            self.comments.setdefault(id(statement), []).extend(found)

    def _assigned_to_one_name(self, call: cst.Call) -> bool:
        parent = self.m.parent(call)
        return (isinstance(parent, cst.Assign) and len(parent.targets) == 1
                and isinstance(parent.targets[0].target, cst.Name))

    def _dynamic_module(self, entry: EntryPoint, original: cst.Call, bound: dict[str, cst.BaseExpression]):
        unknown = sorted(set(bound) - {"signature", "module_type"})
        if unknown or "signature" not in bound:
            why = f"unknown argument(s) {unknown}" if unknown else "no signature given"
            self.m.report(original.func, f"DynamicModule: {why}; expected DynamicModule(signature, module_type=...)")
            return None
        kind = "predict"
        if "module_type" in bound:
            literal = string_value(bound["module_type"])
            if literal is None or literal.lower() not in MODULE_TYPES:
                self.m.report(original.func, "DynamicModule: module_type must be a literal, one of "
                                             f"{', '.join(sorted(MODULE_TYPES))}")
                return None
            kind = literal
        self.m.mark(original.func)
        return expr(f"{self.m.dspy(MODULE_TYPES[kind.lower()])}({code(bound['signature'])})")

    def _method_call(self, original: cst.Call, updated: cst.Call):
        name = cst.ensure_type(original.func, cst.Attribute).attr.value
        if name in SAME_METHODS:
            return None
        if name == "predict":
            positional, keywords, starred = split_args(updated)
            if len(positional) == 1 and not starred:
                target = code(cst.ensure_type(updated.func, cst.Attribute).value)
                rest = ", ".join(code(arg.value) if arg.keyword is None else f"{arg.keyword.value}={code(arg.value)}"
                                 for arg in updated.args[1:])
                return expr(f"{target}.create_module({code(positional[0].value)}).predict({rest})")
        self.m.report(original, f"{code(original.func)}(...): the legacy wrapper method {name!r} has no "
                                "UnifiedDSPyWrapper counterpart (it has create_module, get_info, close)")
        return None

    def leave_ref(self, original, updated):
        if isinstance(original, cst.Attribute) and code(original.value) in self.instances:
            parent = self.m.parent(original)
            if isinstance(parent, cst.Call) and parent.func is original:
                return None
            if original.attr.value not in SAME_ATTRIBUTES + SAME_METHODS:
                self.m.report(original, f"{code(original)}: UnifiedDSPyWrapper has no attribute "
                                        f"{original.attr.value!r}")
        return None

    # ---- `lm = configure_dspy_with_gateway(...)` needs a dspy.configure after it -------------------
    def leave_statement(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        comments = self.comments.get(id(original))
        if comments:
            updated = updated.with_changes(leading_lines=list(updated.leading_lines) + [
                cst.EmptyLine(comment=cst.Comment(c)) for c in comments])
        result = self._configure_after(original, updated)
        return result if result is not None else (updated if comments else None)

    def _configure_after(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        if len(original.body) != 1 or not isinstance(original.body[0], cst.Assign):
            return None
        assign = original.body[0]
        if not isinstance(assign.value, cst.Call) or id(assign.value.func) not in self.m.accounted:
            return None
        entry = self.entry(assign.value.func)
        if entry is None or entry.kind != "configure" or not self._assigned_to_one_name(assign.value):
            return None
        target = cst.ensure_type(assign.targets[0].target, cst.Name).value
        configure = cst.parse_statement(f"{self.m.dspy('configure')}(lm={target})\n")
        return cst.FlattenSentinel([updated, configure])
