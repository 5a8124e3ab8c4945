"""The backoff of an ambiguous 429 (no Retry-After, no x-ratelimit reset): one state per target.

Why per target and not per item: a 429 that says nothing is either a random refusal (a shared
provider's overload: a 30% storm that no rate of ours causes) or our own rate hitting a limit. A
per-item chain (0.2 s doubling) punished the unlucky items of a random storm: one in a few hundred
meets 5-7 refusals in a row and waited seconds while the provider had room (a 30% storm took 14x a
storm-free run). Here the pause follows what the target answers to everyone in this process: its
recent refusal share (an average over the last ~32 attempts). While at most ``TOLERATED_SHARE`` of
the attempts are refused the refusals are taken as random and retried at once (as Google SRE's
client throttle, K=2, lets every request through while at least half are accepted): a pause there
only idles the item's slot, and a chunk waits for its unluckiest item, whose 4-8 attempts run one
after another (a uniform(0, 50 ms) pause made a 30% storm ~2.1x a storm-free run, none ~1.6x).
Above it the ceiling starts at ``rate_limit_base_delay`` and rises geometrically with the share to
``rate_limit_max_delay`` at ``SATURATED_SHARE``; a retry waits ``uniform(0, ceiling)`` (full jitter).
Without an integrator a random excursion of the share costs a bump as large as the excursion, never
a wound-up level, and every process sees the same share of a shared limit (a per-process
experiment, "does slowing down help?", is confounded by the other processes). So a random storm of
up to ~40% costs no pause, and a fleet that really exceeds a limit slows down until a bit over half
its attempts are refused; the learned in-flight cap (shared/concurrency.py, the shipped default)
then brings refusals down to a few. Updated without a lock: a lost update under threads only
shifts the average by one attempt.
"""

from __future__ import annotations

import random

from shared.config import RetryConfig

WEIGHT = 1 / 32  # of one attempt in the share: the last ~32 attempts count
TOLERATED_SHARE = 0.5  # up to it refusals are taken as random, above it as caused by our rate
SATURATED_SHARE = 0.75  # the pause reaches rate_limit_max_delay here


class RefusedShare:
    """The refused share of a target's last ~32 attempts: an exponential average, no window kept
    (the retry's pause here and the learned cap in shared/concurrency.py both follow it)."""

    def __init__(self) -> None:
        self.value = 0.0

    def refused(self) -> None:
        self.value += WEIGHT * (1.0 - self.value)

    def succeeded(self) -> None:
        self.value -= WEIGHT * self.value


class TargetBackoff:
    """Refusal share and pause ceiling of one target in this process."""

    def __init__(self, config: RetryConfig, rng: random.Random | None = None):
        self.config = config
        self.rng = rng or random.Random()
        self._share = RefusedShare()

    @property
    def share(self) -> float:
        return self._share.value

    @property
    def ceiling(self) -> float:
        base, top = self.config.rate_limit_base_delay, self.config.rate_limit_max_delay
        excess = (self.share - TOLERATED_SHARE) / (SATURATED_SHARE - TOLERATED_SHARE)
        if excess <= 0:
            return 0.0  # refusals as random as a storm's: retried at once
        if base <= 0 or top <= base:
            return min(base, top)
        return base * (top / base) ** min(1.0, excess)

    def refused(self, spent: int = 0) -> float:
        """A 429 without a wait of its own: count it and return the pause before this call's retry.
        ``spent``: the call's rate-limit retries so far. Past half of its budget the call waits at least
        its own doubling chain from rate_limit_base_delay: at the onset of a real limit the share is
        still under half (retried at once) while one call, refused in a few ms each time, could spend
        all 20 retries in ~70 ms and send its chunk back to the queue for 15 s (a 16 s job, 24.8/s)."""
        self._share.refused()
        ceiling = self._draw(self.ceiling)
        past = spent - self.config.max_rate_limit_retries // 2
        if past < 0:
            return ceiling
        base, top = self.config.rate_limit_base_delay, self.config.rate_limit_max_delay
        return max(ceiling, self._draw(min(top, base * 2 ** min(past, 30))))

    def _draw(self, ceiling: float) -> float:
        return self.rng.uniform(0.0, ceiling) if self.config.jitter else ceiling

    def succeeded(self) -> None:
        self._share.succeeded()
