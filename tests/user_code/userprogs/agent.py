"""A ReAct agent with two tools (the tools run on the worker as written)."""

import dspy

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima"}


def lookup_capital(country: str) -> str:
    """The capital city of a country."""
    return CAPITALS.get(country, "unknown")


def add(a: int, b: int) -> int:
    """The sum of two integers."""
    return a + b


def make_agent():
    """A zero-argument factory: what `--program userprogs.agent:make_agent` builds."""
    return dspy.ReAct("question -> answer", tools=[lookup_capital, add], max_iters=4)
