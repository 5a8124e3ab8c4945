"""The one requeue policy: what happens to the items a chunk handed back.

``decide(outcome, chunk, settings)`` returns
- ``Done``: nothing to hand back;
- ``Requeue(items, delay, counted)``: back to the queue with a Celery countdown;
- ``GiveUp(items, reason)``: the items fail with the reason.

Rules, in order:
- every target's breaker open (AllTargetsOpen): wait until the earliest half-open time, not
  counted as a requeue (the provider was not asked), unless that is past the job's deadline;
- a ``--max-cost`` job's items that did not fit beside the items in flight (``budget_wait``): a
  short countdown (``TIDYQ_BUDGET_WAIT_SECONDS``), not counted;
- more than ``TIDYQ_MAX_REQUEUES`` trips: give up;
- a transient provider failure that outlasted the in-place retries (``ProviderStillFailing``,
  what the chunk runner raises when no breaker turned it into AllTargetsOpen): exponential
  backoff from ``TIDYQ_REQUEUE_BACKOFF_SECONDS`` with jitter, at least any wait the provider asked;
- otherwise (a long Retry-After, our rate limit, a soft time limit) the wait that was asked for;
- a countdown is capped at ``TIDYQ_MAX_REQUEUE_DELAY`` and never ends past the job's deadline.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from dspy import lm15

from shared.config import Settings
from shared.errors import AllTargetsOpen, RetryLater
from shared.fallback import job_deadline, requeue_delay
from shared.jobs import ChunkPayload, Item
from shared.steps.retry import is_transient


class ProviderStillFailing(RetryLater):
    """A transient provider failure that outlasted the in-place retries: the item goes back to
    the queue with backoff instead of failing."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}"[:500], delay=0.0)


def transient_cause(exc: BaseException | None) -> BaseException | None:
    """The transient provider error (429, 5xx, timeout, connection) behind ``exc``, if any: an
    lm15 error from inside the engine, or the DSPy LMError it became outside (DSPy's own
    classification, ``is_retryable_lm_error``; its local lock timeout is not a provider's)."""
    from dspy.utils.exceptions import LMLockTimeoutError, is_retryable_lm_error

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, lm15.LM15Error) and is_transient(exc):
            return exc
        if isinstance(exc, Exception) and is_retryable_lm_error(exc) and not isinstance(exc, LMLockTimeoutError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Requeue:
    items: list[Item]
    delay: float
    counted: bool  # counts toward TIDYQ_MAX_REQUEUES
    reason: str
    waiting: AllTargetsOpen | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GiveUp:
    items: list[Item]
    reason: str


def backoff(requeues: int, settings: Settings, rng: random.Random | None = None) -> float:
    """Countdown before requeue number ``requeues + 1`` of a still-failing item (+/- 20%)."""
    base = min(settings.max_requeue_delay, settings.requeue_backoff_seconds * 2 ** requeues)
    return base * (1 + (rng or random).uniform(-0.2, 0.2))


def decide(outcome, chunk: ChunkPayload, settings: Settings, *, now: float | None = None,
           rng: random.Random | None = None) -> Done | Requeue | GiveUp:
    """The fate of ``outcome.requeue`` (a ChunkOutcome of workers/chunk.py)."""
    items = list(outcome.requeue)
    if not items:
        return Done()
    now = time.time() if now is None else now
    deadline = job_deadline(chunk.job.deadline, chunk.job.created_at, settings)
    wait = outcome.waiting_for_backend
    if wait is not None:
        delay = requeue_delay(wait, deadline=deadline, now=now)
        if delay is None:
            return GiveUp(items, f"job deadline passed while {wait}")
        return Requeue(items, min(delay, settings.max_requeue_delay), False, str(wait), wait)
    if getattr(outcome, "budget_wait", False):  # --max-cost: the items in flight settle first (not counted)
        return Requeue(items, settings.budget_wait_seconds, False, "waiting for the job's items in flight (budget)")
    reason = outcome.requeue_reason
    if chunk.requeues >= settings.max_requeues:
        return GiveUp(items, reason)
    delay = outcome.requeue_delay
    if getattr(outcome, "backoff", False):
        delay = max(delay, backoff(chunk.requeues, settings, rng))
    delay = min(max(0.0, delay), settings.max_requeue_delay)
    if now + delay > deadline:
        return GiveUp(items, f"job deadline passed while waiting to retry: {reason}")
    return Requeue(items, delay, True, reason)
