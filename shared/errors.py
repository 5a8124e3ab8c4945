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


class ChunkItemsFailed(TidyqError):
    """Raised at the very end of a chunk task whose items failed (every result is already stored),
    so Celery marks the task FAILURE and Flower's list and "Failed" counter show it. The task
    declares it in ``throws``: Celery logs it as expected, without a traceback, and acks it."""

    def __init__(self, summary: dict):
        self.summary = dict(summary)
        types = ", ".join(f"{name} x{n}" for name, n in self.summary.get("error_types", {}).items())
        super().__init__(f"{self.summary.get('failed', 0)} of {self.summary.get('items', 0)} items failed"
                         + (f" ({types})" if types else "") + f"; succeeded {self.summary.get('succeeded', 0)}")

    def __reduce__(self):  # picklable/serialisable with the one argument it was built from
        return (type(self), (self.summary,))


def error_type_name(exc: BaseException) -> str:
    """The one name an error goes by in results, status, MLflow and Prometheus.

    Inside the engine (our steps) provider failures are ``dspy.lm15`` errors; DSPy projects them to
    its public ``LM*Error`` classes on the way out, which is what an item's result shows. Naming an
    lm15 error by its public projection (DSPy's own ERROR_MAPPING) keeps the two sides in one
    vocabulary: ``MissingCredentialError`` inside is ``LMNotConfiguredError`` everywhere."""
    try:
        from dspy import lm15
        from dspy.clients.errors import ERROR_MAPPING
    except ImportError:  # pragma: no cover - DSPy is a dependency; stay safe if its layout moves
        return type(exc).__name__
    if isinstance(exc, lm15.LM15Error):
        return next((public.__name__ for source, public in ERROR_MAPPING if isinstance(exc, source)),
                    "LMUnexpectedError")
    return type(exc).__name__
