"""UnifiedDSPyWrapper: one DSPy LM whose engine is our step stack around each target's backend.

    metrics -> cache (memory, then Redis or disk) -> retry -> breaker -> rate limit -> backend -> provider

The engine is assembled in one place (shared/engine.py); the wrapper owns the config and the LM;
DSPy keeps doing what it is good at (adapters, modules, optimizers). Its own cache and retries are
off (cache=False, num_retries=0) so that there is exactly one cache and one retry layer. Modules
run under ``dspy.context(lm=...)`` per call, never ``dspy.configure``, so one process can hold
wrappers for many backends and threads.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import functools
import re
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dspy
from dspy.utils.exceptions import LMError

from shared.config import UnifiedConfig, get_settings
from shared.engine import build_async_engine, build_engine, build_routes, resolve_config
from shared.errors import BadInput, TidyqError
from shared.memo_adapter import default_adapter
from shared.metrics import registry
from shared.program_io import program_inputs
from shared.steps import stats
from shared.steps.cache import CacheStep
from shared.steps.ratelimit import RateLimitStep
from shared.validation import regenerate

PASS_THROUGH = ("SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated", "WorkerLostError")
MAX_CAUSE_DEPTH = 16  # DSPy wraps an engine's error once or twice; a longer chain is not ours to walk


def _unwrap(exc: BaseException) -> BaseException:
    """DSPy wraps whatever an engine raises; give callers back our own errors and Celery's
    time-limit/cancellation exceptions instead of an LMUnexpectedError around them.
    Bounded: a cause chain may be long or (built by hand) circular."""
    seen: BaseException | None = exc
    for _ in range(MAX_CAUSE_DEPTH):
        if seen is None:
            break
        if isinstance(seen, TidyqError) or type(seen).__name__ in PASS_THROUGH:
            return seen
        seen = seen.__cause__
    return exc


@contextmanager
def _our_errors() -> Iterator[None]:
    """DSPy's LMError around one of ours (or Celery's time limit) -> ours, unwrapped."""
    try:
        yield
    except LMError as exc:
        ours = _unwrap(exc)
        if ours is exc:
            raise
        raise ours from None


def has_own_aforward(module: dspy.Module) -> bool:
    """True when the class that defines the program's ``forward`` (or a subclass of it) also
    defines ``aforward``: a user's subclass of ChainOfThought that overrides only ``forward``
    must not run the parent's async forward."""
    cls = type(module)
    known = _OWN_AFORWARD.get(cls)
    if known is None:  # per class, not per call: the async path asks once per item (~6% of its CPU)
        known = _OWN_AFORWARD[cls] = _class_has_own_aforward(cls)
    return known


_OWN_AFORWARD: dict[type, bool] = {}


def _class_has_own_aforward(cls: type) -> bool:
    mro = cls.__mro__

    def owner(name: str) -> int | None:
        return next((i for i, cls in enumerate(mro) if name in vars(cls)), None)

    found, forward = owner("aforward"), owner("forward")
    return found is not None and (forward is None or found <= forward)


_TYPE_NAME = re.compile(r":\s*([A-Za-z_][A-Za-z0-9_]*)")


def parsed_signature(text: str) -> type[dspy.Signature]:
    """A signature string parsed once per process: parsing builds a pydantic model (~5 ms of CPU),
    and a worker builds a module per thread or async slot. DSPy treats Signature classes as
    immutable (every edit returns a new class), so modules may share one. A string naming a type
    of its own (``x: MyType``) is parsed each time: DSPy finds such types in the caller's frames."""
    if any(name not in builtins.__dict__ and name not in typing.__dict__ for name in _TYPE_NAME.findall(text)):
        return dspy.ensure_signature(text)
    return _parsed(text)


@functools.lru_cache(maxsize=512)
def _parsed(text: str) -> type[dspy.Signature]:
    return dspy.ensure_signature(text)


def as_module(program: Any) -> dspy.Module:
    """A signature string, a dspy.Signature class or a dspy.Module -> a dspy.Module."""
    if isinstance(program, dspy.Module):
        return program
    if isinstance(program, str) or (isinstance(program, type) and issubclass(program, dspy.Signature)):
        try:
            module = dspy.Predict(parsed_signature(program) if isinstance(program, str) else program)
        except Exception as exc:
            raise BadInput(f"bad signature {program!r}: {exc}", where="signature") from None
        if not module.signature.output_fields or not module.signature.input_fields:
            raise BadInput(f"bad signature {program!r}: it needs input and output fields, e.g. 'question -> answer'",
                           where="signature")
        return module
    raise BadInput("expected a signature string, a dspy.Signature class or a dspy.Module, "
                   f"got {type(program).__name__}",
                   where="program")


class UnifiedDSPyModule:
    """A DSPy module bound to a wrapper: ``predict(**inputs) -> dspy.Prediction``."""

    def __init__(self, wrapper: UnifiedDSPyWrapper, module: dspy.Module, *, keep_history: bool = True):
        self.wrapper = wrapper
        self.module = module
        # DSPy's per-call history (lm.history, its process-wide list): a worker turns it off for a signature, as
        # nobody there reads it, it would keep other jobs' prompts in memory, and building each
        # entry (a uuid, a timestamp, a copy of the messages) is ~3% of a call's CPU
        self.keep_history = keep_history
        self._history_settings = {} if keep_history else {"disable_history": True}
        predictors = module.predictors() if hasattr(module, "predictors") else []
        self.signature = predictors[0].signature if len(predictors) == 1 and module is predictors[0] else None
        # any other module: its forward() parameters (shared/program_io.py)
        self.inputs = program_inputs(module) if self.signature is None else None
        # read per item: a signature's input_fields property rebuilds its dict on every access
        self._expected = frozenset(self.signature.input_fields) if self.signature is not None else frozenset()

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
        expected = self._expected
        if expected.issuperset(inputs) and len(inputs) == len(expected):
            return
        unknown = sorted(set(inputs) - expected)
        if unknown:
            raise BadInput(f"unknown input field(s) {unknown}; the signature takes {sorted(expected)}",
                           where=f"inputs.{unknown[0]}")
        missing = sorted(expected - set(inputs))
        if missing:
            raise BadInput(f"missing input field(s) {missing}", where=f"inputs.{missing[0]}")

    def predict_with_stats(self, **inputs: Any) -> tuple[dspy.Prediction, stats.CallStats]:
        self.check_inputs(inputs)
        with stats.track() as call, dspy.context(**self._settings(call)), _our_errors():
            prediction = self._validated(inputs, self.module(**inputs), call)
        return prediction, call

    async def apredict_with_stats(self, **inputs: Any) -> tuple[dspy.Prediction, stats.CallStats]:
        """The same predict on DSPy's async path: ``module.acall`` when the program's own class
        has an async forward, else ``dspy.asyncify`` (its sync forward in a worker thread, so
        users' modules with Python between calls run unchanged). Validation re-runs, which are
        sync DSPy code (Refine/BestOfN), go to a thread with the same context."""
        self.check_inputs(inputs)
        with stats.track() as call, dspy.context(**self._settings(call)), _our_errors():
            if has_own_aforward(self.module):
                prediction = await self.module.acall(**inputs)
            else:  # DSPy's asyncify limiter defaults to 8 threads: size it as the threaded path is
                with dspy.context(async_max_workers=self.wrapper.asyncify_threads):
                    prediction = await dspy.asyncify(self.module)(**inputs)
            if self.wrapper.config.validation.active:
                prediction = await asyncio.to_thread(self._validated, inputs, prediction, call)
        return prediction, call

    def _settings(self, call: stats.CallStats) -> dict[str, Any]:
        """This call's DSPy settings: our LM, the stats collector, and, unless the user chose an
        adapter, ChatAdapter with its per-signature prompt parts memoised (shared/memo_adapter.py)."""
        settings: dict[str, Any] = {"lm": self.wrapper.lm, stats.STATS_SETTING: call, **self._history_settings}
        if dspy.settings.adapter is None:
            settings["adapter"] = default_adapter
        return settings

    def _validated(self, inputs: dict[str, Any], prediction: dspy.Prediction, call: stats.CallStats):
        validation = self.wrapper.config.validation
        if not validation.active:
            return prediction
        try:
            prediction, _ = regenerate(self.module, inputs, validation, prediction)
        except Exception:
            call.validation_failures += 1
            registry.record_validation_failure(self.wrapper.backend_name, self.wrapper.model)
            raise
        return prediction

    def predict(self, **inputs: Any) -> dspy.Prediction:
        return self.predict_with_stats(**inputs)[0]

    __call__ = predict


class UnifiedDSPyWrapper:
    """One target chain (``routes``: its own target, then its fallbacks, each with its own steps),
    one engine over them, one dspy.LM. Build once per process and reuse."""

    def __init__(self, config: UnifiedConfig | None = None, **overrides: Any):
        if config is None:
            config = UnifiedConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        settings = get_settings()
        self.config = resolve_config(config, settings)
        self.routes = build_routes(self.config, settings)  # the config's own target first, then its fallbacks
        self.engine = build_engine(self.routes, self.config, settings)
        self.async_engine = build_async_engine(self.routes, self.engine)  # module.acall runs here
        # threads for programs without an async forward on the async path (their calls take the sync steps)
        self.asyncify_threads = max(8, int(getattr(settings, f"concurrency_{self.config.backend.value}", 8)))
        primary = self.routes[0]
        self.backend = primary.engine.backend
        self.backend_name = self.config.backend.value
        self.model = primary.model
        lm_kwargs = {k: v for k, v in {"temperature": self.config.temperature,
                                       "max_tokens": self.config.max_tokens}.items() if v is not None}
        self.lm = dspy.LM(self.model, engine=self.engine, async_engine=self.async_engine, cache=False, num_retries=0,
                          **lm_kwargs)

    def create_module(self, program: Any, *, keep_history: bool = True) -> UnifiedDSPyModule:
        """``keep_history=False``: DSPy records no LM history for its calls (workers, for programs
        given as a signature: no user code there could read it)."""
        return UnifiedDSPyModule(self, as_module(program), keep_history=keep_history)

    def get_info(self) -> dict[str, Any]:
        """What this wrapper talks to and how, read from its routes (the first is its own target)."""
        primary = self.routes[0]
        cache_step = next((s for s in primary.engine.steps if isinstance(s, CacheStep)), None)
        rate = next((s for s in primary.engine.steps if isinstance(s, RateLimitStep)), None)
        return {
            "backend": self.backend_name,
            "model": self.model,
            "engine": getattr(self.backend, "client", type(self.backend).__name__),
            "steps": primary.engine.step_names,
            "features": {
                "retry": {"max_retries": self.config.retry.max_retries, "base_delay": self.config.retry.base_delay,
                          "backoff_factor": self.config.retry.backoff_factor, "max_delay": self.config.retry.max_delay},
                "cache": {"enabled": cache_step is not None,
                          "shared_tier": cache_step.shared_kind if cache_step else None,
                          "ttl_seconds": self.config.cache.ttl_seconds},
                "validation": self.config.validation.active,
                "rate_limit": bool(rate),
                "circuit_breaker": primary.breaker is not None,
                "targets": [route.id for route in self.routes],
                "metrics": True,
            },
            "config": self.config.public(),
        }

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> UnifiedDSPyWrapper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
