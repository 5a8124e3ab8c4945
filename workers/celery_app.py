"""The workers' Celery application: the shared settings (shared/celery_config.py) plus the
task modules and the consumer steps that only a worker needs: lease renewal (workers/leases.py)
and the ledger sweeper (workers/sweeper.py), which re-sends a chunk the broker lost (a kill
between BRPOP and the unacked bookkeeping), one worker at a time across the fleet."""

from __future__ import annotations

import importlib.util

from celery import Celery

from shared.celery_config import broker_url, celery_app, transport_options, visibility_timeout
from shared.config import Settings
from workers.leases import LeaseRenewal
from workers.sweeper import LedgerSweeper

__all__ = ["broker_url", "make_app", "transport_options", "visibility_timeout"]

# Task modules other helpers may add; included only when present.
OPTIONAL_TASK_MODULES = ("workers.optimize", "workers.optimize_task", "workers.economy_task")


def make_app(redis_url: str | None = None, *, settings: Settings | None = None, with_tasks: bool = True) -> Celery:
    """The worker app (``with_tasks=False``: the same app without tasks, as a producer sends)."""
    include = []
    if with_tasks:
        include = ["workers.tasks"] + [m for m in OPTIONAL_TASK_MODULES if importlib.util.find_spec(m)]
    app = celery_app(redis_url, settings=settings, include=include)
    if with_tasks:
        app.steps["consumer"].add(LeaseRenewal)
        app.steps["consumer"].add(LedgerSweeper)
    return app
