"""What code migrated by earlier versions of `tidyq migrate` runs on; kept so that code keeps working.
(The codemod now rewrites DSPy 2.x assertions to tidyq.assertions, which keeps 2.x's semantics.)

Those versions moved a module's ``dspy.Assert(cond, msg)`` / ``dspy.Suggest(cond, msg)`` calls out
of ``forward()`` into a generator method ``assertion_checks(args, pred)`` that yields
``("assert"|"suggest", passed, message)`` in the original order, and wraps instances in
:class:`RefineAssertions`. That keeps 2.6's observable contract on top of DSPy 3's native
re-generation:

- first call as usual; when every check passes, that prediction is returned (no extra calls);
- otherwise re-generate with ``dspy.Refine`` (or ``dspy.BestOfN``) whose reward is built from the
  checks: 1.0 when all hold, 0.0 when a hard (Assert) check fails, in [0.5, 1) for soft (Suggest)
  failures; ``attempts`` = 2.6's ``max_backtracks + 1``;
- a hard failure that survives raises :class:`DSPyAssertionError` (2.6 raised after its
  backtracks); a surviving soft failure is logged and the prediction returned, as 2.6's
  ``backtrack_handler`` did, or raised as :class:`DSPySuggestionError` with ``strict=True`` (a
  module whose assertions were never activated raised on the first failing Suggest in 2.6).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

import dspy

from shared.errors import ValidationFailed
from shared.validation import SeededAttempt

logger = logging.getLogger(__name__)

Checks = Callable[[dict, Any], Iterable[tuple[str, Any, Any]]]


class DSPyAssertionError(ValidationFailed, AssertionError):
    """A migrated dspy.Assert still failed after every attempt (2.6's DSPyAssertionError)."""


class DSPySuggestionError(ValidationFailed, AssertionError):
    """A migrated dspy.Suggest failed in a strict (never activated) module."""


def evaluate_checks(checks: Checks, args: dict, pred: Any) -> tuple[list[str], list[str], int]:
    """(failed hard messages, failed soft messages, soft checks seen). Stops at the first failing
    hard check: dspy.Assert raised there, so later checks never ran in 2.6 either."""
    hard: list[str] = []
    soft: list[str] = []
    soft_seen = 0
    for kind, passed, message in checks(args, pred):
        if kind not in ("assert", "suggest"):
            raise ValueError(f"assertion check kind must be 'assert' or 'suggest', got {kind!r}")
        if kind == "suggest":
            soft_seen += 1
        if passed:
            continue
        text = str(message) if message else f"a dspy.{kind.capitalize()} check failed"
        if kind == "assert":
            hard.append(text)
            break
        soft.append(text)
    return hard, soft, soft_seen


def reward_from_checks(checks: Checks) -> Callable[[dict, Any], float]:
    """A dspy.Refine/BestOfN reward: 1.0 all hold, 0.0 a hard check fails, else 1 - 0.5 * share of
    soft checks failing (so any soft-only failure still beats a hard one)."""

    def reward(args: dict, pred: Any) -> float:
        if pred is None:
            return 0.0
        hard, soft, soft_seen = evaluate_checks(checks, args, pred)
        if hard:
            return 0.0
        return 1.0 - 0.5 * (len(soft) / soft_seen) if soft_seen else 1.0

    reward.__name__ = getattr(checks, "__qualname__", "assertion_reward")
    return reward


def _outputs(pred: Any) -> dict[str, Any]:
    return dict(pred.items()) if hasattr(pred, "items") else {}


class RefineAssertions(dspy.Module):
    """A module plus the checks migrated from its 2.6 assertions (see the module docstring)."""

    def __init__(self, module: dspy.Module, checks: Checks, attempts: int = 3, strict: bool = False,
                 strategy: str = "refine"):
        super().__init__()
        if attempts < 1:
            raise ValueError("RefineAssertions.attempts must be >= 1 (2.6's max_backtracks + 1)")
        if strategy not in ("refine", "best_of_n"):
            raise ValueError("RefineAssertions.strategy is 'refine' or 'best_of_n'")
        self.module = module
        self.checks = checks
        self.attempts = attempts
        self.strict = strict
        self.strategy = strategy

    def _as_kwargs(self, args: tuple, kwargs: dict) -> dict:
        """2.6 accepted positional inputs; Refine and the checks need them by name."""
        if not args:
            return kwargs
        bound = inspect.signature(self.module.forward).bind(*args, **kwargs)
        return dict(bound.arguments)

    def forward(self, *args: Any, **kwargs: Any):
        kwargs = self._as_kwargs(args, kwargs)
        pred = self.module(**kwargs)
        hard, soft, _ = evaluate_checks(self.checks, kwargs, pred)
        used = 1
        if (hard or soft) and self.attempts > 1:
            pred, hard, soft = self._regenerate(kwargs, pred, hard, soft)
            used = self.attempts
        if hard:
            raise DSPyAssertionError(hard, attempts=used, outputs=_outputs(pred))
        if soft:
            if self.strict:
                raise DSPySuggestionError(soft, attempts=used, outputs=_outputs(pred))
            logger.warning("dspy.Suggest check(s) still failing after %d attempt(s): %s", used, "; ".join(soft))
        return pred

    def _regenerate(self, kwargs: dict, first: Any, hard: list[str], soft: list[str]):
        reward = reward_from_checks(self.checks)
        escaped: list[BaseException] = []
        runner_cls = dspy.Refine if self.strategy == "refine" else dspy.BestOfN
        retries = self.attempts - 1
        # A fresh runner per call: Refine/BestOfN decrement fail_count on the instance.
        runner = runner_cls(module=SeededAttempt(self.module, escaped), N=retries, reward_fn=reward, threshold=1.0,
                            fail_count=retries)
        best = runner(**kwargs)
        if escaped:
            raise escaped[0]
        if best is None or reward(kwargs, best) <= reward(kwargs, first):
            return first, hard, soft
        hard2, soft2, _ = evaluate_checks(self.checks, kwargs, best)
        return best, hard2, soft2
