"""The one engine assembly (shared/engine.py) and how the wrapper hands errors back.

Real parts: the OpenAI wire-format stand-in on 127.0.0.1, a real redis-server for the breakers.
"""

from __future__ import annotations

import json

import pytest
from dspy.utils.exceptions import LMError

from shared import CacheConfig, RetryConfig, UnifiedConfig, UnifiedDSPyWrapper
from shared.config import Target, get_settings
from shared.engine import build_engine, build_routes, resolve_config
from shared.errors import ConfigurationError, TidyqError
from shared.fallback import FallbackEngine
from shared.steps.base import StepEngine
from shared.wrapper import MAX_CAUSE_DEPTH, _unwrap
from tests.fakes.openai_server import OpenAIFake

FAST_RETRY = RetryConfig(max_retries=0, base_delay=0.01, max_delay=0.02)


@pytest.fixture
def fake():
    server = OpenAIFake().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def two_fakes(monkeypatch):
    servers = [OpenAIFake().start(), OpenAIFake().start()]
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({
        "direct:openai/a": {"api_base": servers[0].base_url},
        "direct:openai/b": {"api_base": servers[1].base_url, "larger_context": True}}))
    monkeypatch.setenv("TIDYQ_API_KEY", "sk-test-engine-0001")
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_every_target_gets_its_own_step_stack_and_no_second_wrapper(redis_url, two_fakes):
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/a", fallbacks="direct:openai/b",
                                         retry=FAST_RETRY))
    try:
        assert [r.id for r in w.routes] == ["direct:openai/a", "direct:openai/b"]
        assert all(type(r.engine) is StepEngine for r in w.routes)
        assert w.routes[0].engine is not w.routes[1].engine
        for route in w.routes:  # the same ordered stack per target, each with its own breaker
            assert route.engine.step_names == ["metrics", "cache", "retry", "breaker"]
            assert route.breaker is not None
        assert w.routes[0].breaker is not w.routes[1].breaker
        assert w.routes[1].target.larger_context  # marked by TIDYQ_TARGET_OPTIONS, not by the job
        assert isinstance(w.engine, FallbackEngine) and w.engine.routes == w.routes
        info = w.get_info()
        assert info["features"]["targets"] == ["direct:openai/a", "direct:openai/b"]
        assert info["features"]["circuit_breaker"] is True
        two_fakes[0].set_failure_rate(1.0, [503])
        _, stats = w.create_module("question -> answer").predict_with_stats(question="q")
        assert stats.served_by == "direct:openai/b"
        assert (two_fakes[0].request_count, two_fakes[1].request_count) == (1, 1)
    finally:
        w.close()


def test_a_single_target_without_breaker_is_its_own_step_engine(monkeypatch):
    monkeypatch.delenv("TIDYQ_REDIS_URL", raising=False)
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False)))
    assert w.engine is w.routes[0].engine and type(w.engine) is StepEngine
    assert w.get_info()["steps"] == ["metrics", "retry"] and w.get_info()["features"]["targets"] == ["mock:"]
    assert w.create_module("question -> answer").predict(question="2+2?").answer


def test_a_fallback_that_cannot_be_built_fails_the_whole_assembly(monkeypatch):
    monkeypatch.delenv("TIDYQ_REDIS_URL", raising=False)
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({"direct:openai/z": {"api_key_env": "TIDYQ_TEST_UNSET"}}))
    monkeypatch.delenv("TIDYQ_TEST_UNSET", raising=False)
    settings = get_settings()
    config = resolve_config(UnifiedConfig(backend="mock", fallbacks=[Target("direct", "openai/z")]), settings)
    with pytest.raises(ConfigurationError, match="TIDYQ_TEST_UNSET"):
        build_routes(config, settings)
    # without the broken fallback the same primary assembles into a plain step engine
    routes = build_routes(resolve_config(UnifiedConfig(backend="mock"), settings), settings)
    assert type(build_engine(routes, config, settings)) is StepEngine


def test_a_provider_error_is_not_its_own_cause(fake, monkeypatch):
    """`raise X from None if ... else exc` used to make an error its own __cause__."""
    monkeypatch.delenv("TIDYQ_REDIS_URL", raising=False)
    fake.set_failure_rate(1.0, [400])
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/x", api_base=fake.base_url,
                                         api_key="sk-test-engine-0002", retry=FAST_RETRY,
                                         cache=CacheConfig(enabled=False)))
    with pytest.raises(LMError) as info:
        w.create_module("question -> answer").predict(question="q")
    assert info.value.__cause__ is not info.value
    chain, seen = [], info.value
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__
    assert seen is None and len(set(map(id, chain))) == len(chain)  # a finite chain, no loop
    w.close()


def test_unwrap_finds_our_error_and_stops_on_long_or_circular_chains():
    ours = TidyqError("ours")
    outer = RuntimeError("dspy's wrapper")
    outer.__cause__ = ours
    assert _unwrap(outer) is ours
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a  # a loop: the walk must end
    assert _unwrap(a) is a
    deep = head = RuntimeError("0")
    for n in range(MAX_CAUSE_DEPTH + 5):
        nxt = RuntimeError(str(n + 1))
        deep.__cause__, deep = nxt, nxt
    deep.__cause__ = TidyqError("too deep to be DSPy's wrapping")
    assert _unwrap(head) is head
