"""The base of the rule modules (wrappers, assertions, dspy3). Kept apart from the transformer
that runs them, so that the transformer imports the rules and no rule imports the transformer."""

from __future__ import annotations

from typing import Any

import libcst as cst

from shared.migrate.cstutil import code, expr


class Rule:
    """Every hook returns a replacement or None (not mine). ``m`` is the running Migrator
    (shared.migrate.transform): its helpers qnames/line/parent/report/mark/need_import/dspy."""

    def __init__(self, m: Any):
        self.m = m

    def legacy_reason(self, qname: str) -> str | None:
        return None

    def analyze(self, module: Any) -> None:
        pass

    def leave_call(self, original, updated):
        return None

    def leave_ref(self, original, updated):
        return None

    def leave_statement(self, original, updated):
        return None

    def leave_function(self, original, updated):
        return None

    def leave_class(self, original, updated):
        return None

    def leave_import_from(self, original, updated):
        return None

    def leave_import(self, original, updated):
        return None


class RuntimeRule(Rule):
    """A rule that moves 2.x names to a tidyq runtime module (``tidyq.assertions``, ``tidyq.dspy2``):
    ``dspy.X`` -> ``X`` imported from the runtime (``runtime.X`` when the file binds ``X`` to something
    else), and ``from dspy... import X, Y`` -> ``from runtime import X`` plus what stays."""

    runtime = ""
    provided: tuple[str, ...] = ()
    roots: tuple[str, ...] = ("dspy",)  # packages whose attribute chains are rewritten in place

    def __init__(self, m: Any):
        super().__init__(m)
        self.taken: set[str] = set()  # runtime names the file binds to something else

    def target(self, qname: str) -> str | None:
        """The runtime's name for a 2.x qualified name, else None."""
        raise NotImplementedError

    def find_taken(self, module: Any) -> None:
        rule = self

        class _Names(cst.CSTVisitor):
            def visit_Attribute(self, node: cst.Attribute) -> bool:
                node.value.visit(self)  # `x.Assert` does not bind the name Assert
                return False

            def visit_Name(self, node: cst.Name) -> None:
                if node.value in rule.provided and not any(rule.target(q) for q in rule.m.qnames(node)):
                    rule.taken.add(node.value)

        module.visit(_Names())

    def runtime_ref(self, name: str) -> Any:
        """``X`` (imported from the runtime), or ``runtime.X`` when X is taken."""
        if name in self.taken:
            self.m.need_import(self.runtime)
            return expr(f"{self.runtime}.{name}")
        self.m.need_import(self.runtime, name)
        return cst.Name(name)

    def inside_import(self, node: Any) -> bool:
        cur = self.m.parent(node)
        while cur is not None and not isinstance(cur, cst.BaseStatement):
            if isinstance(cur, (cst.Import, cst.ImportFrom)):
                return True
            cur = self.m.parent(cur)
        return False

    def leave_ref(self, original, updated):
        name = next((t for t in map(self.target, self.m.qnames(original)) if t), None)
        if name is None or self.inside_import(original):
            return None
        self.m.mark(original)
        if isinstance(original, cst.Name):
            return None  # bound by a `from ... import` that leave_statement rewrites
        root = original
        while isinstance(root, cst.Attribute):
            root = root.value
        if isinstance(root, cst.Name) and any(q.split(".")[0] in self.roots for q in self.m.qnames(root)) and \
                root.value in (*self.roots, self.m.dspy_alias):
            return self.runtime_ref(name)
        return None  # A.Suggest with `import dspy.primitives.assertions as A`: the import is rewritten

    def moves_from(self, module: str) -> bool:
        """Whether ``from module import X`` with a runtime X is split by leave_statement."""
        return True

    def leave_statement(self, original, updated):
        """``from dspy import Assert, Predict``: the runtime's names move to their own import."""
        stmt = updated.body[0] if len(updated.body) == 1 else None
        if not isinstance(stmt, cst.ImportFrom) or stmt.module is None or stmt.relative or \
                isinstance(stmt.names, cst.ImportStar):
            return None
        module = cst.helpers.get_full_name_for_node(stmt.module) or ""
        moved = [a for a in stmt.names if self.moves_from(module) and self.target(f"{module}.{a.name.value}")]
        if not moved:
            return None
        self.m.mark(original)
        renamed = [a.with_changes(name=cst.Name(self.target(f"{module}.{a.name.value}") or ""),
                                  asname=a.asname or (None if self.target(f"{module}.{a.name.value}") == a.name.value
                                                      else cst.AsName(name=cst.Name(a.name.value))),
                                  comma=cst.MaybeSentinel.DEFAULT) for a in moved]
        runtime = cst.parse_statement(f"from {self.runtime} import {', '.join(code(a) for a in renamed)}")
        kept = [a for a in stmt.names if a.name.value not in {m.name.value for m in moved}]
        if not kept:
            return runtime.with_changes(leading_lines=updated.leading_lines)
        kept[-1] = kept[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return cst.FlattenSentinel([updated.with_changes(body=[stmt.with_changes(names=kept)]), runtime])
