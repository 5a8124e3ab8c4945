"""What a migrated file must no longer use: DSPy 2.x names DSPy 3 removed (read from the code's
syntax tree, so comments and docstrings that mention them do not count)."""

from __future__ import annotations

import ast

REMOVED_ATTRIBUTES = {"Assert", "Suggest", "OpenAI", "TypedPredictor", "TypedChainOfThought", "Retry", "HFClientVLLM",
                      "assert_transform_module", "backtrack_handler", "ChainOfThoughtWithHint", "Clarifai", "Pyserini",
                      "HFModel"}
REMOVED_MODULES = ("dsp", "dspy.primitives.assertions", "dspy.functional", "dspy.retrieve")


def removed_uses(source: str) -> list[str]:
    """Each use of a removed DSPy 2.x API in ``source``, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            names = []
        found += [f"{node.lineno}: import {n}" for n in names  # type: ignore[attr-defined]
                  if any(n == m or n.startswith(m + ".") for m in REMOVED_MODULES)]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "dspy" \
                and node.attr in REMOVED_ATTRIBUTES:
            found.append(f"{node.lineno}: dspy.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr == "activate_assertions":
            found.append(f"{node.lineno}: .activate_assertions")
    return found
