"""One parser for numeric query parameters, shared by the REST API and the jobs page.

Both parse and bound the same way; each answers its own kind of 400 (problem+json for the API, a
page for the UI), so the error to raise is the caller's: ``error(message, where)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.errors import BadInput


def number_param(query: Mapping[str, str], name: str, kind: type, *, default: Any = None,
                 low: float | None = None, high: float | None = None,
                 error: Callable[[str, str], Exception] = lambda message, where: BadInput(message, where=where)) -> Any:
    """``query[name]`` as ``kind`` (int or float) within [low, high], or ``default`` when absent or empty."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    where = f"query parameter {name!r}"
    try:
        value = kind(raw)
    except ValueError:
        raise error(f"expected a{'n integer' if kind is int else ' number'}, got {raw[:40]!r}", where) from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}" if low is not None \
            else f"at most {high}"
        raise error(f"must be {bounds}, got {raw[:40]}", where)
    return value
