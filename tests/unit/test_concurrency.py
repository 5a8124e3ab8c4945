"""The adaptive in-flight cap (shared/concurrency.py) against real provider errors (dspy.lm15's
RateLimitError as lm15 builds it from a 429) and a real redis-server for the fleet view."""

from __future__ import annotations

import asyncio

import pytest
import redis
from dspy import lm15

from shared import keys
from shared.concurrency import AdaptiveLimit, fleet_limits, fleet_summary, throttle_pause
from shared.errors import RetryLater


def refusal(retry_after=None, headers=None) -> lm15.RateLimitError:
    return lm15.RateLimitError("429", retry_after=retry_after, rate_limit_headers=headers or {})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def still_wall() -> float:
    """A wall clock whose 0.1 s slot never turns: the fleet record stays at "nothing known" (a real
    clock turning a slot mid-test gave the record 80 successes and no refusals: no cut, one CI run)."""
    return 0.0


def test_learned_limit_grows_while_calls_succeed_and_backs_off_on_429():
    clock = Clock()
    limit = AdaptiveLimit("direct:m", initial=10, clock=clock, wall_clock=still_wall)
    for _ in range(20):
        clock.now += 0.1  # 10 successes a second, each taking 2 s: ~20 calls in flight got through
        limit.on_success(2.0)
    assert limit.limit == 30  # slow start: +1 per success until the first throttle
    limit.on_throttle(refusal())
    assert limit.limit == pytest.approx(18)  # 90% of what got through (10/s x 2 s), below x0.7 = 21
    limit.on_throttle(refusal())  # a second 429 within the same round trip: no second cut
    assert limit.limit == pytest.approx(18)
    for _ in range(18):  # one round trip's worth of successes
        clock.now += 0.1
        limit.on_success(2.0)
    assert limit.limit == pytest.approx(18 * 1.05)  # after the throttle: +5% per round trip, not +1 per call


def test_a_429_cuts_the_learned_limit_to_what_the_provider_let_through():
    clock = Clock()
    limit = AdaptiveLimit("direct:m", initial=100, clock=clock, wall_clock=still_wall)
    for _ in range(80):  # 40 successes a second for 2 s, 1 s each: about 40 calls in flight fit
        clock.now += 0.025
        limit.on_success(1.0)
    limit.on_throttle(refusal())
    assert limit.limit == pytest.approx(36, abs=1)  # 90% of it


def test_configured_rate_gives_rate_times_latency_in_flight():
    limit = AdaptiveLimit("direct:m", rate_per_s=150, initial=8)
    for _ in range(50):
        limit.on_success(1.0)
    assert limit.limit == 150 * 1.1 + 2  # ceil(rate x latency x 1.1) + 2
    limit.on_throttle(refusal())
    assert limit.limit == 150 * 1.1 + 2  # the token bucket paces; a stray 429 does not shrink the cap


def test_retry_after_and_ratelimit_reset_headers_pause_the_target():
    assert throttle_pause(refusal(retry_after=2.5)) == 2.5
    exc = refusal(headers={"x-ratelimit-remaining-requests": ["0"], "x-ratelimit-reset-requests": ["120ms"]})
    assert throttle_pause(exc) == pytest.approx(0.12)
    exc = refusal(headers={"x-ratelimit-remaining-requests": ["7"], "x-ratelimit-reset-requests": ["1s"]})
    assert throttle_pause(exc) == 0.0  # requests remain: no pause


def test_gate_never_lets_more_than_the_limit_in_flight_and_wakes_waiters():
    limit = AdaptiveLimit("direct:m", initial=3, ceiling=3)
    peak = 0

    async def call():
        nonlocal peak
        await limit.acquire()
        peak = max(peak, limit.inflight)
        await asyncio.sleep(0.01)
        limit.release()

    async def main():
        await asyncio.gather(*(call() for _ in range(20)))

    asyncio.run(main())
    assert peak == 3 and limit.inflight == 0


def test_cancelled_waiter_leaves_no_ghost_slot():
    limit = AdaptiveLimit("direct:m", initial=1, ceiling=1)

    async def main():
        await limit.acquire()
        waiter = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        limit.release()
        await asyncio.wait_for(limit.acquire(), 1.0)  # the slot is free again
        limit.release()

    asyncio.run(main())
    assert limit.inflight == 0


def test_learned_limit_is_shared_in_redis_and_a_new_worker_starts_from_it(redis_url):
    client = redis.Redis.from_url(redis_url)
    first = AdaptiveLimit("direct:openai/m", initial=4, redis=client)
    first.worker = "host-a:1"
    for _ in range(40):
        first.on_success(0.01)
    first.on_throttle(refusal())  # forces a publish
    entries = fleet_limits(client, "direct:openai/m")
    assert [e["worker"] for e in entries] == ["host-a:1"]
    assert entries[0]["limit"] == pytest.approx(first.limit, abs=0.01) and entries[0]["mode"] == "learned"
    assert client.ttl(keys.concurrency("direct:openai/m")) > 0
    second = AdaptiveLimit("direct:openai/m", initial=4, redis=client)
    assert second.limit == pytest.approx(first.limit, abs=0.01)  # learned once, used by the next process
    summary = fleet_summary(client)
    assert summary["direct:openai/m"]["workers"] == 1 and summary["direct:openai/m"]["throttles"] == 1


def test_a_retry_after_longer_than_the_inline_wait_goes_to_the_queue_not_to_a_sleeping_slot():
    clock = Clock()
    limit = AdaptiveLimit("direct:m", initial=4, max_inline_wait=10.0, clock=clock)
    limit.on_throttle(refusal(retry_after=16))
    with pytest.raises(RetryLater) as caught:  # every item would otherwise hold its slot asleep for 16 s
        asyncio.run(limit.acquire())
    assert caught.value.delay == pytest.approx(16)
    assert limit.inflight == 0
    clock.now += 16  # the pause is over: the slot is taken at once
    asyncio.run(limit.acquire())
    assert limit.inflight == 1
