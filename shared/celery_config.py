"""The Celery settings both sides share, and the producers' sending app.

A producer only sends tasks by name, so it needs the broker and the routing (JSON only, the
queues of shared/queues.py) but none of the worker's tasks, signals or consumer steps: building
``workers.app`` in a producer would start worker machinery in every client process.

Why these settings (Celery on Redis defaults are unsafe for long LLM chunks):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a chunk is acknowledged after it ran, so
  a worker killed mid-chunk gets its message redelivered (results are idempotent in the store).
- ``worker_prefetch_multiplier=1``: a busy worker does not hoard chunks other workers could run.
- ``visibility_timeout`` is a short lease (20 s) that live workers renew for every message they
  hold (workers/leases.py), swept every ``visibility_timeout / 10`` s: a dead worker's chunks come
  back within about ``visibility_timeout + sweep`` seconds, a running or delayed one never does.
- ``worker_soft_shutdown_timeout``: a warm shutdown lets running chunks finish briefly.
- No result backend: job state and results live in Redis through shared.store.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from shared.broker_transport import transport_for
from shared.config import Settings, get_settings
from shared.queues import ALL_QUEUES, CHUNK_TASK, OPTIMIZE_QUEUE, OPTIMIZE_TASK, PREDICT_QUEUES


def broker_url(settings: Settings | None = None) -> str:
    s = settings or get_settings()
    return s.redis_url or s.default_redis_url


def visibility_timeout(settings: Settings) -> float:
    return settings.visibility_timeout or 20


def transport_options(settings: Settings) -> dict[str, Any]:
    """Redis ack emulation: short renewed leases, a frequent restore sweep, a short sweep mutex
    (kombu's 300 s default would stall every restore after a worker died holding it)."""
    vt = visibility_timeout(settings)
    return {"visibility_timeout": vt, "unacked_restore_interval": max(1.0, vt / 10),
            "unacked_restore_throttle": 1, "unacked_mutex_expire": max(5, int(vt / 2))}


def app_config(settings: Settings) -> dict[str, Any]:
    """``app.conf`` of every tidyq Celery app, sending or working."""
    return dict(
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        result_accept_content=["json"],
        event_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(q, routing_key=q) for q in ALL_QUEUES],
        task_default_queue=PREDICT_QUEUES["mock"],
        task_create_missing_queues=False,
        task_routes={OPTIMIZE_TASK: {"queue": OPTIMIZE_QUEUE}, CHUNK_TASK: {"queue": PREDICT_QUEUES["mock"]}},
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=max(1, int(settings.task_time_limit * 0.9)),
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        # a Redis restarted under load can answer one command with an error reply (a ResponseError, a
        # kombu "channel error") before it is whole; Celery's default then shuts the worker down
        broker_channel_error_retry=True,
        worker_soft_shutdown_timeout=settings.worker_soft_shutdown_timeout,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )


def celery_app(redis_url: str | None = None, *, settings: Settings | None = None,
               include: list[str] | None = None) -> Celery:
    """A configured Celery app; without ``include`` it has no tasks (a producer's sender)."""
    s = settings or get_settings()
    url = redis_url or broker_url(s)
    app = Celery("tidyq", broker=url, include=include or [], set_as_current=False)
    app.conf.update(app_config(s), broker_transport=transport_for(url))  # shared/broker_transport.py
    return app
