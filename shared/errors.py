"""tidyq's typed errors. Provider failures travel as dspy.lm15 errors inside the engine
(the boundary DSPy expects) and as DSPy's LMError subclasses outside it; these are ours."""

from __future__ import annotations


class TidyqError(Exception):
    """Base of every error tidyq raises on purpose."""


class ConfigurationError(TidyqError):
    """Settings are missing or contradictory; the message says what was looked for."""


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
