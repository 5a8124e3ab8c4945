"""The one retry layer: exponential backoff with jitter and a cap, Retry-After honoured.

Only transient failures are retried (rate limits, 5xx, timeouts, connection errors); auth,
billing and bad-request errors fail at once. Rate-limit answers (429, 503 with Retry-After) are
not failures: they have their own budget (``max_rate_limit_retries``), and when a global rate
limit paces the backend the retry waits for the limiter's next slot rather than a backoff that
would only idle the worker (the limiter has dropped its burst on the 429: shared/steps/ratelimit.py).
Without a limiter, a 429 that names no wait (no Retry-After, no x-ratelimit reset) takes the
target's own backoff (shared/steps/target_backoff.py: none while the target refuses at most half
of the attempts, from tens of ms growing only while it refuses more), neither the failure schedule
(1 s doubling: a 30% 429 storm took 20x longer) nor a per-item chain (0.2 s doubling: 14x).
The target's pause is sat out in the target's waiting room (shared/steps/waiting_room.py): a process
never idles with a paused retry of the target while it has no call of it active (a call ending wakes
the earliest; the last one pausing waits at most a short idle probe). Past half its rate-limit budget a
call waits at least its own doubling chain (a real limit's onset, where the share is still low).
DSPy's num_retries, LiteLLM's and botocore's retries are all off, so this loop is the only one. A wait longer than
``RetryConfig.max_inline_wait`` is not slept here: :class:`RetryLater` hands it to the queue.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from dspy import lm15
from dspy.lm15 import Request, Response

from shared.concurrency import throttle_pause
from shared.config import RetryConfig
from shared.errors import RetryLater
from shared.steps import stats
from shared.steps.base import CallNext
from shared.steps.target_backoff import TargetBackoff
from shared.steps.waiting_room import WaitingRoom

# set on a rate-limit error by the rate limit step when a global limiter paces that backend
PACED = "tidyq_paced_by_limiter"

TRANSIENT = (lm15.RateLimitError, lm15.ServerError, lm15.TimeoutError, lm15.TransportError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) and not isinstance(exc, lm15.ContextLengthError)


def is_rate_limited(exc: BaseException) -> bool:
    """429, or 503 with Retry-After: the provider asks us to slow down, it is not broken. These
    feed the backoff (Retry-After honoured) and the rate limiter, never a breaker's failure rate."""
    if isinstance(exc, lm15.RateLimitError):
        return True
    return isinstance(exc, lm15.ServerError) and exc.status == 503 and exc.retry_after is not None


def backoff_delay(config: RetryConfig, retry_number: int, rng: random.Random) -> float:
    """Delay before retry ``retry_number`` (0-based): capped exponential, +/- jitter."""
    base = min(config.max_delay, config.base_delay * config.backoff_factor ** retry_number)
    if config.jitter:
        base *= 1 + rng.uniform(-config.jitter, config.jitter)
    return max(0.0, base)


@dataclass
class RetryTally:
    """Retries made so far for one call: after failures, and after rate-limit answers (own budget)."""

    failures: int = 0
    limited: int = 0
    wakeable: bool = False  # the last wait is the target's pause (the waiting room's), not an exact one
    probes: int = 0  # pauses of this call shortened to an idle probe (shared/steps/waiting_room.py)


class RetryStep:
    name = "retry"

    def __init__(self, config: RetryConfig, *, sleep: Callable[[float], None] | None = None,
                 rng: random.Random | None = None):
        """``sleep`` given replaces every wait of the sync path, the target's pauses included (the
        policy's tests read what was drawn); by default those are sat out in the waiting room."""
        self.config = config
        self.sleep = sleep or time.sleep
        self.injected = sleep is not None
        self.rng = rng or random.Random()
        self.backoff = TargetBackoff(config, self.rng)  # this step serves one target (shared/engine.py)
        self.room = WaitingRoom(config.rate_limit_base_delay)  # this target's paused retries here (both paths)

    def __call__(self, request: Request, call_next: CallNext) -> Response:
        tally = RetryTally()
        collector = stats.current()
        with self.room.call():
            while True:
                if collector is not None:
                    collector.attempts += 1
                try:
                    response = call_next(request)
                except lm15.LM15Error as exc:
                    wait = self.wait_before_retry(exc, tally, collector)
                    if tally.wakeable and not self.injected:
                        tally.probes += self.room.pause(wait, tally.probes, self.may_end_early(tally))
                    else:
                        self.sleep(wait)
                    continue
                self.succeeded()
                return response

    def succeeded(self) -> None:
        """An answer of the target: its refused share falls."""
        self.backoff.succeeded()

    def may_end_early(self, tally: RetryTally) -> bool:
        """Whether the waiting room may wake or probe this call's pause: not once it has spent half of
        its rate-limit retries (the room's early retries must not use up the budget)."""
        return tally.limited <= self.config.max_rate_limit_retries // 2

    def wait_before_retry(self, exc: lm15.LM15Error, tally: RetryTally, collector) -> float:
        """Seconds to wait before retrying a failed attempt, or raise: the error itself when it is not
        retried (not transient, or its budget spent), RetryLater when the wait belongs to the queue.
        Counts the retry in ``tally``. (The async twin, shared/steps/async_steps.py, applies the same
        policy.)"""
        rate_limited = is_rate_limited(exc)
        count, budget = (tally.limited, self.config.max_rate_limit_retries) if rate_limited \
            else (tally.failures, self.config.max_retries)
        if not is_transient(exc) or count >= budget:
            raise exc
        wait, wakeable = self._wait(exc, count, rate_limited)
        if wait > self.config.max_inline_wait:
            raise RetryLater(f"{type(exc).__name__}: provider asks to wait {wait:.1f}s", delay=wait) from exc
        if collector is not None:
            collector.retries += 1
        if rate_limited:
            tally.limited += 1
        else:
            tally.failures += 1
        tally.wakeable = wakeable
        return wait

    def _wait(self, exc: lm15.LM15Error, count: int, rate_limited: bool) -> tuple[float, bool]:
        """Retry-After when the provider gave one, or its x-ratelimit reset when it says none remain; no
        pause of our own for a rate-limit answer that the global limiter paces (the limiter's next slot
        is the wait); the target's backoff for other rate-limit answers (the only wait that may end
        early: True); else the failure backoff."""
        if exc.retry_after is not None and exc.retry_after >= 0:
            return float(exc.retry_after), False
        if not rate_limited:
            return backoff_delay(self.config, count, self.rng), False
        reset = throttle_pause(exc)
        if reset > 0:
            return reset, False
        if getattr(exc, PACED, False):
            return 0.0, False
        return self.backoff.refused(count), True
