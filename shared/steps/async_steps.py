"""The same step stack on DSPy's async path (``dspy.LM(async_engine=...)``, ``module.acall``).

Why a second engine class and not threads: one worker process must keep hundreds of provider
calls in flight, and a thread per call tops out long before that on 2 cores. So each sync step
(shared/steps/*) gets an async twin here that REUSES the sync step object's state and policy
(the same memory/Redis cache tiers, the same retry policy and backoff, the same Redis token
bucket, the same breaker, the same metrics registry) and only changes how it waits: it awaits
``call_next`` and ``asyncio.sleep`` instead of blocking. There is still ONE retry layer per call:
a call goes either through the sync stack or through this one, never both.

Short Redis round trips (a cache GET, a bucket reservation, a breaker permit) stay synchronous
on the loop: ~0.1-0.3 ms each on loopback, cheaper than a thread hop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from dspy import lm15
from dspy.lm15 import Request, Response

from shared.breaker import BreakerStep
from shared.errors import error_type_name
from shared.steps import stats
from shared.steps.cache import CacheStep
from shared.steps.coalesce import Coalescer
from shared.steps.metrics import MetricsStep
from shared.steps.ratelimit import RateLimitStep
from shared.steps.retry import RetryStep, RetryTally

AsyncCallNext = Callable[[Request], Awaitable[Response]]
AsyncStep = Callable[[Request, AsyncCallNext], Awaitable[Response]]


class AsyncMetrics:
    def __init__(self, step: MetricsStep):
        self.step = step

    async def __call__(self, request: Request, call_next: AsyncCallNext) -> Response:
        outer = stats.current()
        with stats.track() as call:
            start = time.perf_counter()
            error = None
            response = None
            try:
                response = await call_next(request)
                return response
            except Exception as exc:
                error = error_type_name(exc)  # the same name as the sync step's (one error vocabulary)
                raise
            finally:
                self.step.record(outer, call, start, response, error)


class AsyncCache:
    """Memory tier first; the shared tier's lookups of one loop turn share one round trip."""

    def __init__(self, step: CacheStep):
        self.step = step
        # a memory-only cache (the mock's) has no round trip to share
        self.reads = Coalescer(step.from_shared_many) if hasattr(step.shared, "get_many") else None

    async def __call__(self, request: Request, call_next: AsyncCallNext) -> Response:
        key, response = self.step.find_in_memory(request)
        if response is None:
            found = await self.reads.get(key) if self.reads else self.step.from_shared_many([key])[0]
            response = self.step.counted(found)
        if response is not None:
            return response
        return self.step.keep(key, await call_next(request))


class AsyncRetry:
    def __init__(self, step: RetryStep):
        self.step = step

    async def __call__(self, request: Request, call_next: AsyncCallNext) -> Response:
        tally = RetryTally()
        collector = stats.current()
        with self.step.room.call():
            while True:
                if collector is not None:
                    collector.attempts += 1
                try:
                    response = await call_next(request)
                except lm15.LM15Error as exc:
                    wait = self.step.wait_before_retry(exc, tally, collector)
                    if tally.wakeable:
                        tally.probes += await self.step.room.apause(wait, tally.probes, self.step.may_end_early(tally))
                    else:
                        await asyncio.sleep(wait)
                    continue
                self.step.succeeded()
                return response


class AsyncBreaker:
    """The breaker step's policy on the async path: a 429 (or 503 with Retry-After) is flow control,
    neutral for the breaker (shared.breaker.outcome_of); the adaptive concurrency gate slows down on it."""

    def __init__(self, step: BreakerStep):
        self.step = step

    async def __call__(self, request: Request, call_next: AsyncCallNext) -> Response:
        permit = self.step.enter()
        try:
            response = await call_next(request)
        except BaseException as exc:
            self.step.failed(permit, exc)
            raise
        self.step.breaker.record(permit, "ok")
        return response


class AsyncRateLimit:
    def __init__(self, step: RateLimitStep):
        self.step = step

    async def __call__(self, request: Request, call_next: AsyncCallNext) -> Response:
        wait, estimate = self.step.reserve(request)
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            response = await call_next(request)
        except lm15.LM15Error as exc:
            self.step.on_error(exc)
            raise
        self.step.correct_tokens(response, estimate)
        return response


def to_async(step: Any) -> AsyncStep:
    """The async twin of one sync step (same object underneath); unknown steps are refused at
    assembly, not at the first call."""
    twins: dict[type, Callable[[Any], AsyncStep]] = {
        MetricsStep: AsyncMetrics, CacheStep: AsyncCache, RetryStep: AsyncRetry,
        BreakerStep: AsyncBreaker, RateLimitStep: AsyncRateLimit,
    }
    twin = twins.get(type(step))
    if twin is None:
        raise TypeError(f"step {getattr(step, 'name', step)!r} has no async twin (shared/steps/async_steps.py)")
    return twin(step)


def _bind(step: AsyncStep, call_next: AsyncCallNext) -> AsyncCallNext:
    """``step`` with its next call bound. A partial, not a wrapping coroutine: every await in the
    chain is a frame that each resumption passes through, and hundreds of calls in flight resume
    often (the wrapper frames were ~5% of the event loop's time)."""
    return functools.partial(cast(Any, step), call_next=call_next)


class AsyncStepEngine:
    """DSPy's AsyncEngine protocol (async complete, stream, aclose) over the async twins of a
    route's steps (outermost first) around an async backend (shared/backends/async_io.py)."""

    def __init__(self, steps: list[AsyncStep], backend: Any, names: list[str]):
        self.steps = list(steps)
        self.backend = backend
        self.step_names = list(names)
        call: AsyncCallNext = backend.complete
        for step in reversed(self.steps):
            call = _bind(step, call)
        self._call = call

    async def complete(self, request: Request) -> Response:
        return await self._call(request)

    async def stream(self, request: Request) -> AsyncIterator:
        # served from a complete response, as the sync engine does, so cache and retry still apply
        for event in lm15.response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        await self.backend.aclose()
