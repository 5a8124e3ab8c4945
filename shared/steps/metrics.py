"""Outermost step: latency, tokens, cost, cache hit or miss, retries and errors of every call.

Feeds the per-predict CallStats (contextvar), the process-wide MetricsRegistry and a structlog
debug event. It observes only; it never changes a request or swallows an error.
"""

from __future__ import annotations

import time

from dspy.lm15 import Request, Response

from shared.errors import error_type_name
from shared.metrics import MetricsRegistry
from shared.metrics import registry as default_registry
from shared.steps import stats
from shared.steps.base import CallNext
from shared.steps.pricing import estimate_cost
from shared.telemetry import get_logger


class MetricsStep:
    name = "metrics"

    def __init__(self, backend: str, model: str, *, pricing_provider: str | None = None,
                 registry: MetricsRegistry | None = None):
        self.backend = backend
        self.model = model
        self.pricing_provider = pricing_provider
        self.registry = registry or default_registry
        self.log = get_logger(backend=backend, model=model)
        # DSPy's price lookup is slow for a model it does not know; ask once, then remember.
        self._priced = pricing_provider is not None

    def __call__(self, request: Request, call_next: CallNext) -> Response:
        outer = stats.current()
        with stats.track() as call:
            start = time.perf_counter()
            error = None
            response = None
            try:
                response = call_next(request)
                return response
            except Exception as exc:
                error = error_type_name(exc)  # the name the item's result will carry
                raise
            finally:
                self.record(outer, call, start, response, error)

    def record(self, outer: stats.CallStats | None, call: stats.CallStats, start: float,
               response: Response | None, error: str | None) -> None:
        """One finished call into the registry, the caller's collector and the log (shared by the
        async twin in shared/steps/async_steps.py)."""
        latency_ms = (time.perf_counter() - start) * 1000
        cached = call.cache_hits > 0
        usage = response.usage if response is not None and not cached else None
        tokens_in = (usage.input_tokens or 0) if usage else 0
        tokens_out = (usage.output_tokens or 0) if usage else 0
        cost = None
        if usage and self._priced:
            cost = estimate_cost(response, self.pricing_provider, self.model)
            self._priced = cost is not None
        self.registry.record_call(
            self.backend, self.model, latency_ms=latency_ms, cached=cached, attempts=call.attempts,
            retries=call.retries, input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost,
            error=error, rate_limit_wait_s=call.rate_limit_wait_s)
        if outer is not None:
            outer.calls += 1
            outer.cache_hits += call.cache_hits
            outer.attempts += call.attempts
            outer.retries += call.retries
            outer.input_tokens += tokens_in
            outer.output_tokens += tokens_out
            outer.add_cost(cost)
            outer.latency_ms += latency_ms
            outer.rate_limit_wait_s += call.rate_limit_wait_s
        if error:
            self.log.warning("lm_call_failed", error=error, latency_ms=round(latency_ms, 2),
                             attempts=call.attempts)
