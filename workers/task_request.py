"""The worker-side request of tidyq's tasks: its inspect replies never carry the task's arguments.

Celery answers ``inspect reserved`` and ``inspect scheduled`` (Flower's worker page, `celery
inspect`) with ``Request.info()``, which holds the raw arguments unless asked for ``safe``: a
chunk's items, an optimize job's trainset. Our tasks always answer with the argsrepr/kwargsrepr the
sender set (shared/task_labels.py), the same summary Flower's task list shows.
"""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request


class ArgsReprRequest(Request):
    """A Celery Request whose ``info()`` is always the safe one."""

    def info(self, safe: bool = False) -> dict[str, Any]:
        return super().info(safe=True)
