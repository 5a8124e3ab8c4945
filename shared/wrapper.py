"""UnifiedDSPyWrapper: one DSPy LM whose engine is our step stack around one backend.

    metrics -> cache (memory, then Redis or disk) -> retry -> rate limit -> backend -> provider

The wrapper owns the backend choice and the steps; DSPy keeps doing what it is good at (adapters,
modules, optimizers). Its own cache and retries are off (cache=False, num_retries=0) so that there
is exactly one cache and one retry layer. Modules run under ``dspy.context(lm=...)`` per call, never
``dspy.configure``, so one process can hold wrappers for many backends and threads.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.utils.exceptions import LMError

from shared.backends import build_backend
from shared.backends.auto import resolve_auto
from shared.breaker import build_breaker_step
from shared.config import BackendType, UnifiedConfig, get_settings
from shared.fallback import apply_target_options, build_fallback_engine
from shared.errors import BadInput, TidyqError
from shared.metrics import registry
from shared.program_io import program_inputs
from shared.steps import stats
from shared.steps.base import StepEngine
from shared.steps.cache import CacheStep
from shared.steps.metrics import MetricsStep
from shared.steps.ratelimit import RateLimitStep
from shared.steps.retry import RetryStep
from shared.validation import regenerate

PASS_THROUGH = ("SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated", "WorkerLostError")


def _unwrap(exc: BaseException) -> BaseException:
    """DSPy wraps whatever an engine raises; give callers back our own errors and Celery's
    time-limit/cancellation exceptions instead of an LMUnexpectedError around them."""
    seen = exc
    while seen is not None:
        if isinstance(seen, TidyqError) or type(seen).__name__ in PASS_THROUGH:
            return seen
        seen = seen.__cause__
    return exc


def as_module(program: Any) -> dspy.Module:
    """A signature string, a dspy.Signature class or a dspy.Module -> a dspy.Module."""
    if isinstance(program, dspy.Module):
        return program
    if isinstance(program, str) or (isinstance(program, type) and issubclass(program, dspy.Signature)):
        try:
            module = dspy.Predict(program)
        except Exception as exc:
            raise BadInput(f"bad signature {program!r}: {exc}", where="signature") from None
        if not module.signature.output_fields or not module.signature.input_fields:
            raise BadInput(f"bad signature {program!r}: it needs input and output fields, e.g. 'question -> answer'",
                           where="signature")
        return module
    raise BadInput(f"expected a signature string, a dspy.Signature class or a dspy.Module, got {type(program).__name__}",
                   where="program")


def lm_model_string(backend, config: UnifiedConfig) -> str:
    if config.backend is BackendType.MOCK:
        return f"mock/{config.model or 'mock'}"
    if config.backend is BackendType.BEDROCK:
        return f"bedrock/{backend.model_id}"
    return backend.model


class UnifiedDSPyModule:
    """A DSPy module bound to a wrapper: ``predict(**inputs) -> dspy.Prediction``."""

    def __init__(self, wrapper: "UnifiedDSPyWrapper", module: dspy.Module):
        self.wrapper = wrapper
        self.module = module
        predictors = module.predictors() if hasattr(module, "predictors") else []
        self.signature = predictors[0].signature if len(predictors) == 1 and module is predictors[0] else None
        # any other module: its forward() parameters (shared/program_io.py)
        self.inputs = program_inputs(module) if self.signature is None else None

    @property
    def input_fields(self) -> list[str] | None:
        return list(self.signature.input_fields) if self.signature is not None else None

    @property
    def output_fields(self) -> list[str] | None:
        return list(self.signature.output_fields) if self.signature is not None else None

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        """Unknown or missing input fields are bad input (the signature's, or forward()'s)."""
        if self.signature is None:
            if self.inputs is not None:
                self.inputs.check(inputs, where="item")
            return
        expected = set(self.signature.input_fields)
        unknown = sorted(set(inputs) - expected)
        if unknown:
            raise BadInput(f"unknown input field(s) {unknown}; the signature takes {sorted(expected)}",
                           where=f"inputs.{unknown[0]}")
        missing = sorted(expected - set(inputs))
        if missing:
            raise BadInput(f"missing input field(s) {missing}", where=f"inputs.{missing[0]}")

    def predict_with_stats(self, **inputs: Any) -> tuple[dspy.Prediction, stats.CallStats]:
        self.check_inputs(inputs)
        validation = self.wrapper.config.validation
        with stats.track() as call, dspy.context(lm=self.wrapper.lm, **{stats.STATS_SETTING: call}):
            try:
                prediction = self.module(**inputs)
                if validation.active:
                    try:
                        prediction, _ = regenerate(self.module, inputs, validation, prediction)
                    except Exception:
                        call.validation_failures += 1
                        registry.record_validation_failure(self.wrapper.backend_name, self.wrapper.model)
                        raise
            except LMError as exc:
                raise _unwrap(exc) from None if _unwrap(exc) is not exc else exc
        return prediction, call

    def predict(self, **inputs: Any) -> dspy.Prediction:
        return self.predict_with_stats(**inputs)[0]

    __call__ = predict


class UnifiedDSPyWrapper:
    """One backend, one step stack, one dspy.LM. Build once per process and reuse."""

    def __init__(self, config: UnifiedConfig | None = None, **overrides: Any):
        if config is None:
            config = UnifiedConfig(**overrides)
        elif overrides:
            import dataclasses

            config = dataclasses.replace(config, **overrides)
        settings = get_settings()
        self.config = resolve_auto(apply_target_options(config, settings).resolved(settings))
        self.backend = build_backend(self.config)
        self.backend_name = self.config.backend.value
        self.model = lm_model_string(self.backend, self.config)
        steps: list = [MetricsStep(self.backend_name, self.model,
                                   pricing_provider=getattr(self.backend, "provider", None))]
        if self.config.cache.enabled:
            shared = self.config.cache.shared
            if shared is None:
                shared = self.config.backend is not BackendType.MOCK
            steps.append(CacheStep(self.backend_name, self.config.cache, redis_url=self.config.redis_url,
                                   cache_dir=self.config.cache_dir, shared=shared))
        steps.append(RetryStep(self.config.retry))
        breaker = build_breaker_step(self.backend_name, self.config.model, self.config.redis_url, settings)
        if breaker is not None:  # inside retry: every attempt is gated (shared/breaker.py)
            steps.append(breaker)
        limits = settings.rate_limits.get(self.backend_name, {})
        if limits and self.config.redis_url:
            steps.append(RateLimitStep(self.backend_name, self.config.redis_url, rpm=limits.get("rpm", 0),
                                       tpm=limits.get("tpm", 0), max_inline_wait=self.config.retry.max_inline_wait))
        self.engine = StepEngine(steps, self.backend)
        if self.config.fallbacks or breaker is not None:  # one engine over every target (shared/fallback.py)
            self.engine = build_fallback_engine(self, settings)
        lm_kwargs = {k: v for k, v in {"temperature": self.config.temperature,
                                       "max_tokens": self.config.max_tokens}.items() if v is not None}
        self.lm = dspy.LM(self.model, engine=self.engine, cache=False, num_retries=0, **lm_kwargs)

    def create_module(self, program: Any) -> UnifiedDSPyModule:
        return UnifiedDSPyModule(self, as_module(program))

    def get_info(self) -> dict[str, Any]:
        cache_step = next((s for s in self.engine.steps if isinstance(s, CacheStep)), None)
        rate = next((s for s in self.engine.steps if isinstance(s, RateLimitStep)), None)
        return {
            "backend": self.backend_name,
            "model": self.model,
            "engine": getattr(self.backend, "client", type(self.backend).__name__),
            "steps": self.engine.step_names,
            "features": {
                "retry": {"max_retries": self.config.retry.max_retries, "base_delay": self.config.retry.base_delay,
                          "backoff_factor": self.config.retry.backoff_factor, "max_delay": self.config.retry.max_delay},
                "cache": {"enabled": cache_step is not None,
                          "shared_tier": cache_step.shared_kind if cache_step else None,
                          "ttl_seconds": self.config.cache.ttl_seconds},
                "validation": self.config.validation.active,
                "rate_limit": bool(rate),
                "circuit_breaker": any(step.name == "breaker" for step in self.engine.steps),
                "targets": list(getattr(self.engine, "targets", [])) or [f"{self.backend_name}:{self.config.model or ''}"],
                "metrics": True,
            },
            "config": self.config.public(),
        }

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "UnifiedDSPyWrapper":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
