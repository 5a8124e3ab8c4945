"""Submit-time check of a job's target: can any live worker run it?

Credentials live in the workers' environment, so the producer cannot look at them; it reads what
each live worker reports in its heartbeat instead (queues served, backends its environment has
configured: the same test `tidyq doctor` shows). From that:

- workers serve the job's queue and every one has reported its backends, none of them with the
  job's backend: the job could only fail item by item (fallbacks do not help), so it is
  refused (BadInput, CLI exit 2) naming what to set on the workers;
- the producer cannot know (no live worker on the queue: one may start later or be scaled up from
  zero; a worker has not reported its backends yet): the job is accepted with a warning.

``TIDYQ_SUBMIT_CHECK``: ``refuse`` (default, as above), ``strict`` (also refuse when no live
worker serves the queue), ``warn`` (never refuse), ``off``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.config import Settings
from shared.errors import BadInput
from shared.jobs import Target

MODES = ("refuse", "strict", "warn", "off")


class SubmitWarning(UserWarning):
    """The job was accepted, but the producer could not confirm a worker can run it."""


def what_to_set(backend: str, model: str | None) -> str:
    """The settings a worker needs for ``backend`` (the hint of a refusal)."""
    from shared.backends.auto import is_bedrock_model, provider_key_env

    if backend == "direct":
        key = provider_key_env(model) if model and not is_bedrock_model(model) else None
        named = f"{key} (the provider key for {model!r}), " if key else ""
        return f"set {named}TIDYQ_API_KEY or TIDYQ_API_BASE in the environment of the workers"
    if backend == "bedrock":
        return ("give the workers AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role) "
                "and AWS_DEFAULT_REGION")
    if backend == "gateway":
        return "set TIDYQ_GATEWAY_URL (the MLflow AI Gateway) in the environment of the workers"
    return f"configure backend {backend!r} on the workers"


class LiveWorkers:
    """The live workers' heartbeats, read at most once per ``max_age`` seconds: a Client submitting
    predict after predict would otherwise pay three Redis round trips per job for a view that
    changes once per heartbeat interval (seconds)."""

    def __init__(self, redis_client, settings: Settings, max_age: float = 1.0):
        self.r, self.settings, self.max_age = redis_client, settings, max_age
        self._read_at = 0.0
        self._workers: list | None = None

    def __call__(self) -> list:
        now = time.monotonic()
        if self._workers is None or now - self._read_at >= self.max_age:
            from producers.ops_state import OpsReader

            self._workers = OpsReader(self.r, heartbeat_interval=self.settings.heartbeat_interval).workers()
            self._read_at = now
        return self._workers or []


def check_target(redis_client, queue: str, job: Target, settings: Settings,
                 workers: Callable[[], list] | None = None) -> list[str]:
    """Warnings for a job for target ``job`` sent to ``queue``; raises BadInput when, by the rules
    above, no live worker could run it. ``workers``: where the live workers are read (LiveWorkers)."""
    mode = (settings.submit_check or "refuse").strip().lower()
    if mode not in MODES:
        raise BadInput(f"unknown mode {settings.submit_check!r}; expected one of: {', '.join(MODES)}",
                       where="TIDYQ_SUBMIT_CHECK")
    if mode == "off":
        return []
    serving = [w for w in (workers or LiveWorkers(redis_client, settings))() if queue in w.queues]
    if not serving:
        message = (f"no live worker serves queue {queue} now; the job waits until one starts "
                   f"(`celery -A workers worker -Q {queue}`)")
        if mode == "strict":
            raise BadInput(message + " (TIDYQ_SUBMIT_CHECK=strict)", where="backend")
        return [message]
    if job.backend == "mock":  # offline: every worker can run it
        return []
    if any(w.backends is None for w in serving):  # a worker that has not told yet may have it
        return [] if any(job.backend in (w.backends or ()) for w in serving) else [
            f"could not confirm that a worker on {queue} has backend {job.backend!r} configured "
            "(a worker has not reported its backends yet)"]
    configured = {b for w in serving for b in w.backends or ()}
    if job.backend in configured:
        return []
    # a target that is not configured fails its items without falling back (shared/fallback.py), so
    # fallbacks do not make such a job runnable
    hosts = ", ".join(sorted(w.hostname for w in serving))
    message = (f"no live worker on {queue} has backend {job.backend!r} configured (workers: {hosts}; "
               f"their backends: {', '.join(sorted(configured)) or 'none'}); {what_to_set(job.backend, job.model)}")
    if mode == "warn":
        return [message]
    raise BadInput(message + " (or submit anyway with TIDYQ_SUBMIT_CHECK=warn)", where="backend")
