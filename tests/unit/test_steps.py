"""The steps on their own: backoff policy, retry classification, Redis token bucket, cache tiers."""

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
from shared.steps.retry import RetryStep, backoff_delay, is_transient, rate_limit_delay


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


def test_rate_limit_backoff_is_short_full_jitter_capped_and_keeps_the_failure_schedule():
    shipped = RetryConfig()
    # contract defaults of the failure schedule unchanged; the rate-limit schedule is a separate setting
    assert (shipped.max_retries, shipped.base_delay, shipped.backoff_factor) == (3, 1.0, 2.0)
    assert (shipped.rate_limit_base_delay, shipped.rate_limit_max_delay) == (0.2, 5.0)
    exact = RetryConfig(rate_limit_base_delay=0.2, rate_limit_max_delay=1.0, jitter=0.0)
    assert [rate_limit_delay(exact, n, random.Random(0)) for n in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    rng = random.Random(3)
    for n in range(12):
        ceiling = min(5.0, 0.2 * 2 ** n)
        draws = [rate_limit_delay(shipped, n, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in draws)  # full jitter: anywhere in [0, ceiling]
        assert 0.35 * ceiling < sum(draws) / len(draws) < 0.65 * ceiling  # uniform: mean near ceiling / 2
        assert max(draws) > 0.9 * ceiling and min(draws) < 0.1 * ceiling
    # the step: 429s without Retry-After take the short schedule, a Retry-After is exact, 5xx the normal one
    slept: list[float] = []
    step = RetryStep(RetryConfig(jitter=0.0), sleep=slept.append)
    call_next, calls = scripted(lm15.RateLimitError("slow", status=429), lm15.RateLimitError("slow", status=429),
                                lm15.RateLimitError("slow", status=429, retry_after=0.7),
                                lm15.ServerError("down", status=500), lm15.TimeoutError("slow"), response())
    assert step(request(), call_next).message.text == "ok"
    assert len(calls) == 6 and slept == [0.2, 0.4, 0.7, 1.0, 2.0]
    slept.clear()
    jittered = RetryStep(RetryConfig(), sleep=slept.append, rng=random.Random(1))
    call_next, calls = scripted(*([lm15.RateLimitError("slow", status=429)] * 10), response())
    jittered(request(), call_next)  # ten 429s in a row: within max_rate_limit_retries, each capped at 5 s
    assert len(calls) == 11 and len(set(slept)) == 10
    assert all(0 <= d <= min(5.0, 0.2 * 2 ** n) for n, d in enumerate(slept))


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
