"""Small libcst helpers shared by the rule modules: source text, literals, call arguments."""

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
