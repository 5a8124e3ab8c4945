"""One line naming what failed and why, for an error from Redis or MLflow met by a CLI command
or an MCP tool (the user sees the cause, never a bare "error" or a traceback).

Why here: the CLI and the MCP server report the same outside failures; the wording and the
redaction (no password from a URL, no key) live in one place.
"""

from __future__ import annotations

from shared.telemetry import redact

MAX_CHARS = 240


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, redacted and bounded."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = redact(text)[:MAX_CHARS]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def service_of(exc: BaseException) -> str | None:
    """'Redis' or 'MLflow' when ``exc`` (or what it wraps) came from one of them, else None."""
    current: BaseException | None = exc
    seen = 0
    while current is not None and seen < 10:
        module = type(current).__module__ or ""
        if module.startswith("redis"):
            return "Redis"
        if module.startswith(("mlflow", "sqlalchemy", "alembic")):
            return "MLflow"
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception ``exc`` was raised from (e.g. the refused connection under an
    MlflowException whose own message is mostly a URL)."""
    seen = 0
    inner = exc.__cause__ or exc.__context__
    while seen < 10 and inner is not None:
        exc, inner = inner, inner.__cause__ or inner.__context__
        seen += 1
    return exc


def describe(exc: BaseException) -> str | None:
    """'the MLflow call failed: MlflowException: ... (cause: ConnectionRefusedError: ...)' for an
    outside failure, else None."""
    service = service_of(exc)
    if service is None:
        return None
    root = root_cause(exc)
    why = f" (cause: {one_line(root)})" if root is not exc else ""
    return f"the {service} call failed: {one_line(exc)}{why}"
