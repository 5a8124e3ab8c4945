"""DSPy 2.x assertions on DSPy 3 (public as ``tidyq.assertions``), so 2.x code migrates mechanically.

DSPy 3 removed ``dspy.Assert``/``dspy.Suggest`` and ``dspy.primitives.assertions``. This keeps the
behaviour of the last live version (dspy 2.5.43's dspy/primitives/assertions.py):

- ``Assert(cond, msg)`` / ``Suggest(cond, msg)``: a condition that is not a bool is a ValueError; a
  false one raises DSPyAssertionError / DSPySuggestionError unless bypassed (``bypass_assert`` /
  ``bypass_suggest``, both off by default, so outside an activated module both raise);
- ``assert_transform_module(module, handler, **handler_args)`` / ``activate_assertions(module, ...)``
  wrap ``module.forward`` in a handler; ``backtrack_handler`` (the default) re-runs forward up to
  ``max_backtracks`` times, and on those re-runs the failing predictor (the trace's last one, or the
  one ``target_module`` names) gets the messages as a ``feedback`` input and its previous outputs as
  ``past_<field>`` inputs added to its signature; then a still-failing Assert raises and a Suggest
  is bypassed (logged).

DSPy 2.x swapped every predictor for a ``dspy.Retry`` to do that; here the extra fields are added by
an adapter installed with ``dspy.context`` for the re-run, so the module's predictors, its saved state
and its optimizers are untouched. Flags and feedback live in ``dspy.context`` overrides, which DSPy
carries into its own threads (dspy.Parallel, Evaluate), and are per thread otherwise.
"""

from __future__ import annotations

import inspect
import logging
import types
import uuid
from collections.abc import Callable
from typing import Any

import dspy
from dspy.adapters.chat_adapter import ChatAdapter

logger = logging.getLogger(__name__)

Handler = Callable[..., Callable[..., Any]]


class _ConstraintError(AssertionError):
    """What both 2.x errors carry: the check's id and message, target_module, the trace then."""

    def __init__(self, id: str, msg: str, target_module: Any = None, state: Any = None, is_metric: bool = False):
        super().__init__(msg)
        self.id = id
        self.msg = msg
        self.target_module = target_module
        self.state = state
        self.is_metric = is_metric


class DSPyAssertionError(_ConstraintError):
    """A failing ``Assert``."""


class DSPySuggestionError(_ConstraintError):
    """A failing ``Suggest`` (a sibling of DSPyAssertionError, as in 2.x)."""


def _setting(name: str) -> Any:
    return dspy.settings.get(name, None)


class Constraint:
    """Checked on construction, as in 2.x: ``Assert(cond, msg)`` is the whole call."""

    error: type[_ConstraintError] = DSPyAssertionError
    bypass_setting = "bypass_assert"
    kind = "Assertion"

    def __init__(self, result: bool, msg: str = "", target_module: Any = None, is_metric: bool = False):
        self.id = str(uuid.uuid4())
        self.result = result
        self.msg = msg
        self.target_module = target_module
        self.is_metric = is_metric
        self.__call__()

    def __call__(self) -> bool:
        if not isinstance(self.result, bool):
            raise ValueError(f"{self.kind} function should always return [bool], got {type(self.result).__name__}")
        if self.result:
            return True
        self._log()
        if _setting(self.bypass_setting):
            return True
        trace = _setting("trace")
        raise self.error(id=self.id, msg=self.msg, target_module=self.target_module,
                         state=list(trace) if trace is not None else [], is_metric=self.is_metric)

    def _log(self) -> None:
        logger.error("AssertionError: %s", self.msg)


class Assert(Constraint):
    """dspy.Assert: must hold; after backtracking a failure raises."""


class Suggest(Constraint):
    """dspy.Suggest: should hold; after backtracking a failure is logged and bypassed."""

    error = DSPySuggestionError
    bypass_setting = "bypass_suggest"
    kind = "Suggestion"

    def _log(self) -> None:
        logger.info("SuggestionFailed: %s", self.msg)


# ---- the re-run of the failing predictor -------------------------------------------------------------


def feedback_signature(signature: type[dspy.Signature]) -> type[dspy.Signature]:
    """2.x's Retry signature: ``past_<output>`` inputs for each output, then ``feedback``."""
    for name in signature.output_fields:
        signature = signature.append(f"past_{name}", dspy.InputField(desc=f"past {name} with errors"))
    return signature.append("feedback", dspy.InputField(desc="Some instructions you must satisfy"))


class FeedbackAdapter:
    """Wraps the configured adapter for one re-run: when the predictor being backtracked to calls
    the LM, its signature gets the feedback fields and its inputs their values (2.x's Retry)."""

    def __init__(self, inner: Any, target: Any, feedback: str, past_outputs: dict[str, Any]):
        self.inner = inner
        self.target = target
        self.extra = {f"past_{k}": v for k, v in past_outputs.items()} | {"feedback": feedback}

    def _rewrite(self, signature: type[dspy.Signature], inputs: dict[str, Any]):
        callers = _setting("caller_modules") or []
        if not callers or callers[-1] is not self.target:
            return signature, inputs
        signature = feedback_signature(signature)
        return signature, {**inputs, **{k: v for k, v in self.extra.items() if k in signature.input_fields}}

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        signature, inputs = self._rewrite(signature, inputs)
        return self.inner(lm, lm_kwargs, signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        signature, inputs = self._rewrite(signature, inputs)
        return await self.inner.acall(lm, lm_kwargs, signature, demos, inputs)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy.copy / deepcopy build the object without __init__)
            raise AttributeError(name)
        return getattr(self.inner, name)


def _owns(target: Any, predictor: Any) -> bool:
    if target is predictor:
        return True
    named = getattr(target, "named_predictors", None)
    return callable(named) and any(p is predictor for _, p in named())


def _keep(outer: list | None, trace: list, result: Any) -> Any:
    """The successful try's trace goes to the caller's (an optimizer collecting demos reads it)."""
    if outer is not None:
        outer.extend(trace)
    return result


def _backtrack_point(error: _ConstraintError) -> tuple[Any, dict[str, Any]] | None:
    """(predictor, its outputs) to re-run: the trace's last, or the last one of target_module."""
    trace = error.state or []
    for predictor, _inputs, prediction in reversed(trace):
        if error.target_module is None or _owns(error.target_module, predictor):
            outputs = {name: getattr(prediction, name, None) for name in predictor.signature.output_fields}
            return predictor, outputs
    if trace:
        logger.error("Module not found in trace. If passing a DSPy Signature, please specify the intended module "
                     "for the assertion (e.g., use `target_module = self.my_module(my_signature)`).")
    else:
        logger.error("No trace available for the failing assertion %r: nothing to backtrack to", error.msg)
    return None


# ---- handlers ---------------------------------------------------------------------------------------


def noop_handler(func: Callable) -> Callable:
    """Assertions and suggestions become no-ops."""

    def wrapper(*args, **kwargs):
        with dspy.context(bypass_assert=True, bypass_suggest=True):
            return func(*args, **kwargs)

    return wrapper


def bypass_suggest_handler(func: Callable) -> Callable:
    """A failing Suggest is logged, a failing Assert raises."""

    def wrapper(*args, **kwargs):
        with dspy.context(bypass_suggest=True, bypass_assert=False):
            return func(*args, **kwargs)

    return wrapper


def bypass_assert_handler(func: Callable) -> Callable:
    """A failing Assert is logged, not raised."""

    def wrapper(*args, **kwargs):
        with dspy.context(bypass_assert=True):
            return func(*args, **kwargs)

    return wrapper


def assert_no_except_handler(func: Callable) -> Callable:
    """A failing Assert makes the call return None."""

    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DSPyAssertionError:
            return None

    return wrapper


def backtrack_handler(func: Callable, bypass_suggest: bool = True, max_backtracks: int = 2) -> Callable:
    """Re-run ``func`` up to ``max_backtracks`` times, the failing predictor with feedback; on the
    last try a remembered Assert failure raises and suggestions are bypassed (or None is returned
    when ``bypass_suggest`` is False), as in 2.x."""

    def wrapper(*args, **kwargs):
        outer = _setting("trace")
        feedbacks: dict[int, list[str]] = {}
        first_error: _ConstraintError | None = None
        adapter: FeedbackAdapter | None = None
        for attempt in range(max_backtracks + 1):
            # Each try records into its own trace (2.x cleared a shared one): failed tries leave nothing
            # in the caller's trace, and threads sharing the global trace cannot see each other's.
            trace: list = []
            overrides: dict[str, Any] = {"trace": trace}
            if adapter is not None:
                overrides["adapter"] = adapter
            if attempt == max_backtracks:
                if isinstance(first_error, DSPyAssertionError):
                    raise first_error
                if not bypass_suggest:
                    return None
                with dspy.context(**overrides):
                    result = bypass_suggest_handler(func)(*args, **kwargs)
                return _keep(outer, trace, result)
            try:
                with dspy.context(**overrides):
                    result = func(*args, **kwargs)
                return _keep(outer, trace, result)
            except _ConstraintError as error:
                first_error = first_error or error
                point = _backtrack_point(error)
                if point is not None:
                    predictor, past_outputs = point
                    messages = feedbacks.setdefault(id(predictor), [])
                    if error.msg not in messages:
                        messages.append(error.msg)
                    inner = adapter.inner if adapter is not None else (_setting("adapter") or ChatAdapter())
                    adapter = FeedbackAdapter(inner, predictor, "\n".join(messages), past_outputs)
        return None  # unreachable: the last attempt returns or raises

    return wrapper


default_assertion_handler = backtrack_handler


def _forward_of(module: Any) -> Callable:
    """The module's forward without DSPy 3's "forward called directly" warning."""
    own = module.__dict__.get("forward")
    return own if own is not None else types.MethodType(type(module).forward, module)


def handle_assert_forward(assertion_handler: Handler, **handler_args: Any) -> Callable:
    def forward(self, *args, **kwargs):
        call_args = inspect.getcallargs(self._forward, *args, **kwargs)
        if "bypass_assert" in call_args:  # 2.x: a forward() argument of that name sets the flag
            with dspy.context(bypass_assert=call_args["bypass_assert"]):
                return assertion_handler(self._forward, **handler_args)(*args, **kwargs)
        return assertion_handler(self._forward, **handler_args)(*args, **kwargs)

    return forward


def assert_transform_module(module: Any, assertion_handler: Handler = default_assertion_handler,
                            **handler_args: Any) -> Any:
    """Make ``module`` handle its assertions with ``assertion_handler``; returns the same module."""
    if not callable(getattr(type(module), "forward", None)) and "forward" not in getattr(module, "__dict__", {}):
        raise ValueError("Module must have a forward method to have assertions handled.")
    if "_forward" in module.__dict__:
        logger.info("Module %s already has a _forward method. Skipping...", type(module).__name__)
    module._forward = _forward_of(module)
    module.forward = types.MethodType(handle_assert_forward(assertion_handler, **handler_args), module)
    module._assert_transformed = True
    return module


def activate_assertions(module: Any, handler: Handler = backtrack_handler, **handler_args: Any) -> Any:
    """2.x's ``module.activate_assertions(handler, **handler_args)`` as a function (DSPy 3's Module
    has no such method)."""
    return assert_transform_module(module, handler, **handler_args)


__all__ = ["Assert", "Constraint", "DSPyAssertionError", "DSPySuggestionError", "Suggest", "activate_assertions",
           "assert_no_except_handler", "assert_transform_module", "backtrack_handler", "bypass_assert_handler",
           "bypass_suggest_handler", "default_assertion_handler", "feedback_signature", "handle_assert_forward",
           "noop_handler"]
