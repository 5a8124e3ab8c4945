"""The Celery task that runs a chunk, plus poison-message handling and requeue with countdown.

The task never raises: a malformed message becomes failed items (when its job can be found) or a
logged, acknowledged drop; a bug inside the runner fails the chunk's remaining items. A worker
therefore never crash-loops on one bad message.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery.exceptions import Reject
from pydantic import ValidationError

from shared import tracking
from shared.config import get_settings
from shared.dedupe import with_copies
from shared.jobs import ChunkPayload, Item, ItemResult, JobSpec
from shared.store import JobStore
from shared.telemetry import get_logger, redact
from workers import app
from workers.celery_app import broker_url
from shared.fallback import job_deadline, requeue_delay
from workers.chunk import ChunkRunner, error_message
from workers.economy_task import submit_chunk
from workers.routing import CHUNK_TASK, queue_for

_stores: dict[int, JobStore] = {}


def job_store() -> JobStore:
    """One store per process (its Redis pool must not cross a fork)."""
    pid = os.getpid()
    store = _stores.get(pid)
    if store is None:
        store = _stores[pid] = JobStore.from_url(broker_url())
    return store


def _poison(payload: Any, exc: ValidationError) -> dict:
    """Record every recognisable item of a malformed chunk as failed; drop the rest with a log."""
    log = get_logger()
    summary = redact("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]))
    job = payload.get("job") if isinstance(payload, dict) else None
    job_id = job.get("id") if isinstance(job, dict) else None
    items = payload.get("items") if isinstance(payload, dict) else None
    store = job_store()
    if not isinstance(job_id, str) or store.state(job_id) is None or not isinstance(items, list):
        log.error("poison_message_dropped", job_id=job_id if isinstance(job_id, str) else None, error=summary)
        return {"poison": True, "recorded": 0}
    results = []
    for raw in items:
        cid = raw.get("custom_id") if isinstance(raw, dict) else None
        if isinstance(cid, (str, int)) and not isinstance(cid, bool):
            results.append((ItemResult.failure(str(cid), "BadInput", f"malformed chunk message: {summary}"), None))
    recorded = store.record_results(job_id, results) if results else 0
    log.error("poison_message", job_id=job_id, error=summary, recorded=recorded)
    return {"poison": True, "recorded": recorded}


def _requeue(task, chunk: ChunkPayload, items: list[Item], delay: float, *, counted: bool = True) -> None:
    s = get_settings()
    cap = s.max_requeue_delay  # a held countdown message keeps its lease (workers/leases.py)
    body = ChunkPayload(job=chunk.job, chunk=chunk.chunk, items=items,
                        requeues=chunk.requeues + (1 if counted else 0))
    task.apply_async(args=[body.model_dump(mode="json")], queue=queue_for(chunk.job.backend),
                     countdown=max(0.0, min(delay, cap)))


@app.task(name=CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_chunk(self, payload: Any) -> dict:
    try:
        chunk = ChunkPayload.model_validate(payload)
    except ValidationError as exc:
        return _poison(payload, exc)
    settings = get_settings()
    store = job_store()
    if chunk.job.mode == "economy":  # through the provider's batch API, followed by countdown polls
        return submit_chunk(chunk, store)
    runner = ChunkRunner(store, settings)
    chunk_id = str(chunk.chunk)
    spec: JobSpec = chunk.job
    log = get_logger(job_id=spec.id, backend=spec.backend, chunk=chunk_id)
    outcome = None
    try:
        outcome = runner.run(chunk, chunk_id)
        wait = outcome.waiting_for_backend
        if outcome.requeue and wait is not None:  # every breaker open: wait for one, bounded by the deadline
            deadline = job_deadline(spec.deadline, spec.created_at, settings)
            delay = requeue_delay(wait, deadline=deadline)
            if delay is None:
                runner.give_up(spec, outcome.requeue, f"job deadline passed while {wait}", chunk.requeues)
            else:
                store.mark_waiting_for_backend(spec.id, wait.retry_at, [s["target"] for s in wait.skipped])
                _requeue(self, chunk, outcome.requeue, delay, counted=False)
                log.info("chunk_waiting_for_backend", items=len(outcome.requeue), countdown=round(delay, 3),
                         targets=[s["target"] for s in wait.skipped])
        elif outcome.requeue and outcome.budget_wait:  # --max-cost: wait for the items in flight to settle
            _requeue(self, chunk, outcome.requeue, settings.budget_wait_seconds, counted=False)
            log.info("chunk_waiting_for_budget", items=len(outcome.requeue))
        elif outcome.requeue:
            if chunk.requeues >= settings.max_requeues:
                runner.give_up(spec, outcome.requeue, outcome.requeue_reason, chunk.requeues)
            else:
                _requeue(self, chunk, outcome.requeue, outcome.requeue_delay)
                log.info("chunk_requeued", items=len(outcome.requeue), countdown=round(outcome.requeue_delay, 3),
                         requeues=chunk.requeues + 1, reason=outcome.requeue_reason)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis stayed away longer than the client's retries: nothing is lost by running the chunk
        # again (results are idempotent), so hand the message back instead of failing its items.
        log.error("chunk_redis_unavailable", error=error_message(exc))
        raise Reject(exc, requeue=True) from None
    except Exception as exc:  # our own bug: fail what is left of the chunk, keep the worker alive
        log.exception("chunk_crashed", error=error_message(exc))
        results = [(each, it.inputs) for it in chunk.items for each in with_copies(it, ItemResult.failure(
            it.custom_id, "InternalError", error_message(exc), backend=spec.backend, model=spec.model))]
        try:
            store.record_results(spec.id, results)
        except Exception:
            pass
    finally:
        if outcome is None or outcome.gate == "run":
            try:
                store.chunk_end(spec.id, chunk_id)
            except Exception as exc:
                log.error("chunk_end_failed", error=error_message(exc))
            try:  # this chunk's numbers to Redis; the job's one MLflow run once it has ended
                tracking.finish_job(spec.id)
            except Exception as exc:
                log.warning("job_tracking_failed", error=error_message(exc))
    return {"recorded": outcome.recorded if outcome else 0}
