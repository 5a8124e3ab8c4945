"""The backoff of an ambiguous 429 (no Retry-After, no x-ratelimit reset): one state per target.

Why per target and not per item: a 429 that says nothing is either a random refusal (a shared
provider's overload: a 30% storm that no rate of ours causes) or our own rate hitting a limit. A
per-item chain (0.2 s doubling) punished the unlucky items of a random storm: one in a few hundred
meets 5-7 refusals in a row and waited seconds while the provider had room (a 30% storm took 14x a
storm-free run). Here the pause follows what the target answers to everyone in this process: its
recent refusal share (an average over the last ~32 attempts). While at most ``TOLERATED_SHARE`` of
the attempts are refused, a retry waits ``uniform(0, rate_limit_base_delay)`` (full jitter); above
it the ceiling rises geometrically with the share and reaches ``rate_limit_max_delay`` at
``SATURATED_SHARE``. Without an integrator a random excursion of the share costs a bump as large as
the excursion, never a wound-up level, and every process sees the same share of a shared limit
(a per-process experiment, "does slowing down help?", is confounded by the other processes).
So a random storm of up to ~40% costs tens of ms per retry (a fifth of that once the fleet's record
says the refusals do not follow our rate, shared/fleet_refusals.py), and a fleet that really exceeds a limit
slows down until a bit under half its attempts are refused; the learned in-flight cap
(shared/concurrency.py, the shipped default) then brings refusals down to a few. Updated without a
lock: a lost update under threads only shifts the average by one attempt.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from shared.config import RetryConfig

WEIGHT = 1 / 32  # of one attempt in the share: the last ~32 attempts count
TOLERATED_SHARE = 0.5  # above it refusals are taken as caused by our rate (Google SRE's client throttle, K=2)
SATURATED_SHARE = 0.75  # the pause reaches rate_limit_max_delay here
NOT_OURS_FRACTION = 0.2  # of rate_limit_base_delay, while the fleet's record says the refusals are not ours


class TargetBackoff:
    """Refusal share and pause ceiling of one target in this process."""

    def __init__(self, config: RetryConfig, rng: random.Random | None = None):
        self.config = config
        self.rng = rng or random.Random()
        self.share = 0.0
        # set at assembly on the async path (shared/engine.py): True while the fleet's record says
        # the refused share does not rise with our rate (shared/fleet_refusals.py), so waiting helps no one
        self.not_ours: Callable[[], bool] | None = None

    @property
    def ceiling(self) -> float:
        base, top = self.config.rate_limit_base_delay, self.config.rate_limit_max_delay
        excess = (self.share - TOLERATED_SHARE) / (SATURATED_SHARE - TOLERATED_SHARE)
        if excess <= 0 or base <= 0 or top <= base:
            if self.not_ours is not None and self.not_ours():
                return min(base, top) * NOT_OURS_FRACTION
            return min(base, top)
        return base * (top / base) ** min(1.0, excess)

    def refused(self) -> float:
        """A 429 without a wait of its own: count it and return the pause before this call's retry."""
        self.share += WEIGHT * (1.0 - self.share)
        ceiling = self.ceiling
        return self.rng.uniform(0.0, ceiling) if self.config.jitter else ceiling

    def succeeded(self) -> None:
        self.share -= WEIGHT * self.share
