"""Completion webhooks: which URLs are allowed, how a body is signed, when an event is scheduled.

Why here (not in workers/): a job ends on a worker (its last result, or the last chunk of a
cancelling job) or at the producer (cancelling a queued job), so both sides schedule events; the
delivery itself is a Celery task (workers/webhooks.py) sent BY NAME with a countdown for retries,
so a slow receiver never holds a worker slot.

- An event id is ``<job id>.<event>`` (``job.completed``, ``job.progress.50`` ...): a Redis SET NX
  claims it once, so every event is scheduled once however many workers see the job end.
- The body is the job status JSON at the event, kept for the retries (same bytes, fresh signature).
- ``Tidyq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`` (Stripe's scheme), key
  TIDYQ_WEBHOOK_SECRET; :func:`verify_signature` is the receiver's side.
- Only http(s); private, loopback, link-local, multicast and reserved addresses are refused (at
  submit and again before each delivery, after DNS) unless TIDYQ_WEBHOOK_ALLOW_PRIVATE=true.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from shared import keys
from shared.config import Settings
from shared.errors import BadInput, ConfigurationError
from shared.jobs import JobSpec

DELIVER_TASK = "tidyq.webhook.deliver"
SIGNATURE_HEADER = "Tidyq-Signature"
EVENT_ID_HEADER = "Tidyq-Event-Id"
EVENT_HEADER = "Tidyq-Event"
STATE_FIELD_PREFIX = "webhook:"  # job hash field per event: its delivery state (JSON)

# send(task name, args, countdown seconds): the caller's Celery send_task, bound to the job's queue
Send = Callable[[str, list, float], None]


def check_url(url: Any, settings: Settings, *, where: str = "webhook_url", resolve: bool = True) -> str:
    """The URL if a webhook may be sent to it, else BadInput naming ``where`` and the reason."""
    if not isinstance(url, str) or not url.strip():
        raise BadInput("expected an http(s) URL", where=where)
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise BadInput(f"only http and https URLs are allowed, got {parts.scheme or 'no'} scheme", where=where)
    if not parts.hostname:
        raise BadInput("the URL has no host", where=where)
    if parts.username or parts.password:
        raise BadInput("credentials in the URL are not allowed (the URL shows in job status); verify the "
                       "Tidyq-Signature header instead", where=where)
    if resolve and not settings.webhook_allow_private:
        for address in _addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), where):
            if not address.is_global or address.is_multicast:
                raise BadInput(f"{parts.hostname} resolves to {address}, a private, loopback or link-local "
                               "address; webhooks go to public addresses only (TIDYQ_WEBHOOK_ALLOW_PRIVATE=true "
                               "allows these)", where=where)
    return url.strip()


def _addresses(host: str, port: int, where: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise BadInput(f"cannot resolve host {host!r}: {exc.strerror or exc}", where=where) from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def secret(settings: Settings) -> bytes:
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        raise ConfigurationError("webhooks need TIDYQ_WEBHOOK_SECRET (the HMAC key receivers verify "
                                 "Tidyq-Signature with) on this server and on the workers")
    return settings.webhook_secret.get_secret_value().encode()


def job_webhook_url(webhook_url: str | None, settings: Settings) -> str | None:
    """The submit-time webhook of a job: the given URL or the settings default, checked; None for none."""
    url = webhook_url or settings.webhook_url
    if not url:
        return None
    secret(settings)
    return check_url(url, settings, where="webhook_url" if webhook_url else "TIDYQ_WEBHOOK_URL")


def sign(key: bytes, body: bytes, timestamp: int) -> str:
    """The ``Tidyq-Signature`` header value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(key: bytes, header: str, body: bytes, *, tolerance: float = 300.0,
                     now: float | None = None) -> bool:
    """A receiver's check: a v1 signature matches and ``t`` is within ``tolerance`` seconds (replays)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(key, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def retry_delay(attempt: int, settings: Settings) -> float:
    """Seconds before attempt ``attempt + 1`` (attempt counts from 1): doubling, capped."""
    return min(settings.webhook_retry_max_delay_seconds, settings.webhook_retry_base_seconds * 2 ** (attempt - 1))


def progress_event(done: int, total: int, step: int) -> str | None:
    """``job.progress.<P>`` for the highest multiple P of ``step`` percent reached below 100, else None."""
    if step <= 0 or total <= 0:
        return None
    percent = (done * 100 // total) // step * step
    return f"job.progress.{percent}" if 0 < percent < 100 else None


# KEYS: job ; ARGV: field, value. Never recreates an expired job's hash (it would have no TTL).
_SET_IF_JOB = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end"


def record_state(redis_client, job_id: str, event: str, state: dict) -> None:
    """The delivery state of one event, shown in the job's status under ``webhooks``."""
    redis_client.eval(_SET_IF_JOB, 1, keys.job(job_id), STATE_FIELD_PREFIX + event,
                      json.dumps(state, separators=(",", ":")))


def schedule(store, spec: JobSpec, event: str, send: Send, settings: Settings) -> bool:
    """Claim ``event`` of the job once and send its first delivery task. False when the job has no
    webhook or another process already scheduled this event. ``store`` is a sync JobStore."""
    if not spec.webhook_url:
        return False
    event_id = f"{spec.id}.{event}"
    if not store.r.set(keys.webhook_event(event_id), "1", nx=True, ex=spec.ttl_seconds):
        return False
    status = store.status(spec.id).model_dump(mode="json", exclude={"webhooks"})
    body = json.dumps({**status, "event": event, "event_id": event_id}, ensure_ascii=False, separators=(",", ":"))
    record_state(store.r, spec.id, event, {"event_id": event_id, "state": "pending", "attempts": 0})
    send(DELIVER_TASK, [{"job_id": spec.id, "event": event, "event_id": event_id, "url": spec.webhook_url,
                         "body": body, "attempt": 1, "first_at": time.time()}], 0.0)
    return True


def after_change(store, spec: JobSpec, send: Send, settings: Settings) -> str | None:
    """Schedule what the job's current state calls for: its end event once it is terminal, else a
    progress event when TIDYQ_WEBHOOK_PROGRESS_PERCENT is set. Returns the event scheduled."""
    if not spec.webhook_url:
        return None
    status = store.status(spec.id)
    if status.status.terminal:
        event = f"job.{status.status.value}"
    else:
        done = status.counts.succeeded + status.counts.failed
        event = progress_event(done, status.counts.total, settings.webhook_progress_percent) or ""
    return event if event and schedule(store, spec, event, send, settings) else None
