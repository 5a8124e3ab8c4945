"""Small libcst helpers shared by the rule modules: qualified names, source text, free names."""

from __future__ import annotations

import libcst as cst

_EMPTY = cst.Module(body=[])


def code(node: cst.CSTNode) -> str:
    """The source text of a node, as written (comments and formatting kept)."""
    return _EMPTY.code_for_node(node)


def expr(text: str) -> cst.BaseExpression:
    return cst.parse_expression(text)


def string_value(node: cst.CSTNode | None) -> str | None:
    """The value of a plain string literal, else None."""
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def int_value(node: cst.CSTNode | None) -> int | None:
    if isinstance(node, cst.Integer):
        return int(node.evaluated_value)
    return None


def split_args(call: cst.Call) -> tuple[list[cst.Arg], dict[str, cst.Arg], bool]:
    """(positional args, keyword args by name, has *args/**kwargs)."""
    positional, keywords, starred = [], {}, False
    for arg in call.args:
        if arg.star:
            starred = True
        elif arg.keyword is not None:
            keywords[arg.keyword.value] = arg
        else:
            positional.append(arg)
    return positional, keywords, starred


class _Names(cst.CSTVisitor):
    """Names an expression reads (not attribute names, keyword names or names it binds itself)."""

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.bound: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.read.add(node.value)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False

    def visit_CompFor(self, node: cst.CompFor) -> None:
        for name in _target_names(node.target):
            self.bound.add(name)

    def visit_Param(self, node: cst.Param) -> None:
        self.bound.add(node.name.value)


def free_names(node: cst.CSTNode) -> set[str]:
    visitor = _Names()
    node.visit(visitor)
    return visitor.read - visitor.bound


def _target_names(target: cst.CSTNode) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for el in target.elements for n in _target_names(el.value)]
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    return []


def assigned_targets(stmt: cst.CSTNode) -> list[cst.BaseExpression]:
    """Every assignment target inside a statement (not descending into nested defs/classes/lambdas)."""
    found: list[cst.BaseExpression] = []

    class _V(cst.CSTVisitor):
        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            found.append(node.target)

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            found.append(node.target)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            found.append(node.target)

        def visit_For(self, node: cst.For) -> None:
            found.append(node.target)

        def visit_AsName(self, node: cst.AsName) -> None:
            found.append(node.name)

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            found.append(node.target)

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is stmt

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

    stmt.visit(_V())
    return found


def target_base_names(target: cst.BaseExpression) -> set[str]:
    """Names an assignment target rebinds or mutates: x, (a, b), x.attr, x[i] -> {x}."""
    if isinstance(target, cst.Name):
        return {target.value}
    if isinstance(target, (cst.Tuple, cst.List)):
        return {n for el in target.elements for n in target_base_names(el.value)}
    if isinstance(target, cst.StarredElement):
        return target_base_names(target.value)
    if isinstance(target, (cst.Attribute, cst.Subscript)):
        return target_base_names(target.value)
    return set()
