"""structlog JSON logs with secret redaction.

Every log line goes through :func:`redact`, which masks values of secret-named keys and any
known secret value from the environment (API keys, AWS secrets, Redis passwords in URLs), so a
secret never reaches a log even when it sits inside a message string.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from shared.environ import EnvMemo

SECRET_KEY_PATTERN = re.compile(r"(api[_-]?key|secret|password|token|authorization|credential|session[_-]?token)", re.I)
SECRET_ENV_NAMES = ("TIDYQ_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "TIDYQ_FLOWER_BASIC_AUTH", "TIDYQ_MCP_TOKENS", "REDIS_PASSWORD",
                    "TIDYQ_API_TOKENS", "TIDYQ_WEBHOOK_SECRET")
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
MASK = "***"


def _scan_secret_values() -> tuple[str, ...]:
    values = []
    for name, value in os.environ.items():
        if not value or len(value) < 6:
            continue
        if name in SECRET_ENV_NAMES or (name.endswith(("_API_KEY", "_SECRET", "_PASSWORD", "_TOKEN"))):
            values.append(value)
    for name in ("TIDYQ_REDIS_URL", "REDIS_URL", "TIDYQ_BROKER_URL"):
        m = URL_PASSWORD.search(os.environ.get(name, ""))
        if m and len(m.group("pw")) >= 4:
            values.append(m.group("pw"))
    return tuple(sorted(set(values), key=len, reverse=True))


_secret_values = EnvMemo(_scan_secret_values)  # every log line is redacted: scan the environment once


def known_secret_values() -> list[str]:
    """Secret values present in this process's environment (long enough to be worth masking)."""
    return list(_secret_values.get())


def redact_text(text: str, secrets: Sequence[str] | None = None) -> str:
    if "@" in text and "://" in text:  # what URL_PASSWORD needs; most log values have neither
        text = URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    for value in secrets if secrets is not None else _secret_values.get():
        if value in text:
            text = text.replace(value, MASK)
    return text


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Log lines repeat a few dozen key names: match each against the pattern once."""
    return SECRET_KEY_PATTERN.search(key) is not None


def redact(value: Any, secrets: Sequence[str] | None = None, _key: str = "") -> Any:
    """A copy of ``value`` with secrets masked: by key name, by known value, in URLs."""
    if secrets is None:
        secrets = _secret_values.get()
    if _key and _secret_key(_key) and value not in (None, "", MASK):
        return MASK
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: redact(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secrets) for v in value)
    return value


def _redact_processor(_logger, _method, event_dict):
    return redact(event_dict)


_configured = False


def configure_logging(level: str | None = None, stream=None) -> None:
    """JSON lines on stderr (or ``stream``). Idempotent; call at process start."""
    global _configured
    level_name = (level or os.environ.get("TIDYQ_LOG_LEVEL", "INFO")).upper()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**bind: Any):
    # Configure on first use, but never over a configuration someone else made (an embedding
    # application, or structlog.testing.capture_logs in a test).
    if not _configured and not structlog.is_configured():
        configure_logging()
    return structlog.get_logger("tidyq").bind(**bind)
