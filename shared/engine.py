"""The one place that assembles an engine: the ordered steps for one target, the routes of a config.

    metrics -> cache (memory, then Redis or disk) -> retry -> breaker -> rate limit -> backend

Each route also gets the same steps on DSPy's async path (``Route.async_engine``: the async twin
of every step, then the target's adaptive concurrency gate, then the async backend), and
``build_async_engine`` is what ``dspy.LM(async_engine=...)`` receives: ``module.acall`` runs there.

``build_routes(config)`` gives one Route per target (the config's own first, then its fallbacks),
each a StepEngine with its own full step stack; ``build_engine(routes)`` is what ``dspy.LM``
receives: the only route's StepEngine, or a FallbackEngine over the routes when there is more than
one target or a breaker can open (then an open breaker sends the chunk back to the queue instead
of failing the call). The wrapper, tests and ops read the routes, never a second wrapper.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from shared.backends import build_backend
from shared.backends.async_io import async_backend
from shared.backends.auto import resolve_auto
from shared.breaker import BreakerStep, build_breaker_step
from shared.concurrency import AdaptiveLimit, AsyncConcurrency
from shared.config import BackendType, Settings, Target, UnifiedConfig
from shared.errors import ConfigurationError
from shared.fallback import AsyncFallbackEngine, FallbackEngine, Route, target_options
from shared.redisconn import get_redis
from shared.steps.async_steps import AsyncStepEngine, to_async
from shared.steps.base import Backend, Step, StepEngine
from shared.steps.cache import CacheStep
from shared.steps.metrics import MetricsStep
from shared.steps.ratelimit import RateLimitStep
from shared.steps.retry import RetryStep

Engine = StepEngine | FallbackEngine
AsyncEngine = AsyncStepEngine | AsyncFallbackEngine


def apply_target_options(config: UnifiedConfig, settings: Settings) -> UnifiedConfig:
    """Fill the endpoint fields a config leaves unset from its target's options (arguments win)."""
    if config.backend is BackendType.AUTO:
        return config
    target = Target(config.backend.value, config.model)
    options = target_options(target, settings)
    updates: dict[str, Any] = {name: options[name] for name in ("api_base", "region", "gateway_url")
                               if options.get(name) and getattr(config, name) is None}
    env = options.get("api_key_env")
    if env and config.api_key is None:
        if not os.environ.get(env):
            raise ConfigurationError(f"TIDYQ_TARGET_OPTIONS[{target.id!r}] names api_key_env {env!r}, "
                                     "which is not set in this worker's environment")
        updates["api_key"] = os.environ[env]
    return dataclasses.replace(config, **updates) if updates else config


def resolve_config(config: UnifiedConfig, settings: Settings) -> UnifiedConfig:
    """Arguments, then the target's options, then the TIDYQ_* environment; AUTO made concrete."""
    return resolve_auto(apply_target_options(config, settings).resolved(settings))


def fallback_config(primary: UnifiedConfig, target: Target) -> UnifiedConfig:
    """A fallback target's config: the primary's policy (retry, cache, validation, generation
    settings) but none of its endpoint or credential (those belong to the primary's provider)."""
    return dataclasses.replace(primary, backend=BackendType.parse(target.backend), model=target.model,
                               api_base=None, api_key=None, region=None, fallbacks=())


def lm_model_string(backend: Any, config: UnifiedConfig) -> str:
    """The model string dspy.LM is built with and puts in every Request.model."""
    if config.backend is BackendType.MOCK:
        return f"mock/{config.model or 'mock'}"
    if config.backend is BackendType.BEDROCK:
        return f"bedrock/{backend.model_id}"
    return str(backend.model)


def build_steps(config: UnifiedConfig, backend: Backend, model: str, settings: Settings) -> list[Step]:
    """The ordered steps of one resolved target, outermost first."""
    name = config.backend.value
    steps: list[Step] = [MetricsStep(name, model, pricing_provider=getattr(backend, "provider", None))]
    if config.cache.enabled:
        shared = config.cache.shared
        if shared is None:  # the mock's answers cost less than a shared-tier round trip
            shared = config.backend is not BackendType.MOCK
        steps.append(CacheStep(name, config.cache, redis_url=config.redis_url, cache_dir=config.cache_dir,
                               shared=shared))
    steps.append(RetryStep(config.retry))
    breaker = build_breaker_step(name, config.model, config.redis_url, settings)
    if breaker is not None:  # inside retry: every attempt is gated (shared/breaker.py)
        steps.append(breaker)
    limits = settings.rate_limits.get(name, {})
    if limits and config.redis_url:
        steps.append(RateLimitStep(name, config.redis_url, rpm=limits.get("rpm", 0), tpm=limits.get("tpm", 0),
                                   max_inline_wait=config.retry.max_inline_wait))
    return steps


def build_limit(config: UnifiedConfig, target: Target, settings: Settings) -> AdaptiveLimit:
    """The target's in-flight cap: rate x latency with a configured rpm, learned otherwise. A
    TIDYQ_CONCURRENCY_<BACKEND> set explicitly pins it (the operator's number wins); the default
    value is only where learning starts."""
    name = config.backend.value
    field = f"concurrency_{name}"
    start = max(1, int(getattr(settings, field, 1)))
    redis = get_redis(config.redis_url) if config.redis_url else None
    if field in settings.model_fields_set:
        return AdaptiveLimit(target.id, initial=start, floor=start, ceiling=start, redis=redis,
                             max_inline_wait=config.retry.max_inline_wait)
    rpm = settings.rate_limits.get(name, {}).get("rpm", 0) if config.redis_url else 0
    return AdaptiveLimit(target.id, rate_per_s=rpm / 60.0, initial=start, ceiling=settings.async_max_inflight,
                         redis=redis, max_inline_wait=config.retry.max_inline_wait)


def build_async_route_engine(config: UnifiedConfig, backend: Backend, steps: list[Step], target: Target,
                             settings: Settings) -> AsyncStepEngine:
    """The same steps (their async twins, same objects underneath) around the async backend,
    with the target's adaptive concurrency gate innermost: every provider attempt passes it."""
    threads = max(1, int(getattr(settings, f"concurrency_{config.backend.value}", 1)))
    twin = async_backend(backend, max_connections=settings.async_max_inflight, threads=threads)
    gate = AsyncConcurrency(build_limit(config, target, settings))
    if gate.limit.mode == "learned":  # a retry of a random storm's 429 need not wait (shared/fleet_refusals.py)
        for step in steps:
            if isinstance(step, RetryStep):
                step.backoff.not_ours = gate.limit.refusals.not_ours
    return AsyncStepEngine([*(to_async(s) for s in steps), gate], twin, [*(s.name for s in steps), gate.name])


def build_route(config: UnifiedConfig, settings: Settings, target: Target | None = None) -> Route:
    """One resolved (non-AUTO) target -> its backend wrapped in its steps (sync and async)."""
    backend = build_backend(config)
    model = lm_model_string(backend, config)
    steps = build_steps(config, backend, model, settings)
    breaker = next((s.breaker for s in steps if isinstance(s, BreakerStep)), None)
    target = target or Target(config.backend.value, config.model)
    async_engine = build_async_route_engine(config, backend, steps, target, settings)
    return Route(target, StepEngine(steps, backend), model, breaker, async_engine)


def build_routes(config: UnifiedConfig, settings: Settings) -> list[Route]:
    """The resolved config's own route, then one per fallback target, in order."""
    routes = [build_route(config, settings)]
    try:
        for target in config.fallbacks:
            if target_options(target, settings).get("larger_context") and not target.larger_context:
                target = dataclasses.replace(target, larger_context=True)
            routes.append(build_route(resolve_config(fallback_config(config, target), settings), settings, target))
    except BaseException:
        for route in routes:  # nothing half-built stays open (clients, background threads)
            route.engine.close()
        raise
    return routes


def build_engine(routes: list[Route], config: UnifiedConfig, settings: Settings) -> Engine:
    """What dspy.LM receives for these routes."""
    if len(routes) == 1 and routes[0].breaker is None:
        return routes[0].engine
    redis = get_redis(config.redis_url) if config.redis_url else None
    return FallbackEngine(routes, redis=redis, retry_after_failure=settings.breaker_open_seconds)


def build_async_engine(routes: list[Route], engine: Engine) -> AsyncEngine:
    """What ``dspy.LM(async_engine=...)`` receives: the async side of the same engine."""
    if isinstance(engine, FallbackEngine):
        return AsyncFallbackEngine(engine)
    return routes[0].async_engine
