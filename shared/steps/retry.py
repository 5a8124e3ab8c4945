"""The one retry layer: exponential backoff with jitter and a cap, Retry-After honoured.

Only transient failures are retried (rate limits, 5xx, timeouts, connection errors); auth,
billing and bad-request errors fail at once. DSPy's num_retries, LiteLLM's and botocore's
retries are all off, so this loop is the only one. A wait longer than
``RetryConfig.max_inline_wait`` is not slept here: :class:`RetryLater` hands it to the queue.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from dspy import lm15
from dspy.lm15 import Request, Response

from shared.config import RetryConfig
from shared.errors import RetryLater
from shared.steps import stats
from shared.steps.base import CallNext

TRANSIENT = (lm15.RateLimitError, lm15.ServerError, lm15.TimeoutError, lm15.TransportError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) and not isinstance(exc, lm15.ContextLengthError)


def backoff_delay(config: RetryConfig, retry_number: int, rng: random.Random) -> float:
    """Delay before retry ``retry_number`` (0-based): capped exponential, +/- jitter."""
    base = min(config.max_delay, config.base_delay * config.backoff_factor ** retry_number)
    if config.jitter:
        base *= 1 + rng.uniform(-config.jitter, config.jitter)
    return max(0.0, base)


class RetryStep:
    name = "retry"

    def __init__(self, config: RetryConfig, *, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        self.config = config
        self.sleep = sleep
        self.rng = rng or random.Random()

    def __call__(self, request: Request, call_next: CallNext) -> Response:
        retry_number = 0
        collector = stats.current()
        while True:
            if collector is not None:
                collector.attempts += 1
            try:
                return call_next(request)
            except lm15.LM15Error as exc:
                self.sleep(self.wait_before_retry(exc, retry_number, collector))
                retry_number += 1

    def wait_before_retry(self, exc: lm15.LM15Error, retry_number: int, collector) -> float:
        """Seconds to wait before retry ``retry_number`` of a failed attempt, or raise: the error
        itself when it is not retried, RetryLater when the wait belongs to the queue. (The async
        twin, shared/steps/async_steps.py, applies the same policy.)"""
        if not is_transient(exc) or retry_number >= self.config.max_retries:
            raise exc
        hinted = exc.retry_after is not None and exc.retry_after >= 0
        wait = float(exc.retry_after) if hinted else backoff_delay(self.config, retry_number, self.rng)
        if wait > self.config.max_inline_wait:
            raise RetryLater(f"{type(exc).__name__}: provider asks to wait {wait:.1f}s", delay=wait) from exc
        if collector is not None:
            collector.retries += 1
        return wait
