"""Fallback chains: one DSPy engine that tries an ordered list of (backend, model) targets.

The wrapper's own backend and model stay the first target; ``UnifiedConfig.fallbacks`` (the
CLI's ``--fallback``, the client's ``fallbacks=[...]``) follow in order. Each target has its own
full step stack (metrics -> cache -> retry -> breaker -> rate limit -> backend), built by
shared/engine.py as a list of routes; the whole chain is ONE engine object handed to ``dspy.LM``:
modules and optimizers do not change.

A call moves to the next target
- when the retry step gives up on a transient failure (5xx, 429, timeout, connection),
- at once when the target's circuit breaker is open (shared/breaker.py),
- on a context-window error, to the next target marked ``larger_context`` (others are skipped).
Authentication and bad-request errors never fall back: the call fails (an auth error names the
credentials to check). When no target could serve and something may recover (a breaker is open
or every failure was transient), ``AllTargetsOpen(retry_at=...)`` tells the queue to put the
chunk back until the earliest half-open time. ``stats.current()`` receives ``served_by`` and
``skipped`` (each target passed over and why) for the item's result.

Where a target lives: ``Settings.target_options`` (TIDYQ_TARGET_OPTIONS, JSON) keyed
``backend:model`` gives per-target ``api_base``, ``api_key_env`` (the NAME of an environment
variable holding its key: credentials stay in the worker's environment), ``region``,
``gateway_url`` and ``larger_context``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from dspy import lm15
from dspy.lm15 import Request, Response, response_to_events

from shared.backends.auto import provider_key_env
from shared.breaker import CircuitBreaker, record_fallbacks
from shared.config import TARGET_OPTION_KEYS, BackendType, Settings, Target, get_settings
from shared.errors import AllTargetsOpen, BreakerOpen, ConfigurationError, CredentialsRejected, RetryLater
from shared.steps import stats
from shared.steps.base import StepEngine
from shared.steps.retry import is_transient
from shared.telemetry import get_logger

__all__ = ["FallbackEngine", "AsyncFallbackEngine", "Route", "target_options", "credential_hint", "requeue_delay",
           "skipped_of", "job_deadline"]


def target_options(target: Target | str, settings: Settings | None = None) -> dict[str, Any]:
    """The worker-side options of one target (TIDYQ_TARGET_OPTIONS); unknown keys are refused."""
    s = settings or get_settings()
    tid = Target.parse(target).id
    options = dict(s.target_options.get(tid) or s.target_options.get(tid.rstrip(":")) or {})
    unknown = sorted(set(options) - set(TARGET_OPTION_KEYS))
    if unknown:
        raise ConfigurationError(f"TIDYQ_TARGET_OPTIONS[{tid!r}]: unknown option(s) {unknown}; "
                                 f"known: {', '.join(TARGET_OPTION_KEYS)}")
    return options


def credential_hint(target: Target, exc: BaseException | None = None) -> str:
    """Which credentials a worker should check when ``target`` rejected them."""
    if target.backend == BackendType.BEDROCK.value:
        return ("check the worker's AWS credentials for Bedrock (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or the instance role) and their bedrock:InvokeModel permission")
    if target.backend == BackendType.GATEWAY.value:
        return ("check the MLflow AI Gateway's provider credentials (set in the `mlflow server` environment) "
                "and TIDYQ_GATEWAY_URL")
    options = target_options(target)
    if options.get("api_key_env"):
        return f"check {options['api_key_env']} (api_key_env of TIDYQ_TARGET_OPTIONS[{target.id!r}])"
    names = [n for n in (provider_key_env(target.model), "TIDYQ_API_KEY") if n]
    env_keys = getattr(exc, "env_keys", ()) or ()
    names += [n for n in env_keys if n not in names]
    return f"check {' or '.join(names)} in the worker's environment"


@dataclass(frozen=True)
class Route:
    """One target and the engine (its full step stack) that serves it (built by shared/engine.py)."""

    target: Target
    engine: StepEngine
    model: str  # the model string this engine expects in Request.model
    breaker: CircuitBreaker | None = None
    async_engine: Any = None  # the same steps on DSPy's async path (shared/steps/async_steps.py)

    @property
    def id(self) -> str:
        return self.target.id


def job_deadline(deadline: float | None, created_at: float, settings: Settings | None = None) -> float:
    """A job's own deadline, or submit time + TIDYQ_BACKEND_WAIT_DEADLINE_SECONDS."""
    s = settings or get_settings()
    return deadline if deadline is not None else created_at + s.backend_wait_deadline_seconds


def requeue_delay(exc: AllTargetsOpen, *, deadline: float | None, now: float | None = None) -> float | None:
    """The queue's countdown for a chunk whose items met AllTargetsOpen: until the earliest
    half-open time, or None when that is past the job's deadline (then the items fail)."""
    now = time.time() if now is None else now
    if deadline is not None and exc.retry_at > deadline:
        return None
    return max(0.0, exc.retry_at - now)


def _with_skipped(exc: BaseException, skipped: list[dict]) -> BaseException:
    exc.fallback_skipped = list(skipped)  # type: ignore[attr-defined]  # read back by skipped_of() after DSPy wraps it
    return exc


def skipped_of(exc: BaseException | None) -> list[dict]:
    """The targets a failed call skipped, from the error (or whatever it is wrapped in)."""
    seen = 0
    while exc is not None and seen < 10:
        found = getattr(exc, "fallback_skipped", None)
        if found is not None:
            return list(found)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return []


class FallbackEngine:
    """DSPy's engine protocol (complete/stream/close) over an ordered list of routes."""

    def __init__(self, routes: list[Route], *, redis=None, retry_after_failure: float = 15.0):
        if not routes:
            raise ValueError("a fallback engine needs at least one route")
        self.routes = list(routes)
        self.redis = redis
        self.retry_after_failure = retry_after_failure  # countdown when targets failed but no breaker says when
        self.log = get_logger(targets=[r.id for r in self.routes])

    @property
    def targets(self) -> list[str]:
        return [r.id for r in self.routes]

    def complete(self, request: Request) -> Response:
        """Drives ``_plan`` with each route's sync engine."""
        plan = self._plan(request)
        attempt = next(plan)
        while True:
            route, routed = attempt
            try:
                response = route.engine.complete(routed)
            except BaseException as exc:
                try:
                    attempt = plan.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                attempt = plan.send(response)
            except StopIteration as stop:
                return stop.value

    async def acomplete(self, request: Request) -> Response:
        """The same plan with each route's async engine (shared/steps/async_steps.py)."""
        plan = self._plan(request)
        attempt = next(plan)
        while True:
            route, routed = attempt
            try:
                response = await route.async_engine.complete(routed)
            except BaseException as exc:
                try:
                    attempt = plan.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                attempt = plan.send(response)
            except StopIteration as stop:
                return stop.value

    def _plan(self, request: Request) -> Generator[tuple[Route, Request], Response, Response]:
        """The decisions of one call, shared by the sync and the async driver: it yields each
        (route, request) to try and is sent the response or thrown the route's error."""
        collector = stats.current()
        skipped: list[dict] = []
        retry_at: list[float] = []
        context_error: lm15.ContextLengthError | None = None
        last_error: BaseException | None = None
        may_recover = False
        for index, route in enumerate(self.routes):
            if context_error is not None and index > 0 and not route.target.larger_context:
                skipped.append({"target": route.id, "reason": "not_larger_context"})
                continue
            known = route.breaker.known_open() if route.breaker is not None else None
            try:
                if known is not None:
                    raise known
                routed = request if request.model == route.model else dataclasses.replace(request, model=route.model)
                response = yield route, routed
            except BreakerOpen as exc:
                reason, may_recover = f"breaker_{exc.state}", True
                retry_at.append(exc.retry_at)
            except RetryLater as exc:
                reason, may_recover, last_error = "retry_later", True, exc
                retry_at.append(time.time() + exc.delay)
            except lm15.ContextLengthError as exc:
                reason, context_error, last_error = "context_length", exc, exc
            except lm15.AuthError as exc:
                self._finish(collector, skipped, None)
                raise _with_skipped(CredentialsRejected(route.id, credential_hint(route.target, exc),
                                                        detail=f"{type(exc).__name__}, HTTP {exc.status}"),
                                    skipped) from exc
            except lm15.LM15Error as exc:
                if not is_transient(exc):
                    self._finish(collector, skipped, None)
                    _with_skipped(exc, skipped)
                    raise
                reason, may_recover, last_error = f"failed:{type(exc).__name__}", True, exc
                retry_at.append(time.time() + self.retry_after_failure)
            else:
                self._finish(collector, skipped, route)
                return response
            skipped.append({"target": route.id, "reason": reason})
            nxt = self.routes[index + 1].id if index + 1 < len(self.routes) else None
            self._moved(route, reason, nxt)
        self._finish(collector, skipped, None)
        if may_recover and self._waits_for_backends():
            raise _with_skipped(AllTargetsOpen(min(retry_at), skipped), skipped)
        if context_error is not None and not may_recover:
            raise _with_skipped(context_error, skipped)
        if last_error is not None:
            raise _with_skipped(last_error, skipped)
        raise _with_skipped(AllTargetsOpen(min(retry_at), skipped), skipped)

    def _waits_for_backends(self) -> bool:
        """Without any breaker (no Redis) a failing chain fails the call as a single backend would;
        with breakers the queue waits for the earliest half-open time instead."""
        return any(r.breaker is not None for r in self.routes)

    def _moved(self, route: Route, reason: str, to: str | None) -> None:
        self.log.debug("fallback", from_target=route.id, to_target=to, reason=reason)

    def _finish(self, collector, skipped: list[dict], served: Route | None) -> None:
        if skipped:
            record_fallbacks(self.redis, skipped, served.id if served is not None else None)
        if collector is not None:
            collector.skipped.extend(skipped)
            if served is not None:
                collector.served_by = served.id

    def stream(self, request: Request) -> Iterator:
        return response_to_events(self.complete(request))

    def close(self) -> None:
        for route in self.routes:
            route.engine.close()


class AsyncFallbackEngine:
    """DSPy's AsyncEngine protocol over a FallbackEngine's routes (their async engines)."""

    def __init__(self, engine: FallbackEngine):
        self.engine = engine

    async def complete(self, request: Request) -> Response:
        return await self.engine.acomplete(request)

    async def stream(self, request: Request) -> AsyncIterator:
        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        for route in self.engine.routes:
            if route.async_engine is not None:
                await route.async_engine.aclose()

