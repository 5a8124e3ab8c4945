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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dspy.lm15 import Request, Response


class AsyncLM15Backend:
    """direct/gateway over DSPy's AsyncLM15Engine. Its pools belong to the event loop that first
    used them, so one instance serves one loop (the worker's); another loop gets its own."""

    def __init__(self, backend: Any, max_connections: int):
        self.sync = backend
        self.name = backend.name
        self.config = dataclasses.replace(backend.router_config, max_connections=max_connections)
        self._engines: dict[int, Any] = {}

    def _engine(self) -> Any:
        from dspy.clients.engines.lm15_engine import AsyncLM15Engine

        loop = asyncio.get_running_loop()
        engine = self._engines.get(id(loop))
        if engine is None:
            engine = self._engines[id(loop)] = AsyncLM15Engine(self.config, model_type="chat")
        return engine

    async def complete(self, request: Request) -> Response:
        return await self._engine().complete(request)

    async def aclose(self) -> None:
        engine = self._engines.pop(id(asyncio.get_running_loop()), None)
        if engine is not None:
            await engine.aclose()


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
