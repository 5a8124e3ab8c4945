"""One pass over one file: every rule module (wrappers, assertions, dspy3) hooks into the same
libcst transformer, so line numbers in findings are those of the file as the user wrote it.

Afterwards imports are tidied with libcst's own codemod helpers: legacy imports are removed only
when nothing uses them any more, so an unmigrated use keeps its import (and is reported).
"""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor, ImportItem, RemoveImportsVisitor
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider, QualifiedNameProvider

from shared.migrate.assertions import AssertionRules
from shared.migrate.cot import CotRules
from shared.migrate.dspy3 import Dspy3Rules
from shared.migrate.findings import Finding
from shared.migrate.finetune import FinetuneRules
from shared.migrate.moved import MovedRules
from shared.migrate.native import NativeRules
from shared.migrate.wrappers import WrapperRules

MARK = "# tidyq-migrate:"


class Migrator(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (QualifiedNameProvider, PositionProvider, ParentNodeProvider)

    def __init__(self, path: str, native: bool = False):
        super().__init__()
        self.path = path
        self.native = native  # --native: lift the simple assertion form to dspy.Refine (native.py)
        self.findings: list[Finding] = []
        self.notes: list[Finding] = []  # printed as path:line: note: ..., not findings
        self.accounted: set[int] = set()  # ids of original nodes rewritten or reported
        self.legacy_refs: list[tuple[cst.CSTNode, str, int]] = []  # (node, qualified name, line)
        self.imports_needed: list[ImportItem] = []
        self.dspy_alias: str | None = None
        self.legacy_imports: list[tuple[str, str | None, str | None]] = []
        self.rules = [WrapperRules(self), NativeRules(self), AssertionRules(self), MovedRules(self),
                      FinetuneRules(self), CotRules(self), Dspy3Rules(self)]
        self.claimed: set[Finding] = set()

    # ---- helpers for the rules -------------------------------------------------------------
    def qnames(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.get_metadata(QualifiedNameProvider, node, set())}

    def line(self, node: cst.CSTNode) -> int:
        try:
            return self.get_metadata(PositionProvider, node).start.line
        except KeyError:
            return 0

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.get_metadata(ParentNodeProvider, node, None)

    def enclosing(self, node: cst.CSTNode, kind: type) -> cst.CSTNode | None:
        cur = self.parent(node)
        while cur is not None and not isinstance(cur, kind):
            cur = self.parent(cur)
        return cur

    def report(self, node: cst.CSTNode, message: str) -> None:
        self.findings.append(Finding(self.path, self.line(node), message))
        self.mark(node)

    def note(self, node: cst.CSTNode, message: str) -> None:
        self.notes.append(Finding(self.path, self.line(node), f"note: {message}"))

    def mark(self, *nodes: cst.CSTNode) -> None:
        for node in nodes:
            self.accounted.add(id(node))

    def need_import(self, module: str, obj: str | None = None, alias: str | None = None) -> None:
        self.imports_needed.append(ImportItem(module, obj, alias))

    def dspy(self, attr: str) -> str:
        """Source text for dspy.<attr> in this file (``import dspy as d`` -> d.<attr>)."""
        if self.dspy_alias is None:
            self.need_import("dspy")
            return f"dspy.{attr}"
        return f"{self.dspy_alias}.{attr}"

    def is_legacy(self, qname: str) -> str | None:
        """A reason string when ``qname`` names something gone after migration, else None."""
        for rule in self.rules:
            reason = rule.legacy_reason(qname)
            if reason:
                return reason
        return None

    # ---- analysis --------------------------------------------------------------------------
    def visit_Module(self, node: cst.Module) -> None:
        migrator = self

        class _Scan(cst.CSTVisitor):
            def visit_Import(self, imp: cst.Import) -> bool:
                for alias in imp.names:
                    name = cst.helpers.get_full_name_for_node(alias.name) or ""
                    asname = _alias_name(alias)
                    if name == "dspy" and migrator.dspy_alias is None:
                        migrator.dspy_alias = asname or "dspy"
                    if migrator.is_legacy(name):
                        migrator.legacy_imports.append((name, None, asname))
                return False

            def visit_ImportFrom(self, imp: cst.ImportFrom) -> bool:
                if imp.relative or imp.module is None or isinstance(imp.names, cst.ImportStar):
                    return False
                module = cst.helpers.get_full_name_for_node(imp.module) or ""
                for alias in imp.names:
                    name = cst.helpers.get_full_name_for_node(alias.name) or ""
                    asname = _alias_name(alias)
                    if migrator.is_legacy(f"{module}.{name}") or migrator.is_legacy(module):
                        migrator.legacy_imports.append((module, name, asname))
                return False

            def visit_Name(self, name: cst.Name) -> None:
                migrator._maybe_legacy_ref(name)

            def visit_Attribute(self, attr: cst.Attribute) -> None:
                migrator._maybe_legacy_ref(attr)

        node.visit(_Scan())
        for rule in self.rules:
            rule.analyze(node)

    def _maybe_legacy_ref(self, node: cst.Name | cst.Attribute) -> None:
        parent = self.parent(node)
        if isinstance(parent, cst.Attribute) and (parent.value is node or parent.attr is node):
            return  # the outermost attribute chain is the reference
        if isinstance(parent, (cst.Arg,)) and parent.keyword is node:
            return
        root: cst.BaseExpression = node
        while isinstance(root, cst.Attribute):
            root = root.value
        # f(...).attr: libcst names it after f; for DSPy's names that is an attribute of f's result, not of f
        dspy_result = not isinstance(root, cst.Name)
        legacy = sorted(q for q in self.qnames(node) if self.is_legacy(q)
                        and not (dspy_result and q.split(".")[0] in ("dspy", "dsp")))
        if legacy:
            self.legacy_refs.append((node, legacy[0], self.line(node)))

    # ---- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, hook: str, original, updated):
        for rule in self.rules:
            result = getattr(rule, hook)(original, updated)
            if result is not None:
                return result
        return updated

    def leave_Call(self, original: cst.Call, updated: cst.Call):
        return self._dispatch("leave_call", original, updated)

    def leave_Name(self, original: cst.Name, updated: cst.Name):
        return self._dispatch("leave_ref", original, updated)

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute):
        return self._dispatch("leave_ref", original, updated)

    def leave_SimpleStatementLine(self, original, updated):
        return self._dispatch("leave_statement", original, updated)

    def leave_FunctionDef(self, original, updated):
        return self._dispatch("leave_function", original, updated)

    def leave_ClassDef(self, original, updated):
        return self._dispatch("leave_class", original, updated)

    def leave_ImportFrom(self, original, updated):
        return self._dispatch("leave_import_from", original, updated)

    def leave_Import(self, original, updated):
        return self._dispatch("leave_import", original, updated)

    # ---- every finding is marked in the code, above the statement it is on ---------------------
    def on_leave(self, original_node, updated_node):
        result = super().on_leave(original_node, updated_node)
        if isinstance(original_node, cst.BaseStatement) and isinstance(result, cst.BaseStatement):
            result = self._marked(original_node, result)
        return result

    def _marked(self, original: cst.BaseStatement, updated: cst.BaseStatement) -> cst.BaseStatement:
        """Claims the findings inside this statement not yet claimed by an inner one (leave runs
        innermost first) and writes each as a ``# tidyq-migrate: why`` line above it, once."""
        try:
            where = self.get_metadata(PositionProvider, original)
        except KeyError:
            return updated
        mine = [f for f in self.all_findings()
                if f not in self.claimed and where.start.line <= f.line <= where.end.line]
        if not mine or not isinstance(updated, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            return updated
        self.claimed.update(mine)
        have = {line.comment.value for line in updated.leading_lines if line.comment is not None}
        notes = [cst.EmptyLine(comment=cst.Comment(text)) for text in dict.fromkeys(f"{MARK} {f.message}" for f in mine)
                 if text not in have]
        return updated.with_changes(leading_lines=[*updated.leading_lines, *notes]) if notes else updated

    def all_findings(self) -> list[Finding]:
        return self.findings + list(self.unaccounted_findings())

    # ---- after the pass ------------------------------------------------------------------------
    def unaccounted_findings(self) -> Iterable[Finding]:
        for node, qname, line in self.legacy_refs:
            if id(node) not in self.accounted:
                yield Finding(self.path, line, f"{qname}: {self.is_legacy(qname)}")


def _alias_name(alias: cst.ImportAlias) -> str | None:
    """The ``as`` name of an import alias (always a plain name in an import)."""
    return cst.ensure_type(alias.asname.name, cst.Name).value if alias.asname else None


class _DropLegacyModuleImports(cst.CSTTransformer):
    """``import dspy.primitives.assertions`` binds ``dspy``, so libcst never sees it unused; once
    every use is rewritten, the import of a module DSPy 3 no longer has must go."""

    def __init__(self, is_legacy):
        super().__init__()
        self.is_legacy = is_legacy

    def leave_Import(self, original: cst.Import, updated: cst.Import):
        keep = [a for a in updated.names if not self.is_legacy(cst.helpers.get_full_name_for_node(a.name))]
        if len(keep) == len(updated.names):
            return updated
        if not keep:
            return cst.RemoveFromParent()
        keep[-1] = keep[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return updated.with_changes(names=keep)


def migrate_source(source: str, path: str, native: bool = False,
                   notes: list[Finding] | None = None) -> tuple[str, list[Finding]]:
    """(new source, findings); ``notes`` (when given) gets what --native did or left, as notes.
    Raises libcst.ParserSyntaxError for unparsable input."""
    module = cst.parse_module(source)
    wrapper = MetadataWrapper(module)
    migrator = Migrator(path, native)
    new = wrapper.visit(migrator)
    if notes is not None:
        notes += migrator.notes
    findings = migrator.all_findings()
    if new.deep_equals(wrapper.module):
        return source, sorted(set(findings))
    context = CodemodContext()
    for module_name, obj, asname in migrator.legacy_imports:
        RemoveImportsVisitor.remove_unused_import(context, module_name, obj, asname)
    new = RemoveImportsVisitor(context).transform_module(new)
    if not any(True for _ in migrator.unaccounted_findings()):
        new = new.visit(_DropLegacyModuleImports(migrator.is_legacy))
    new = AddImportsVisitor(CodemodContext(), migrator.imports_needed).transform_module(new)
    return new.code, sorted(set(findings))
