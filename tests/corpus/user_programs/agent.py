"""dspy.ReAct with two tools, a float answer, made at import time and by a factory (the DSPy docs
shape `dspy.ReAct("question -> answer: float", tools=[evaluate_math, search_wikipedia])`)."""

import ast
import operator

import dspy

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
ABSTRACTS = {"David Gregory": "David Gregory (1625-1720) was a Scottish physician and inventor."}


def _eval(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError("only + - * / on numbers")


def evaluate_math(expression: str) -> float:
    """Evaluate an arithmetic expression (the docs use dspy.PythonInterpreter, which needs Deno)."""
    return float(_eval(ast.parse(expression, mode="eval").body))


def search_wikipedia(query: str) -> list[str]:
    """Local in-memory stand-in for ColBERTv2 over wiki17_abstracts."""
    return [text for name, text in ABSTRACTS.items() if name.lower() in query.lower()] or ["no abstract found"]


agent = dspy.ReAct("question -> answer: float", tools=[evaluate_math, search_wikipedia])


def create_react_agent(max_iters: int = 5):
    """A factory whose argument has a default (`create_react_agent()` in public tutorials)."""
    return dspy.ReAct("question -> answer: float", tools=[evaluate_math, search_wikipedia], max_iters=max_iters)
