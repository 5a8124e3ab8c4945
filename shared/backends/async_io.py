"""Async twins of the backends: one awaited attempt, the same wire format and error mapping.

- direct and gateway (OpenAI-compatible HTTP through DSPy's lm15): DSPy's own AsyncLM15Engine on
  the same RouterConfig as the sync backend (same base URL, key, timeouts) plus a connection pool
  sized for hundreds of calls in flight. lm15 maps vendor errors (429 + Retry-After and the
  x-ratelimit-* headers included) to dspy.lm15 errors, exactly as on the sync path.
- Bedrock (boto3 has no async client here) and a direct model only LiteLLM can route: the sync
  backend on a bounded thread pool of its own, so a slow provider cannot take every thread.
- the mock: inline (CPU-bound, microseconds; a thread hop would cost more than the call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dspy.lm15 import Request, Response


def proxies_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether any ``*_proxy`` variable is set (any case: urllib's getproxies reads every name
    ending so, no_proxy included). Without one, lm15's per-request proxy lookup (getproxies over
    the whole environment, ~9% of the event loop's time under load) always finds nothing, so the
    transport may skip it."""
    environ = os.environ if environ is None else environ
    return any(value and name.lower().endswith("_proxy") for name, value in environ.items())


class AsyncLM15Backend:
    """direct/gateway over DSPy's AsyncLM15Engine and its lm15 router. Its pools belong to the
    event loop that first used them, so one instance serves one loop (the worker's); another
    loop gets its own.

    Per call it does what AsyncLM15Engine.complete does, minus two per-call costs: the engine
    resolves the route and looks its provider up in a worker thread on every call (a thread hop
    per item); here that lookup (the engine's public ``resolve``, the router's ``lm``) runs once
    per model in a thread and is kept. And with no proxy variable in the environment the
    transport is lm15's own, built with ``trust_env=False`` (the same connections, no per-request
    environment scan); with one it is left to read the environment as before."""

    def __init__(self, backend: Any, max_connections: int):
        self.sync = backend
        self.name = backend.name
        self.config = dataclasses.replace(backend.router_config, max_connections=max_connections)
        # per event loop (weakly: a loop that ends takes its engine along, and no new loop that
        # happens to get a dead loop's id is handed that loop's pools)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEngine] = weakref.WeakKeyDictionary()

    def _engine(self) -> _LoopEngine:
        from dspy.clients.engines.lm15_engine import AsyncLM15Engine

        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            config = self.config
            if not proxies_configured() and config.transport is None:
                from dspy._vendor.lm15.transports import StdlibAsyncTransport

                transport = StdlibAsyncTransport(**config.transport_kwargs(), trust_env=False)
                config = dataclasses.replace(config, transport=transport, timeouts=None, max_connections=None)
            state = self._loops[loop] = _LoopEngine(AsyncLM15Engine(config, model_type="chat"))
        return state

    async def complete(self, request: Request) -> Response:
        from dspy.clients.engines.base import validate_request

        validate_request(request)
        state = self._engine()
        target = state.targets.get(request.model)
        if target is None:  # building a provider may read credentials synchronously: off the loop, once
            target = state.targets[request.model] = await asyncio.to_thread(_route, state.engine, request.model)
        provider, model = target
        return await provider.complete(dataclasses.replace(request, model=model))

    async def aclose(self) -> None:
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            transport = state.engine.config.transport
            await state.engine.aclose()
            if transport is not None and transport is not self.config.transport:
                await transport.aclose()  # ours (built above): lm15 leaves a passed-in transport open


@dataclasses.dataclass
class _LoopEngine:
    engine: Any  # DSPy's AsyncLM15Engine for one event loop
    # model string -> (its provider LM, the routed model name)
    targets: dict[str, tuple[Any, str]] = dataclasses.field(default_factory=dict)


def _route(engine: Any, model: str) -> tuple[Any, str]:
    """The provider LM and the routed model name for a model string, as AsyncLM15Engine finds them."""
    from dspy.lm15 import UnsupportedFeatureError

    resolution = engine.resolve(model)
    provider = engine.router.lm(f"{resolution.provider}:{resolution.model}")
    if not provider.supports.complete:
        raise UnsupportedFeatureError(f"{resolution.provider} does not support complete.", provider=resolution.provider)
    return provider, resolution.model


class PooledBackend:
    """Any sync backend, one attempt per call on a bounded pool of its own."""

    def __init__(self, backend: Any, threads: int):
        self.sync = backend
        self.name = backend.name
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None

    async def complete(self, request: Request) -> Response:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"tidyq-async-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.sync.complete, request)

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class InlineBackend:
    """The mock: answered on the loop itself."""

    def __init__(self, backend: Any):
        self.sync = backend
        self.name = backend.name

    async def complete(self, request: Request) -> Response:
        return self.sync.complete(request)

    async def aclose(self) -> None:
        return None


def async_backend(backend: Any, *, max_connections: int, threads: int) -> Any:
    """The async twin of a built sync backend (shared/backends/__init__.py built it)."""
    if getattr(backend, "router_config", None) is not None:
        return AsyncLM15Backend(backend, max_connections)
    if backend.name == "mock":
        return InlineBackend(backend)
    return PooledBackend(backend, threads)
