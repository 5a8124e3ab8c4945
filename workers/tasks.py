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
from shared.errors import ChunkItemsFailed
from shared.jobs import ChunkPayload, Item, ItemResult, JobSpec
from shared.store import JobStore
from shared.task_labels import chunk_send_options
from shared.telemetry import get_logger, redact
from workers import app
from workers.celery_app import broker_url
from shared.fallback import job_deadline, requeue_delay
from workers.chunk import ChunkOutcome, ChunkRunner, error_message
from workers.routing import CHUNK_TASK, queue_for
from workers.task_request import ArgsReprRequest

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
        lost = len(items) if isinstance(items, list) else 0
        return {"poison": True, "job": job_id if isinstance(job_id, str) else None, "items": lost, "succeeded": 0,
                "failed": lost, "recorded": 0, **({"error_types": {"BadInput": lost}} if lost else {})}
    results = []
    for raw in items:
        cid = raw.get("custom_id") if isinstance(raw, dict) else None
        if isinstance(cid, (str, int)) and not isinstance(cid, bool):
            results.append((ItemResult.failure(str(cid), "BadInput", f"malformed chunk message: {summary}"), None))
    recorded = store.record_results(job_id, results) if results else 0
    log.error("poison_message", job_id=job_id, error=summary, recorded=recorded)
    return {"poison": True, "job": job_id, "items": len(items), "succeeded": 0, "failed": len(results),
            "recorded": recorded, **({"error_types": {"BadInput": len(results)}} if results else {})}


def _requeue(task, chunk: ChunkPayload, items: list[Item], delay: float, *, counted: bool = True) -> None:
    s = get_settings()
    cap = s.max_requeue_delay  # a held countdown message keeps its lease (workers/leases.py)
    body = ChunkPayload(job=chunk.job, chunk=chunk.chunk, items=items,
                        requeues=chunk.requeues + (1 if counted else 0)).model_dump(mode="json")
    task.apply_async(args=[body], queue=queue_for(chunk.job.backend), countdown=max(0.0, min(delay, cap)),
                     **chunk_send_options(CHUNK_TASK, body))


def _give_up(runner: ChunkRunner, outcome: ChunkOutcome, spec: JobSpec, reason: str, requeues: int) -> None:
    """The outcome's requeued items fail for good; the chunk's counts say so."""
    runner.give_up(spec, outcome.requeue, reason, requeues)
    outcome.failed += len(outcome.requeue)
    outcome.error_types["RetryLater"] = outcome.error_types.get("RetryLater", 0) + len(outcome.requeue)
    outcome.requeue = []


@app.task(name=CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
          throws=(ChunkItemsFailed,), Request=ArgsReprRequest)
def run_chunk(self, payload: Any) -> dict:
    """Returns the chunk's counts (Flower's Result column); a chunk with failed items raises
    ChunkItemsFailed after everything is stored, so Flower lists it as FAILURE and counts it."""
    summary = _run_chunk(self, payload)
    if summary.get("failed"):
        raise ChunkItemsFailed(summary)
    return summary


def _run_chunk(self, payload: Any) -> dict:
    try:
        chunk = ChunkPayload.model_validate(payload)
    except ValidationError as exc:
        return _poison(payload, exc)
    settings = get_settings()
    store = job_store()
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
                _give_up(runner, outcome, spec, f"job deadline passed while {wait}", chunk.requeues)
            else:
                store.mark_waiting_for_backend(spec.id, wait.retry_at, [s["target"] for s in wait.skipped])
                _requeue(self, chunk, outcome.requeue, delay, counted=False)
                log.info("chunk_waiting_for_backend", items=len(outcome.requeue), countdown=round(delay, 3),
                         targets=[s["target"] for s in wait.skipped])
        elif outcome.requeue:
            if chunk.requeues >= settings.max_requeues:
                _give_up(runner, outcome, spec, outcome.requeue_reason, chunk.requeues)
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
        results = [(ItemResult.failure(it.custom_id, "InternalError", error_message(exc), backend=spec.backend,
                                       model=spec.model), it.inputs) for it in chunk.items]
        try:
            store.record_results(spec.id, results)
        except Exception:
            pass
    finally:
        ran = outcome is None or outcome.gate == "run"
        if ran:
            try:
                store.chunk_end(spec.id, chunk_id)
            except Exception as exc:
                log.error("chunk_end_failed", error=error_message(exc))
        # this chunk's numbers to Redis; the job's MLflow run ended once the job has. A chunk skipped
        # because the job already ended (cancelled between chunks) ends the run too: nobody else would.
        if ran or (outcome is not None and outcome.gate in ("cancelled", "failed", "completed")):
            try:
                tracking.finish_job(spec.id)
            except Exception as exc:
                log.warning("job_tracking_failed", error=error_message(exc))
    if outcome is None:  # crashed: every item of the chunk was recorded as failed
        return {"job": spec.id, "chunk": chunk.chunk, "items": len(chunk.items), "succeeded": 0,
                "failed": len(chunk.items), "error_types": {"InternalError": len(chunk.items)}}
    return outcome.summary(chunk)
