"""Queue and task names, and which queue a job goes to: the names producers and workers share.

They live in shared/ so a producer sends a task by name without importing workers.* (whose
package builds the worker's Celery app and its signals). No Celery, no DSPy here.

One queue per backend, so a worker pool is sized and credentialed per provider
(`celery -A workers worker -Q predict.bedrock`), plus one for optimize jobs.
"""

from __future__ import annotations

from shared.config import BackendType

PREDICT_QUEUES = {b.value: f"predict.{b.value}" for b in BackendType if b is not BackendType.AUTO}
OPTIMIZE_QUEUE = "optimize"
ALL_QUEUES = (*PREDICT_QUEUES.values(), OPTIMIZE_QUEUE)

CHUNK_TASK = "tidyq.predict.chunk"
OPTIMIZE_TASK = "tidyq.optimize"
ECONOMY_POLL_TASK = "tidyq.economy.poll"  # follows one provider batch (workers/economy_task.py)


def queue_for(backend: str | BackendType) -> str:
    """The predict queue of a concrete backend ('auto' is resolved before routing)."""
    b = BackendType.parse(backend)
    if b is BackendType.AUTO:
        raise ValueError("resolve backend 'auto' before routing a job")
    return PREDICT_QUEUES[b.value]
