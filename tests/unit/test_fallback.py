"""Fallback chains through the real wrapper: two or three loopback OpenAI stand-ins as targets,
a real redis-server for the breakers."""

from __future__ import annotations

import json
import time

import pytest
import redis

from shared import CacheConfig, RetryConfig, UnifiedConfig, UnifiedDSPyWrapper
from shared.breaker import breaker_status, reset_breaker
from shared.config import Target
from shared.errors import AllTargetsOpen, ConfigurationError, CredentialsRejected
from shared.fallback import FallbackEngine, requeue_delay
from tests.fakes.openai_server import OpenAIFake

FAST_RETRY = RetryConfig(max_retries=1, base_delay=0.01, max_delay=0.02)
NO_CACHE = CacheConfig(enabled=False)


@pytest.fixture
def fakes():
    started = [OpenAIFake().start() for _ in range(3)]
    try:
        yield started
    finally:
        for f in started:
            f.stop()


@pytest.fixture
def env(redis_url, fakes, monkeypatch):
    """Targets direct:openai/a, /b, /c at three fakes; c is marked larger; a short breaker."""
    a, b, c = fakes
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({
        "direct:openai/a": {"api_base": a.base_url},
        "direct:openai/b": {"api_base": b.base_url},
        "direct:openai/c": {"api_base": c.base_url, "larger_context": True},
    }))
    monkeypatch.setenv("TIDYQ_API_KEY", "sk-test-fallback-0001")
    monkeypatch.setenv("TIDYQ_BREAKER_MIN_CALLS", "4")
    monkeypatch.setenv("TIDYQ_BREAKER_OPEN_SECONDS", "0.5")
    monkeypatch.setenv("TIDYQ_BREAKER_MAX_OPEN_SECONDS", "1")
    monkeypatch.setenv("TIDYQ_BREAKER_HALF_OPEN_PROBES", "1")
    return redis.Redis.from_url(redis_url)


def chain(*fallbacks: str, retry: RetryConfig = FAST_RETRY) -> UnifiedDSPyWrapper:
    return UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/a", fallbacks=fallbacks, retry=retry,
                                            cache=NO_CACHE))


# ---- parsing ---------------------------------------------------------------------------------

def test_targets_split_at_the_first_colon():
    t = Target.parse_list("bedrock:anthropic.claude-3-haiku-20240307-v1:0, gateway:chat ,direct:openai/gpt-4o-mini")
    assert [(x.backend, x.model) for x in t] == [("bedrock", "anthropic.claude-3-haiku-20240307-v1:0"),
                                                  ("gateway", "chat"), ("direct", "openai/gpt-4o-mini")]
    assert UnifiedConfig(backend="mock", fallbacks="direct:openai/x,mock").fallbacks == (
        Target("direct", "openai/x"), Target("mock"))
    with pytest.raises(ConfigurationError, match="unknown backend 'nope'"):
        Target.parse_list("nope:model")
    with pytest.raises(ConfigurationError, match="concrete backend"):
        UnifiedConfig(backend="mock", fallbacks=["auto:x"])


def test_missing_api_key_env_of_a_target_is_a_configuration_error(redis_url, monkeypatch):
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({"direct:openai/z": {"api_key_env": "TIDYQ_TEST_NO_SUCH"}}))
    monkeypatch.delenv("TIDYQ_TEST_NO_SUCH", raising=False)
    with pytest.raises(ConfigurationError, match="TIDYQ_TEST_NO_SUCH"):
        UnifiedDSPyWrapper(UnifiedConfig(backend="mock", fallbacks=["direct:openai/z"]))


# ---- routing -----------------------------------------------------------------------------------

def test_healthy_primary_serves_and_info_lists_targets(env, fakes):
    a, b, _ = fakes
    w = chain("direct:openai/b")
    assert isinstance(w.engine, FallbackEngine) and w.engine.targets == ["direct:openai/a", "direct:openai/b"]
    assert "breaker" in w.get_info()["steps"] and w.get_info()["config"]["fallbacks"] == ["direct:openai/b"]
    pred, stats = w.create_module("question -> answer").predict_with_stats(question="q")
    assert pred.answer and stats.served_by == "direct:openai/a" and stats.skipped == []
    assert (a.request_count, b.request_count) == (1, 0)
    w.close()


def test_failing_primary_falls_back_and_its_breaker_bounds_the_requests(env, fakes):
    a, b, _ = fakes
    a.set_failure_rate(1.0, [503])
    w = chain("direct:openai/b")
    qa = w.create_module("question -> answer")
    for i in range(40):
        pred, stats = qa.predict_with_stats(question=f"q{i}")
        assert stats.served_by == "direct:openai/b"
    assert b.request_count == 40
    # min_calls (4) failing attempts open the breaker; after that only its probes reach A
    st = breaker_status(env, "direct:openai/a")
    assert a.request_count == 4 + st["probes_total"] and st["probes_total"] <= 2
    assert st["skipped"]["breaker_open"] >= 30
    assert breaker_status(env, "direct:openai/b")["served_as_fallback"] == 40
    w.close()


def test_recovered_primary_gets_a_probe_and_traffic_back(env, fakes):
    a, b, _ = fakes
    a.set_failure_rate(1.0, [503])
    w = chain("direct:openai/b")
    qa = w.create_module("question -> answer")
    for i in range(6):
        qa.predict_with_stats(question=f"down{i}")
    a.set_failure_rate(0.0)
    before_b = b.request_count
    time.sleep(0.6)
    pred, stats = qa.predict_with_stats(question="up")
    assert stats.served_by == "direct:openai/a"  # the probe
    assert breaker_status(env, "direct:openai/a")["state"] == "closed"
    for i in range(5):
        assert qa.predict_with_stats(question=f"up{i}")[1].served_by == "direct:openai/a"
    assert b.request_count == before_b
    w.close()


def test_long_retry_after_moves_on_at_once(env, fakes):
    a, b, _ = fakes
    a.fail_next(1, 429, retry_after=120)
    w = chain("direct:openai/b")
    started = time.monotonic()
    pred, stats = w.create_module("question -> answer").predict_with_stats(question="q")
    assert time.monotonic() - started < 5
    assert stats.served_by == "direct:openai/b" and stats.skipped == [{"target": "direct:openai/a",
                                                                        "reason": "retry_later"}]
    w.close()


def test_auth_error_fails_fast_without_touching_the_fallback(env, fakes):
    a, b, _ = fakes
    a.require_auth("sk-some-other-key")
    w = chain("direct:openai/b")
    with pytest.raises(CredentialsRejected) as info:
        w.create_module("question -> answer").predict(question="q")
    assert "direct:openai/a" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    assert "sk-test-fallback-0001" not in str(info.value)
    assert a.request_count == 1 and b.request_count == 0
    assert breaker_status(env, "direct:openai/a")["state"] == "closed"  # a setup error is not an outage
    w.close()


def test_bad_request_never_falls_back(env, fakes):
    a, b, _ = fakes
    a.fail_next(1, 400)
    w = chain("direct:openai/b")
    with pytest.raises(Exception) as info:
        w.create_module("question -> answer").predict(question="q")
    assert "400" in str(info.value) or "InvalidRequest" in type(info.value).__name__
    assert b.request_count == 0
    w.close()


def test_context_window_error_goes_to_a_larger_target(env, fakes):
    a, b, c = fakes
    a.script({"status": 400, "body": {"error": {"message": "This model's maximum context length is 8192 tokens",
                                                "type": "invalid_request_error", "param": "messages",
                                                "code": "context_length_exceeded"}}})
    w = chain("direct:openai/b", "direct:openai/c")
    pred, stats = w.create_module("question -> answer").predict_with_stats(question="long")
    assert stats.served_by == "direct:openai/c"
    assert stats.skipped == [{"target": "direct:openai/a", "reason": "context_length"},
                             {"target": "direct:openai/b", "reason": "not_larger_context"}]
    assert (a.request_count, b.request_count, c.request_count) == (1, 0, 1)
    w.close()


def test_every_target_open_asks_the_queue_to_wait_then_one_recovers(env, fakes):
    a, b, _ = fakes
    a.set_failure_rate(1.0, [503])
    b.set_failure_rate(1.0, [503])
    w = chain("direct:openai/b")
    qa = w.create_module("question -> answer")
    waits = []
    for i in range(8):
        try:
            qa.predict(question=f"q{i}")
        except AllTargetsOpen as exc:
            waits.append(exc)
    assert waits, "every target down must end in AllTargetsOpen, never a failed call"
    last = waits[-1]
    assert 0 < last.delay <= 0.6 and {s["target"] for s in last.skipped} == {"direct:openai/a", "direct:openai/b"}
    assert requeue_delay(last, deadline=time.time() + 60) == pytest.approx(last.delay, abs=0.2)
    assert requeue_delay(last, deadline=time.time()) is None  # past the job's deadline: the items fail
    b.set_failure_rate(0.0)
    time.sleep(max(0.0, last.retry_at - time.time()) + 0.05)
    pred, stats = qa.predict_with_stats(question="after")
    assert stats.served_by == "direct:openai/b"
    w.close()


def test_without_redis_a_failing_chain_fails_like_one_backend(fakes, monkeypatch):
    a, b, _ = fakes
    monkeypatch.delenv("TIDYQ_REDIS_URL", raising=False)
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({"direct:openai/a": {"api_base": a.base_url},
                                                           "direct:openai/b": {"api_base": b.base_url}}))
    monkeypatch.setenv("TIDYQ_API_KEY", "sk-test-fallback-0001")
    a.set_failure_rate(1.0, [503])
    w = chain("direct:openai/b")
    assert "breaker" not in w.get_info()["steps"]
    assert w.create_module("question -> answer").predict_with_stats(question="q")[1].served_by == "direct:openai/b"
    b.set_failure_rate(1.0, [503])
    with pytest.raises(Exception) as info:
        w.create_module("question -> answer").predict(question="q2")
    assert not isinstance(info.value, AllTargetsOpen) and "503" in str(info.value)
    w.close()


def test_reset_reopens_traffic_to_the_primary(env, fakes):
    a, b, _ = fakes
    a.set_failure_rate(1.0, [503])
    w = chain("direct:openai/b")
    qa = w.create_module("question -> answer")
    for i in range(5):
        qa.predict(question=f"q{i}")
    a.set_failure_rate(0.0)
    reset_breaker(env, "direct:openai/a")
    time.sleep(1.05)  # a process re-reads an open breaker at least every second
    assert qa.predict_with_stats(question="again")[1].served_by == "direct:openai/a"
    w.close()


def test_mock_primary_with_a_fallback(env, fakes):
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", fallbacks=["direct:openai/b"], cache=NO_CACHE))
    pred, stats = w.create_module("question -> answer").predict_with_stats(question="q")
    assert stats.served_by == "mock:" and fakes[1].request_count == 0
    w.close()
