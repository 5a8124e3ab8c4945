"""tidyq's typed errors. Provider failures travel as dspy.lm15 errors inside the engine
(the boundary DSPy expects) and as DSPy's LMError subclasses outside it; these are ours."""

from __future__ import annotations


class TidyqError(Exception):
    """Base of every error tidyq raises on purpose."""


class ConfigurationError(TidyqError):
    """Settings are missing or contradictory; the message says what was looked for."""


class BadTarget(ConfigurationError, ValueError):
    """A (backend, model) target that cannot exist. Also a ValueError, so pydantic reports it as a
    validation error of the job message carrying it (a poison message, not a crashed task)."""


class BadInput(TidyqError):
    """User input is wrong. ``where`` names the file/line/field; the CLI exits 2."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ValidationFailed(TidyqError):
    """No attempt produced an output that passed the ValidationConfig checks."""

    def __init__(self, reasons: list[str], attempts: int, outputs: dict | None = None):
        self.reasons = list(reasons)
        self.attempts = attempts
        self.outputs = outputs
        super().__init__(f"output failed validation after {attempts} attempt(s): " + "; ".join(self.reasons))


class RetryLater(TidyqError):
    """A transient failure whose next try should go back to the queue with a countdown
    instead of sleeping in a worker slot (large Retry-After, retries exhausted in place)."""

    def __init__(self, message: str, *, delay: float):
        self.delay = delay
        super().__init__(message)


class BreakerOpen(TidyqError):
    """The target's circuit breaker refuses calls now; the fallback engine moves on at once.
    ``retry_at`` is the Unix time it may take a call again (half-open)."""

    def __init__(self, target: str, state: str, retry_at: float):
        self.target, self.state, self.retry_at = target, state, retry_at
        super().__init__(f"circuit breaker of {target} is {state}")


class AllTargetsOpen(RetryLater):
    """No target of a call could serve it now (breakers open, or every one failed transiently):
    the item does not fail, its chunk goes back to the queue until ``retry_at`` (Unix time).
    ``skipped`` lists {"target", "reason"} for each target tried."""

    def __init__(self, retry_at: float, skipped: list[dict], *, now: float | None = None):
        import time

        self.retry_at = retry_at
        self.skipped = list(skipped)
        delay = max(0.0, retry_at - (time.time() if now is None else now))
        targets = ", ".join(f"{s['target']} ({s['reason']})" for s in self.skipped)
        super().__init__(f"waiting for a backend: every target is unavailable [{targets}]; "
                         f"next try in {delay:.1f}s", delay=delay)


class CredentialsRejected(TidyqError):
    """A target rejected the worker's credentials: never falls back (the same job would be
    served elsewhere with a broken setup unnoticed). The message says which credentials to check."""

    def __init__(self, target: str, hint: str, detail: str = ""):
        self.target, self.hint = target, hint
        super().__init__(f"{target} rejected the credentials: {hint}" + (f" ({detail})" if detail else ""))
