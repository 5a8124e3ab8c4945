"""The Celery application: JSON only, late acks, one queue per backend.

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

import importlib.util

from celery import Celery
from kombu import Queue

from shared.config import Settings, get_settings
from workers.routing import ALL_QUEUES, CHUNK_TASK, OPTIMIZE_QUEUE, OPTIMIZE_TASK, PREDICT_QUEUES

# Task modules other helpers may add; included only when present.
OPTIONAL_TASK_MODULES = ("workers.optimize", "workers.optimize_task", "workers.economy_task")


def broker_url(settings: Settings | None = None) -> str:
    s = settings or get_settings()
    return s.redis_url or s.default_redis_url


def visibility_timeout(settings: Settings) -> float:
    return settings.visibility_timeout or 20


def transport_options(settings: Settings) -> dict:
    """Redis ack emulation: short renewed leases, a frequent restore sweep, a short sweep mutex
    (kombu's 300 s default would stall every restore after a worker died holding it)."""
    vt = visibility_timeout(settings)
    return {"visibility_timeout": vt, "unacked_restore_interval": max(1.0, vt / 10),
            "unacked_restore_throttle": 1, "unacked_mutex_expire": max(5, int(vt / 2))}


def make_app(redis_url: str | None = None, *, settings: Settings | None = None, with_tasks: bool = True) -> Celery:
    """A configured Celery app. Producers build one without tasks (they only send by name)."""
    s = settings or get_settings()
    include = []
    if with_tasks:
        include = ["workers.tasks"] + [m for m in OPTIONAL_TASK_MODULES if importlib.util.find_spec(m)]
    app = Celery("tidyq", broker=redis_url or broker_url(s), include=include, set_as_current=False)
    app.conf.update(
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
        task_time_limit=s.task_time_limit,
        task_soft_time_limit=max(1, int(s.task_time_limit * 0.9)),
        broker_transport_options=transport_options(s),
        broker_connection_retry_on_startup=True,
        worker_soft_shutdown_timeout=s.worker_soft_shutdown_timeout,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    if with_tasks:
        from workers.leases import LeaseRenewal

        app.steps["consumer"].add(LeaseRenewal)
    return app
