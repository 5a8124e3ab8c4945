"""shared/backends/async_io.py's lm15 twin against the loopback OpenAI stand-in: requests equal the
sync backend's, the route is looked up once per model and event loop, and a proxy in the
environment still applies (lm15's per-request proxy lookup is skipped only when none is set)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from dspy.utils.exceptions import LMError

from shared import BackendType, CacheConfig, RetryConfig, UnifiedConfig, UnifiedDSPyWrapper
from shared.backends.async_io import AsyncLM15Backend, proxies_configured


def wrapper(fake) -> UnifiedDSPyWrapper:
    return UnifiedDSPyWrapper(UnifiedConfig(backend=BackendType.DIRECT, model="openai/gpt-4o-mini",
                                            api_base=fake.base_url, api_key="sk-test",
                                            cache=CacheConfig(enabled=False), retry=RetryConfig(max_retries=0)))


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in [n for n in __import__("os").environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_proxy_variables_are_recognised_as_urllib_reads_them():
    assert not proxies_configured({"PATH": "/bin", "PROXYSIDE": "x", "http_proxy": ""})
    assert proxies_configured({"HTTPS_PROXY": "http://p:1"}) and proxies_configured({"no_proxy": "*"})
    assert proxies_configured({"socks_proxy": "socks5://p:1"})


def test_async_requests_equal_the_sync_ones_and_the_route_is_resolved_once(openai_fake, no_proxy_env):
    w = wrapper(openai_fake)
    module = w.create_module("question -> answer")
    questions = [f"What is {i} + {i}?" for i in range(6)]
    for q in questions:
        module.predict(question=q)
    sync_bodies = openai_fake.request_bodies[-6:]
    backend = w.routes[0].async_engine.backend
    assert isinstance(backend, AsyncLM15Backend)

    async def main():
        results = await asyncio.gather(*(module.apredict_with_stats(question=q) for q in questions))
        state = backend._loops[asyncio.get_running_loop()]
        return results, dict(state.targets), state.engine.config.transport

    results, targets, transport = asyncio.run(main())
    assert sorted(map(repr, openai_fake.request_bodies[-6:])) == sorted(map(repr, sync_bodies))
    assert all(prediction.answer for prediction, _ in results)
    assert list(targets) == ["openai/gpt-4o-mini"]  # one lookup for six calls
    assert transport is not None and transport._trust_env is False


def test_a_proxy_in_the_environment_is_still_used(openai_fake, no_proxy_env):
    with socket.socket() as s:  # a port nothing listens on: a proxy there refuses the connection
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    no_proxy_env.setenv("http_proxy", f"http://127.0.0.1:{dead}")
    module = wrapper(openai_fake).create_module("question -> answer")
    before = len(openai_fake.request_bodies)
    with pytest.raises(LMError):
        asyncio.run(module.apredict_with_stats(question="through the proxy?"))
    assert len(openai_fake.request_bodies) == before  # it went to the (dead) proxy, not straight to the stand-in
