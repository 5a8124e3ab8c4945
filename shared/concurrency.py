"""Adaptive concurrency per target on the async path: how many provider calls may be in flight.

Why: a fixed ``TIDYQ_CONCURRENCY_*`` is either too low (a 1 s provider with a 150 requests/s
limit needs ~150 calls in flight) or too high (429 storms). So the cap follows the provider:

- with a rate limit configured (TIDYQ_RATE_LIMITS rpm), in flight = rate x measured latency
  (+10% and +2 so the token bucket, not the cap, is what paces the calls; the bucket keeps 429s away);
- without one it is learned (AIMD): +1 per success while below the first throttle (slow start:
  doubles per round trip), then +5% per round trip; on a 429 (at most once per round trip) down to
  90% of what the provider let through in the last 2 s x latency, and at least x0.7, but only
  when the 429 names a wait (Retry-After, or x-ratelimit-remaining-requests 0) or when the fleet's
  record says the refused share rises with the fleet's attempt rate (shared/fleet_refusals.py: a
  random storm's share is flat, a real limit's rises), or when more than half the attempts are
  refused (this process's last ~32, or the fleet's last 0.3 s beyond chance: the first second of a
  job at a limit, before there is a slope to see, and a burst), or when the record is empty (an idle
  target: the safe side until the fleet has a few dozen attempts). Every call waits out the
  provider's Retry-After or x-ratelimit-reset-requests when x-ratelimit-remaining-requests says 0.

The learned cap is published to Redis (shared/keys.py ``concurrency``: one field per worker
process, read by ``tidyq queues`` and the metrics exporter) and a new worker starts from what the
others learned. The limiter lives on one event loop at a time (the worker's), so no lock.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from shared import keys
from shared.errors import RetryLater
from shared.fleet_refusals import NO_EVIDENCE, NOT_OURS_BELOW_SHARE, FleetRefusals
from shared.steps.target_backoff import RefusedShare

if TYPE_CHECKING:  # the fleet view below is read by `tidyq queues`, which never loads DSPy
    from dspy import lm15
    from dspy.lm15 import Request, Response

DECREASE = 0.7
RATE_WINDOW_S = 2.0  # long enough that a provider's burst credit does not read as its rate
PROBE_GROWTH = 0.05  # per success after the first throttle
SHARE_EVERY_S = 1.0
SHARE_TTL_S = 300
FRESH_S = 60.0


def _first_float(headers: Any, name: str) -> float | None:
    try:
        values = headers.get(name) if headers else None
        if not values:
            return None
        raw = values[0] if isinstance(values, tuple | list) else values
        raw = str(raw).strip().lower()
        if raw.endswith("ms"):
            return float(raw[:-2]) / 1000
        return float(raw.rstrip("s"))
    except (TypeError, ValueError, AttributeError):
        return None


def throttle_pause(exc: lm15.LM15Error) -> float:
    """Seconds every call to this target should wait after a refusal: Retry-After, else the
    request window's reset when the provider says no requests remain."""
    if exc.retry_after is not None and exc.retry_after >= 0:
        return float(exc.retry_after)
    headers = getattr(exc, "rate_limit_headers", None)
    remaining = _first_float(headers, "x-ratelimit-remaining-requests")
    reset = _first_float(headers, "x-ratelimit-reset-requests")
    if remaining is not None and remaining <= 0 and reset is not None:
        return reset
    return 0.0


class AdaptiveLimit:
    """The in-flight cap of one target in this process."""

    def __init__(self, target: str, *, rate_per_s: float = 0.0, initial: int = 16, floor: int = 1,
                 ceiling: int = 2048, redis: Any = None, max_inline_wait: float = 10.0, clock=time.monotonic,
                 wall_clock=time.time):
        self.clock = clock  # injectable for tests: the limiter's decisions depend on time only through it
        # ... and the fleet record's slots on wall time (they line up across hosts)
        self.target = target
        self.rate_per_s = rate_per_s
        self.max_inline_wait = max_inline_wait  # a longer pause is the queue's to wait (RetryLater), not a slot's
        self.floor, self.ceiling = max(1, floor), max(floor, ceiling)
        self.redis = redis
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.limit = float(max(self.floor, min(self.ceiling, self._fleet_start() or initial)))
        self.threshold = float(self.ceiling)  # slow start until the first throttle
        self.inflight = 0
        self.latency_s: float | None = None
        self.pause_until = 0.0
        self.last_decrease = 0.0
        self.successes = 0
        self.throttles = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._recent: deque[float] = deque()  # monotonic times of the successes within RATE_WINDOW_S
        self._shared_at = 0.0
        self.refusals = FleetRefusals(target, redis, clock=wall_clock)  # learned mode: is a bare 429 ours?
        self.share = RefusedShare()  # this process's last ~32 attempts (before the fleet's is known)

    @property
    def mode(self) -> str:
        if self.floor == self.ceiling:
            return "pinned"  # TIDYQ_CONCURRENCY_<BACKEND> set explicitly
        return "configured" if self.rate_per_s > 0 else "learned"

    # ---------------------------------------------------------------- gate
    async def acquire(self) -> None:
        while True:
            now = self.clock()
            if now < self.pause_until:
                pause = self.pause_until - now
                if pause > self.max_inline_wait:
                    raise RetryLater(f"{self.target}: the provider asked to wait {pause:.1f}s", delay=pause)
                await asyncio.sleep(pause)
                continue
            if self.inflight < int(self.limit):
                self.inflight += 1
                return
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass

    def release(self) -> None:
        self.inflight -= 1
        self._wake()

    def _wake(self) -> None:
        room = int(self.limit) - self.inflight
        while room > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                room -= 1

    # ---------------------------------------------------------------- feedback
    def on_success(self, latency_s: float) -> None:
        self.successes += 1
        self.share.succeeded()
        if self.mode == "learned":
            self.refusals.record(False)
        now = self.clock()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > RATE_WINDOW_S:
            self._recent.popleft()
        self.latency_s = latency_s if self.latency_s is None else 0.9 * self.latency_s + 0.1 * latency_s
        if self.rate_per_s > 0:
            self.limit = math.ceil(self.rate_per_s * self.latency_s * 1.1) + 2.0
        elif self.limit < self.threshold:
            self.limit += 1.0
        else:
            self.limit += PROBE_GROWTH  # ~5% per round trip: back near the limit within a few seconds
        self.limit = max(self.floor, min(self.ceiling, self.limit))
        self._wake()
        self._share()

    def on_throttle(self, exc: lm15.LM15Error) -> None:
        self.throttles += 1
        self.share.refused()
        now = self.clock()
        pause = throttle_pause(exc)
        if pause > 0:
            self.pause_until = max(self.pause_until, now + pause)
        if self.mode != "learned":
            return self._share()
        self.refusals.record(True)
        evidence = self.refusals.verdict
        idle = evidence.kind == "unknown" and evidence.attempts < NO_EVIDENCE  # nothing known: the safe side
        ours = (pause > 0 or idle or evidence.kind == "limit" or evidence.mostly_refused
                or self.share.value > NOT_OURS_BELOW_SHARE)
        if ours and now - self.last_decrease >= (self.latency_s or 0.1):
            # what the provider just let through (successes in the last second x latency) is the
            # best estimate of its limit in calls in flight; x0.7 bounds the cut when it is unknown
            cut = self.limit * DECREASE
            while self._recent and now - self._recent[0] > RATE_WINDOW_S:
                self._recent.popleft()
            if self.latency_s is not None and len(self._recent) >= 4:
                cut = min(cut, 0.9 * len(self._recent) / RATE_WINDOW_S * self.latency_s)
            self.threshold = max(self.floor, cut)
            self.limit = self.threshold
            self.last_decrease = now
            return self._share(force=True)
        self._share()

    def snapshot(self) -> dict:
        return {"limit": round(self.limit, 2), "inflight": self.inflight, "mode": self.mode,
                "latency_ms": round(self.latency_s * 1000, 1) if self.latency_s is not None else None,
                "throttles": self.throttles, "ts": round(time.time(), 3)}

    # ---------------------------------------------------------------- Redis
    def _share(self, force: bool = False) -> None:
        now = self.clock()
        if self.redis is None or (not force and now - self._shared_at < SHARE_EVERY_S):
            return
        self._shared_at = now
        try:
            key = keys.concurrency(self.target)
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, self.worker, json.dumps(self.snapshot()))
            pipe.expire(key, SHARE_TTL_S)
            pipe.sadd(keys.concurrency_index(), self.target)
            pipe.execute()
        except Exception:  # a missing metric never fails a call
            pass

    def _fleet_start(self) -> float | None:
        if self.redis is None:
            return None
        try:
            entries = fleet_limits(self.redis, self.target)
        except Exception:
            return None
        limits = sorted(e["limit"] for e in entries if e.get("mode") == "learned")
        return limits[len(limits) // 2] if limits else None


def fleet_limits(redis: Any, target: str, *, fresh_s: float = FRESH_S) -> list[dict]:
    """Every worker's recent cap for ``target`` (what `tidyq queues` and the metrics show)."""
    now = time.time()
    out = []
    for worker, raw in (redis.hgetall(keys.concurrency(target)) or {}).items():
        try:
            entry = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if now - float(entry.get("ts", 0)) <= fresh_s:
            entry["worker"] = worker.decode() if isinstance(worker, bytes) else worker
            out.append(entry)
    return out


def fleet_summary(redis: Any) -> dict[str, dict]:
    """target -> {workers, limit (sum over workers), inflight, mode} for every known target."""
    summary: dict[str, dict] = {}
    for raw in sorted(redis.smembers(keys.concurrency_index()) or ()):
        target = raw.decode() if isinstance(raw, bytes) else raw
        entries = fleet_limits(redis, target)
        if entries:
            summary[target] = {"workers": len(entries), "limit": round(sum(e["limit"] for e in entries), 1),
                               "inflight": sum(int(e.get("inflight", 0)) for e in entries),
                               "mode": entries[0].get("mode"),
                               "throttles": sum(int(e.get("throttles", 0)) for e in entries)}
    return summary


class AsyncConcurrency:
    """Async step (innermost, just before the backend): one gate per provider attempt, the
    attempt's outcome fed back to the limit."""

    name = "concurrency"

    def __init__(self, limit: AdaptiveLimit):
        from dspy.lm15 import RateLimitError

        self.limit = limit
        self.refused = RateLimitError

    async def __call__(self, request: Request, call_next) -> Response:
        await self.limit.acquire()
        started = time.monotonic()
        try:
            response = await call_next(request)
        except self.refused as exc:
            self.limit.on_throttle(exc)
            raise
        finally:
            self.limit.release()
        self.limit.on_success(time.monotonic() - started)
        return response
