"""Per-call statistics gathered by the steps and read by whoever asked for the prediction.

``track()`` opens a collector in a contextvar; every LM call made inside it (one predict may
make several: validation attempts, multi-step programs) adds to it. Contextvars are per thread,
so each item of a chunk running in its own thread gets its own numbers.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field


@dataclass
class CallStats:
    calls: int = 0
    attempts: int = 0  # provider attempts, retries included; cache hits make none
    cache_hits: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    validation_failures: int = 0
    rate_limit_wait_s: float = 0.0
    served_by: str | None = None  # "backend:model" of the target that answered (shared/fallback.py)
    skipped: list[dict] = field(default_factory=list)  # [{"target", "reason"}] passed over on the way

    @property
    def cached(self) -> bool:
        return self.calls > 0 and self.cache_hits == self.calls

    def add_cost(self, cost: float | None) -> None:
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost

    def as_dict(self) -> dict:
        return asdict(self) | {"cached": self.cached}


STATS_SETTING = "tidyq_call_stats"
_current: contextvars.ContextVar[CallStats | None] = contextvars.ContextVar("tidyq_call_stats", default=None)
_cache_bypass: contextvars.ContextVar[bool] = contextvars.ContextVar("tidyq_cache_bypass", default=False)


def current() -> CallStats | None:
    """The collector of the call being made. Threads a program starts itself (dspy.Parallel,
    Module.batch inside a user's forward) do not inherit our contextvar but do inherit DSPy's
    context overrides, where UnifiedDSPyModule also puts the collector (STATS_SETTING)."""
    found = _current.get()
    if found is None:
        import dspy

        found = getattr(dspy.settings, STATS_SETTING, None)
    return found


@contextmanager
def track() -> Iterator[CallStats]:
    """Collect the numbers of the calls made inside. A failed prediction made calls too (retries,
    validation attempts): the collector rides on the escaping exception (outermost wins), so whoever
    records the failed item reports the same attempts and LM calls the metrics counted."""
    stats = CallStats()
    token = _current.set(stats)
    try:
        yield stats
    except BaseException as exc:
        try:
            exc.__dict__[_STATS_ATTR] = stats
        except (AttributeError, TypeError):  # an exception type without a __dict__
            pass
        raise
    finally:
        _current.reset(token)


_STATS_ATTR = "_tidyq_call_stats"


def of_error(exc: BaseException) -> CallStats | None:
    """The numbers of the prediction that raised ``exc`` (None if it came from outside a track())."""
    return getattr(exc, "__dict__", {}).get(_STATS_ATTR)


@contextmanager
def bypass_cache() -> Iterator[None]:
    """Re-generation attempts must reach the provider, not replay the cached failure."""
    token = _cache_bypass.set(True)
    try:
        yield
    finally:
        _cache_bypass.reset(token)


def cache_bypassed() -> bool:
    return _cache_bypass.get()
