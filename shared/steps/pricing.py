"""The price of one live call: DSPy's own estimate, with the price-map entry looked up once per model.

Why: DSPy's ``estimate_cost`` looks the model's entry up on every call (``model_info``: a deep
copy of the entry and ~30 regular expressions over the map's family rules), ~70 us of the ~1.5
ms of CPU a worker spends per item on the async path. The entry depends on (provider, model)
alone and the map is loaded once per process, so it is kept per (provider, model) here, read
only (a mappingproxy), and DSPy's own pricing function runs on it unchanged: the same tiers,
cached and reasoning tokens, long-context rates and refusals (tests/unit/test_pricing.py
compares it with ``dspy.clients.costs.estimate_cost``). If DSPy's pricing module changes shape,
this falls back to its public function.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

from dspy.lm15 import Response


@functools.lru_cache(maxsize=1024)
def _entry(provider: str, model: str, namespaces: tuple[str, ...] | None) -> Mapping[str, Any]:
    from dspy.clients.model_metadata import model_info

    return types.MappingProxyType(model_info(provider, model, namespaces=namespaces))


def _kept_entry(provider: str, model: str, *, namespaces: Any = None) -> Mapping[str, Any]:
    return _entry(provider, model, tuple(namespaces) if namespaces is not None else None)


@functools.cache
def _estimator() -> Callable[..., tuple[float | None, dict]]:
    """DSPy's ``_estimate_cost`` reading its ``model_info`` from the kept entries."""
    from dspy.clients import costs

    inner = getattr(costs, "_estimate_cost", None)
    if not isinstance(inner, types.FunctionType) or "model_info" not in inner.__code__.co_names:
        return costs.estimate_cost
    rebound = types.FunctionType(inner.__code__, {**vars(costs), "model_info": _kept_entry}, inner.__name__,
                                 inner.__defaults__, inner.__closure__)
    rebound.__kwdefaults__ = inner.__kwdefaults__
    return rebound


def estimate_cost(response: Response, provider: str | None, model: str) -> float | None:
    """USD for one response of ``model`` at ``provider``, None when the map cannot price it."""
    if provider is None:
        return None
    try:
        cost, _ = _estimator()(response, provider=provider, requested_model=model)
        return cost
    except Exception:
        return None
