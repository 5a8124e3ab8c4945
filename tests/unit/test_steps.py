"""The steps on their own: backoff policy, retry classification, Redis token bucket, cache tiers."""

from __future__ import annotations

import heapq
import random
import threading
import time

import pytest
from dspy import lm15
from dspy.lm15 import Message, Request, Response, TextPart, Usage

from shared.config import CacheConfig, RetryConfig
from shared.errors import RetryLater
from shared.steps import stats
from shared.steps.cache import CacheStep, MemoryTier, cache_key
from shared.steps.ratelimit import RateLimitStep, TokenBucket
from shared.steps.retry import RetryStep, backoff_delay, is_transient
from shared.steps.target_backoff import TargetBackoff


def request(text="hi", **config):
    return Request(model="mock/m", messages=(Message.user(text),), config=lm15.Config(**config))


def response(text="ok"):
    return Response(id=None, model="m", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                    usage=Usage(input_tokens=1, output_tokens=1))


def test_backoff_is_exponential_capped_and_jittered():
    cfg = RetryConfig(base_delay=1.0, backoff_factor=2.0, max_delay=5.0, jitter=0.0)
    assert [backoff_delay(cfg, n, random.Random(0)) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryConfig(base_delay=1.0, backoff_factor=2.0, max_delay=30.0, jitter=0.5)
    values = {round(backoff_delay(jittered, 2, random.Random(s)), 3) for s in range(20)}
    assert len(values) > 10 and all(2.0 <= v <= 6.0 for v in values)


def test_ambiguous_429s_take_the_target_backoff_and_keep_the_failure_schedule():
    shipped = RetryConfig()
    # contract defaults of the failure schedule unchanged; the rate-limit schedule is a separate setting
    assert (shipped.max_retries, shipped.base_delay, shipped.backoff_factor) == (3, 1.0, 2.0)
    assert (shipped.rate_limit_base_delay, shipped.rate_limit_max_delay) == (0.05, 5.0)
    # the step: 429s naming no wait take the target's short pause, a Retry-After and an x-ratelimit reset
    # (none remaining) are exact, 5xx and timeouts the failure schedule
    slept: list[float] = []
    step = RetryStep(RetryConfig(jitter=0.0), sleep=slept.append)
    reset = lm15.RateLimitError("slow", status=429, rate_limit_headers={
        "x-ratelimit-remaining-requests": ["0"], "x-ratelimit-reset-requests": ["300ms"]})
    call_next, calls = scripted(lm15.RateLimitError("slow", status=429), lm15.RateLimitError("slow", status=429),
                                lm15.RateLimitError("slow", status=429, retry_after=0.7), reset,
                                lm15.ServerError("down", status=500), lm15.TimeoutError("slow"), response())
    assert step(request(), call_next).message.text == "ok"
    # the first two: the target refused few of its attempts so far (random refusals), retried at once
    assert len(calls) == 7 and slept == [0.0, 0.0, 0.7, 0.3, 1.0, 2.0]


def test_an_unlucky_item_of_a_random_storm_retries_soon():
    """Ten 429s in a row for ONE item while the target answers most calls: no per-item chain, each
    retry waits at most the target's ceiling, none while at most half of the target's attempts were
    refused (the old per-item chain: 0.2 s doubling, ~26 s in all; a uniform(0, 50 ms) pause before)."""
    slept: list[float] = []
    step = RetryStep(RetryConfig(), sleep=slept.append, rng=random.Random(1))
    for i in range(40):  # the target's other calls: two in three answered
        step(request(), scripted(*([lm15.RateLimitError("slow", status=429)] * (i % 3 == 0)), response())[0])
    slept.clear()
    call_next, calls = scripted(*([lm15.RateLimitError("slow", status=429)] * 10), response())
    step(request(), call_next)  # within max_rate_limit_retries
    assert len(calls) == 11 and len(slept) == 10
    assert slept[:5] == [0.0] * 5  # the share is still under half: retried at once
    assert all(0 <= d <= 0.05 * 5 for d in slept), slept  # and barely above it after ten refusals in a row


def test_a_call_refused_at_once_again_and_again_slows_down_past_half_its_budget():
    """The onset of a real limit: the target's share is still under half (retried at once), one call is
    refused in a few ms each time; past half of its 20 rate-limit retries it waits its own doubling
    chain, so it cannot spend the whole budget (its chunk back to the queue) before the share rises."""
    slept: list[float] = []
    step = RetryStep(RetryConfig(jitter=0.0), sleep=slept.append)
    call_next, calls = scripted(*([lm15.RateLimitError("slow", status=429)] * 15), response())
    assert step(request(), call_next).message.text == "ok"
    assert step.backoff.share < 0.5 and len(calls) == 16
    assert slept[:10] == [0.0] * 10 and slept[10:] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8])


class Provider:
    """A discrete-event stand-in for the target backoff's two worlds: ``slots`` items retrying in
    a closed loop against a provider that answers after ``latency``; refusals come from a token
    bucket of ``limit`` per second (a real limit) and/or at random with probability ``storm``."""

    def __init__(self, slots: int, limit: float = 0.0, storm: float = 0.0, latency: float = 0.1, seed: int = 0):
        self.slots, self.limit, self.storm, self.latency = slots, limit, storm, latency
        self.rng = random.Random(seed)
        self.now = 0.0
        self.backoff = TargetBackoff(RetryConfig(), random.Random(seed))
        self.ok = self.refused = 0
        self.pauses: list[float] = []

    def run(self, seconds: float) -> Provider:
        tokens, last = self.limit, 0.0
        events = [(0.0, i) for i in range(self.slots)]
        while events:
            self.now, slot = heapq.heappop(events)
            if self.now > seconds:
                break
            if self.limit:
                tokens, last = min(self.limit, tokens + (self.now - last) * self.limit), self.now
            answered = (not self.limit or tokens >= 1) and self.rng.random() >= self.storm
            if answered:
                tokens -= 1
                self.ok += 1
                self.backoff.succeeded()
                heapq.heappush(events, (self.now + self.latency, slot))
            else:
                self.refused += 1
                self.pauses.append(self.backoff.refused())
                heapq.heappush(events, (self.now + 0.002 + self.pauses[-1], slot))
        return self


def test_target_backoff_slows_down_for_a_real_limit_and_not_for_a_random_storm():
    base = RetryConfig().rate_limit_base_delay
    for seed in range(3):
        storm = Provider(8, storm=0.3, latency=0.03, seed=seed).run(10)  # no limit, 30% refused at random
        assert sum(storm.pauses) / len(storm.pauses) < 0.05 * base  # retried at once (nearly always)
        assert max(storm.pauses) < 5 * base
        limited = Provider(8, limit=10, seed=seed).run(30)  # 8 slots could send ~80/s; the provider takes 10/s
        assert limited.ok / 30 > 0.95 * 10  # the limit is used
        assert limited.refused < 2 * limited.ok  # and not hammered: at most ~2 refusals per success
        assert sum(limited.pauses) / len(limited.pauses) > 2 * base  # because the pause grew
        unpaused = Provider(8, limit=10, seed=seed)
        unpaused.backoff.refused = lambda: 0.0  # what retrying at once would do: the contrast, not tidyq
        assert unpaused.run(30).refused > 10 * limited.refused


def test_target_backoff_follows_the_share_both_ways():
    cfg = RetryConfig(jitter=0.0)
    backoff = TargetBackoff(cfg)
    pauses = [backoff.refused() for _ in range(60)]  # a limit we exceed: refused again and again
    first = next(i for i, p in enumerate(pauses) if p)  # retried at once until over half are refused
    assert first > 15 and pauses[first] < 2 * cfg.rate_limit_base_delay and pauses[-1] == cfg.rate_limit_max_delay
    assert pauses == sorted(pauses)
    for _ in range(30):  # the provider answers again: back to no pause
        backoff.succeeded()
    assert backoff.ceiling == 0.0
    jittered = TargetBackoff(RetryConfig(), random.Random(3))
    draws = [jittered.refused() for _ in range(400)][-200:]  # at the cap: full jitter in [0, 5 s]
    assert all(0 <= d <= 5.0 for d in draws) and 1.75 < sum(draws) / len(draws) < 3.25


def test_transient_classification():
    assert is_transient(lm15.RateLimitError("x"))
    assert is_transient(lm15.ServerError("x"))
    assert is_transient(lm15.TimeoutError("x"))
    assert is_transient(lm15.TransportError("x"))
    assert not is_transient(lm15.AuthError("x"))
    assert not is_transient(lm15.InvalidRequestError("x"))
    assert not is_transient(lm15.ContextLengthError("x"))


def scripted(*outcomes):
    calls = []

    def call_next(req):
        calls.append(req)
        outcome = outcomes[min(len(calls), len(outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return call_next, calls


def test_retry_honours_retry_after_then_succeeds():
    slept = []
    step = RetryStep(RetryConfig(max_retries=3, base_delay=9, jitter=0), sleep=slept.append)
    call_next, calls = scripted(lm15.RateLimitError("slow", retry_after=0.25), response())
    with stats.track() as st:
        assert step(request(), call_next).message.text == "ok"
    assert len(calls) == 2 and slept == [0.25]
    assert (st.attempts, st.retries) == (2, 1)


def test_retry_never_retries_bad_request_or_auth():
    for exc in (lm15.InvalidRequestError("bad", status=400), lm15.AuthError("no")):
        step = RetryStep(RetryConfig(), sleep=lambda s: pytest.fail("must not sleep"))
        call_next, calls = scripted(exc, response())
        with pytest.raises(type(exc)):
            step(request(), call_next)
        assert len(calls) == 1


def test_retry_gives_up_after_max_retries_with_the_last_error():
    slept = []
    step = RetryStep(RetryConfig(max_retries=2, base_delay=0.01, jitter=0), sleep=slept.append)
    call_next, calls = scripted(lm15.ServerError("down", status=503))
    with pytest.raises(lm15.ServerError):
        step(request(), call_next)
    assert len(calls) == 3 and slept == [0.01, 0.02]


def test_long_retry_after_goes_back_to_the_queue_instead_of_sleeping():
    step = RetryStep(RetryConfig(max_inline_wait=5), sleep=lambda s: pytest.fail("must not sleep"))
    call_next, _ = scripted(lm15.RateLimitError("later", retry_after=120))
    with pytest.raises(RetryLater) as err:
        step(request(), call_next)
    assert err.value.delay == 120


def test_cache_key_covers_model_messages_and_generation_parameters():
    base = cache_key("direct", request("a"))
    assert base == cache_key("direct", request("a"))
    assert base != cache_key("bedrock", request("a"))
    assert base != cache_key("direct", request("b"))
    assert base != cache_key("direct", request("a", temperature=0.7))
    assert base != cache_key("direct", request("a", seed=3))


def test_cache_key_is_the_sorted_canonical_request_hashed_and_takes_what_orjson_refuses():
    import hashlib
    import json

    from dspy._vendor.lm15.serde import request_to_dict

    def stdlib_hash(backend, req):  # the key's definition, with the stdlib encoder
        body = json.dumps({"backend": backend, "request": request_to_dict(req)}, sort_keys=True,
                          separators=(",", ":"), default=str)
        return hashlib.sha256(body.encode()).hexdigest()

    assert cache_key("direct", request("a", temperature=0.5)) == stdlib_hash("direct", request("a", temperature=0.5))
    huge = request("a", seed=2**70)  # beyond orjson's 64-bit integers: the stdlib encodes it
    assert cache_key("direct", huge) == stdlib_hash("direct", huge) != cache_key("direct", request("a", seed=3))


def test_memory_tier_evicts_least_recently_used():
    tier = MemoryTier(max_items=2, max_bytes=10**6)
    tier.put("a", response("1"))
    tier.put("b", response("2"))
    assert tier.get("a", ttl=60) is not None
    tier.put("c", response("3"))
    assert tier.get("b", ttl=60) is None and tier.get("a", ttl=60) is not None and len(tier) == 2


def test_disk_tier_serves_a_second_step_and_expires(tmp_path):
    first = CacheStep("mock", CacheConfig(ttl_seconds=1), redis_url=None, cache_dir=str(tmp_path))
    call_next, calls = scripted(response("from provider"))
    first(request("q"), call_next)
    first.flush()
    second = CacheStep("mock", CacheConfig(ttl_seconds=1), redis_url=None, cache_dir=str(tmp_path))
    with stats.track() as st:
        assert second(request("q"), call_next).message.text == "from provider"
    assert len(calls) == 1 and st.cache_hits == 1
    time.sleep(1.1)
    third = CacheStep("mock", CacheConfig(ttl_seconds=1), redis_url=None, cache_dir=str(tmp_path))
    third(request("q"), call_next)
    assert len(calls) == 2


def test_redis_tier_is_json_and_shared(redis_url):
    import json

    import redis as redis_lib

    a = CacheStep("mock", CacheConfig(), redis_url=redis_url, cache_dir=None)
    call_next, calls = scripted(response("shared answer"))
    a(request("q"), call_next)
    a.flush()
    raw = redis_lib.Redis.from_url(redis_url)
    keys = raw.keys("tidyq:cache:*")
    assert len(keys) == 1
    assert json.loads(raw.get(keys[0]))["message"]
    assert 0 < raw.ttl(keys[0]) <= 3600
    b = CacheStep("mock", CacheConfig(), redis_url=redis_url, cache_dir=None)
    assert b(request("q"), call_next).message.text == "shared answer"
    assert len(calls) == 1


def test_token_bucket_limits_across_threads(redis_url):
    """60 requests/minute = 1/s with a one-second burst: 8 callers in 2 s get <= 3 immediate grants."""
    from shared.redisconn import get_redis

    bucket = TokenBucket(get_redis(redis_url), "tidyq:ratelimit:test:rpm", per_minute=60)
    waits = []
    lock = threading.Lock()

    def take():
        w = bucket.reserve(1, max_wait=100)
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waits.sort()
    assert waits[0] == 0
    # reservations queue up one second apart: the k-th caller waits about k-1 seconds
    assert waits[-1] == pytest.approx(7, abs=0.5)


def test_rate_limit_step_hands_long_waits_to_the_queue(redis_url):
    step = RateLimitStep("direct", redis_url, rpm=60, max_inline_wait=0.5, sleep=lambda s: None)
    call_next, calls = scripted(response())
    step(request(), call_next)  # the burst token
    with pytest.raises(RetryLater) as err:
        step(request(), call_next)
        step(request(), call_next)
    assert err.value.delay > 0.5
    assert len(calls) >= 1
