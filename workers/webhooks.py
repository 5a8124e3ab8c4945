"""Webhook delivery: one Celery task per attempt, retried through the queue with a countdown.

Why a task per attempt: a receiver that is down must never hold a worker slot, so a failed attempt
sends the next one with a countdown (doubling from TIDYQ_WEBHOOK_RETRY_BASE_SECONDS, capped at
TIDYQ_WEBHOOK_RETRY_MAX_DELAY_SECONDS) until TIDYQ_WEBHOOK_RETRY_WINDOW_SECONDS (24 h) after the
event. Countdowns longer than TIDYQ_MAX_REQUEUE_DELAY are split into hops (``not_before``), as chunk
requeues are, so a held message stays short. Each attempt re-checks the URL after DNS (a host that
now resolves to a private address is refused) and records its outcome in the job's status.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from shared import webhooks
from shared.config import get_settings
from shared.errors import BadInput, ConfigurationError
from shared.jobs import JobSpec
from shared.queues import queue_for
from shared.store import JobStore
from shared.telemetry import get_logger
from workers import app
from workers.celery_app import broker_url


def after_chunk(store: JobStore, spec: JobSpec) -> str | None:
    """Called when a chunk of ``spec`` stopped: schedules the job's end (or progress) event once."""
    if not spec.webhook_url:
        return None

    def send(name: str, args: list, countdown: float) -> None:
        app.send_task(name, args=args, queue=queue_for(spec.backend), countdown=countdown)

    return webhooks.after_change(store, spec, send, get_settings())


def _attempt(url: str, body: bytes, event: dict, key: bytes, timeout: float) -> tuple[bool, str]:
    """One POST; (delivered, what happened). Redirects are not followed (they could point anywhere)."""
    headers = {"Content-Type": "application/json", "User-Agent": "tidyq-webhooks/1",
               webhooks.SIGNATURE_HEADER: webhooks.sign(key, body, int(time.time())),
               webhooks.EVENT_ID_HEADER: event["event_id"], webhooks.EVENT_HEADER: event["event"]}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return 200 <= response.status_code < 300, f"HTTP {response.status_code}"


@app.task(name=webhooks.DELIVER_TASK, bind=True, acks_late=True, ignore_result=True)
def deliver(self, event: dict[str, Any]) -> dict:
    settings = get_settings()
    store = JobStore.from_url(broker_url(settings))  # the process's cached pool (shared.redisconn)
    log = get_logger(job_id=event.get("job_id"), webhook_event=event.get("event_id"))
    queue = (self.request.delivery_info or {}).get("routing_key") or "predict.mock"
    wait = event.get("not_before", 0) - time.time()
    if wait > 0:  # a long backoff is made of short hops
        self.apply_async(args=[event], queue=queue, countdown=min(wait, settings.max_requeue_delay))
        return {"state": "deferred"}
    attempt = int(event["attempt"])
    state: dict[str, Any] = {"event_id": event["event_id"], "attempts": attempt}
    try:
        url = webhooks.check_url(event["url"], settings)
        key = webhooks.secret(settings)
    except (BadInput, ConfigurationError) as exc:  # refused for good: retrying would not change it
        state.update(state="refused", last_error=str(exc))
        webhooks.record_state(store.r, event["job_id"], event["event"], state)
        log.warning("webhook_refused", error=str(exc))
        return state
    delivered, outcome = _attempt(url, event["body"].encode(), event, key, settings.webhook_timeout_seconds)
    state["last_response"] = outcome
    if delivered:
        state.update(state="delivered", delivered_at=time.time())
    else:
        delay = webhooks.retry_delay(attempt, settings)
        if time.time() + delay - event["first_at"] > settings.webhook_retry_window_seconds:
            state.update(state="failed")
        else:
            state.update(state="retrying", next_attempt_at=time.time() + delay)
            self.apply_async(args=[{**event, "attempt": attempt + 1, "not_before": time.time() + delay}],
                             queue=queue, countdown=min(delay, settings.max_requeue_delay))
    webhooks.record_state(store.r, event["job_id"], event["event"], state)
    log.info("webhook_attempt", attempt=attempt, outcome=outcome, state=state["state"])
    return state
