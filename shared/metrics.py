"""In-process aggregate of every LM call: what the metrics step records and the workers publish.

Counters are keyed by (backend, model). ``snapshot()`` returns plain JSON data; Prometheus
exposition and cross-process publishing read it rather than keeping their own counts.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field

LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


@dataclass
class Series:
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    attempts: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms_sum: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    validation_failures: int = 0
    rate_limit_wait_s: float = 0.0


class MetricsRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], Series] = defaultdict(Series)

    def record_call(self, backend: str, model: str, *, latency_ms: float, cached: bool, attempts: int,
                    retries: int, input_tokens: int, output_tokens: int, cost_usd: float | None,
                    error: str | None, rate_limit_wait_s: float = 0.0) -> None:
        with self._lock:
            s = self._series[(backend, model)]
            s.calls += 1
            if cached:
                s.cache_hits += 1
            else:
                s.cache_misses += 1
            s.attempts += attempts
            s.retries += retries
            s.input_tokens += input_tokens
            s.output_tokens += output_tokens
            s.cost_usd += cost_usd or 0.0
            s.latency_ms_sum += latency_ms
            s.latency_buckets[_bucket(latency_ms)] += 1
            s.rate_limit_wait_s += rate_limit_wait_s
            if error:
                s.errors[error] = s.errors.get(error, 0) + 1

    def record_validation_failure(self, backend: str, model: str) -> None:
        with self._lock:
            self._series[(backend, model)].validation_failures += 1

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [{"backend": b, "model": m, **asdict(s)} for (b, m), s in self._series.items()]

    def reset(self) -> None:
        with self._lock:
            self._series.clear()


def _bucket(latency_ms: float) -> int:
    for i, bound in enumerate(LATENCY_BUCKETS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BUCKETS_MS)


registry = MetricsRegistry()
