"""Output validation on DSPy 3's native re-generation (dspy.Refine / dspy.BestOfN).

DSPy 3 removed dspy.Assert/Suggest; Refine and BestOfN re-run a module until a reward reaches a
threshold. Their quirks are handled here: they return the best prediction WITHOUT raising when no
attempt passes (we re-check and raise ValidationFailed); they catch every exception (we let
provider, time-limit and cancellation errors through, only output-parse failures count as a failed
attempt); their fail_count is decremented on the instance (we build one per call); and attempts
differ only by a rollout_id our engine never sees, so each attempt gets its own seed (a real
provider knob) which also keeps the response cache from replaying a failed answer.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from shared.config import ValidationConfig
from shared.errors import ValidationFailed


def check_outputs(config: ValidationConfig, outputs: dict[str, Any]) -> list[str]:
    """Reasons the outputs fail ``config``; empty when they pass."""
    reasons: list[str] = []
    fields = config.fields or tuple(k for k, v in outputs.items() if isinstance(v, str))
    texts = {name: str(outputs.get(name, "")) for name in fields}
    for name, text in texts.items():
        if config.min_length is not None and len(text) < config.min_length:
            reasons.append(f"{name} is {len(text)} characters, shorter than min_length {config.min_length}")
        if config.max_length is not None and len(text) > config.max_length:
            reasons.append(f"{name} is {len(text)} characters, longer than max_length {config.max_length}")
    if config.required_keywords:
        joined = "\n".join(texts.values()).lower()
        missing = [k for k in config.required_keywords if k.lower() not in joined]
        if missing:
            reasons.append(f"missing required keyword(s): {', '.join(missing)}")
    for check in config.checks:
        verdict = check(dict(outputs))
        if verdict is False:
            reasons.append(f"check {getattr(check, '__name__', 'custom')} failed")
        elif isinstance(verdict, str) and verdict:
            reasons.append(verdict)
    return reasons


def _outputs(pred) -> dict[str, Any]:
    return dict(pred.items()) if pred is not None else {}


class SeededAttempt(dspy.Module):
    """Runs the module once per attempt with a seed derived from Refine's rollout id, and
    records the first non-parse exception so it can be re-raised after Refine returns."""

    def __init__(self, module: dspy.Module, escaped: list[BaseException]):
        super().__init__()
        self.module = module
        self.escaped = escaped

    def forward(self, **kwargs):
        if self.escaped:
            raise self.escaped[0]
        for _, predictor in self.module.named_predictors():
            lm = predictor.lm
            if lm is not None and lm.kwargs.get("rollout_id") is not None:
                predictor.lm = lm.copy(seed=int(lm.kwargs["rollout_id"]) + 1)
        try:
            return self.module(**kwargs)
        except AdapterParseError:
            raise
        except Exception as exc:
            self.escaped.append(exc)
            raise


def regenerate(module: dspy.Module, inputs: dict[str, Any], config: ValidationConfig, first) -> tuple[Any, int]:
    """Given a failing first prediction, re-generate up to max_attempts-1 times. Returns
    (passing prediction, attempts used) or raises ValidationFailed with the last reasons."""
    reasons = check_outputs(config, _outputs(first))
    if not reasons:
        return first, 1
    retries = config.max_attempts - 1
    if retries <= 0:
        raise ValidationFailed(reasons, attempts=1, outputs=_outputs(first))

    def reward(_args, pred) -> float:
        failed = len(check_outputs(config, _outputs(pred)))
        return 1.0 if failed == 0 else 1.0 / (1 + failed)

    escaped: list[BaseException] = []
    attempt = SeededAttempt(module, escaped)
    cls = dspy.Refine if config.strategy == "refine" else dspy.BestOfN
    runner = cls(module=attempt, N=retries, reward_fn=reward, threshold=1.0, fail_count=retries)
    best = runner(**inputs)
    if escaped:
        raise escaped[0]
    final = check_outputs(config, _outputs(best)) if best is not None else ["no attempt produced a parsable output"]
    if final:
        raise ValidationFailed(final, attempts=config.max_attempts, outputs=_outputs(best))
    return best, 1 + retries
