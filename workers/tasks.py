"""The Celery task that runs a chunk, plus poison-message handling and requeue with countdown.

The task never raises: a malformed message becomes failed items (when its job can be found) or a
logged, acknowledged drop; a bug inside the runner fails the chunk's remaining items. A worker
therefore never crash-loops on one bad message.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery.exceptions import Reject
from pydantic import ValidationError

from shared import tracking
from shared.config import get_settings
from shared.dedupe import with_copies
from shared.errors import ChunkItemsFailed
from shared.jobs import ChunkPayload, ItemResult, JobSpec
from shared.ledger import ChunkLedger, chunk_task_id
from shared.queues import CHUNK_TASK, queue_for
from shared.store import JobStore
from shared.task_labels import chunk_send_options
from shared.telemetry import get_logger, redact
from workers import (
    app,
    webhooks,  # also registers the webhook delivery task
)
from workers.celery_app import broker_url
from workers.chunk import ChunkOutcome, ChunkRunner, error_message
from workers.economy_task import submit_chunk
from workers.requeue import GiveUp, Requeue, decide
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


def _requeue(task, chunk: ChunkPayload, decision: Requeue) -> None:
    """Send the items back as the chunk's new live copy (a held countdown message keeps its lease,
    workers/leases.py; the ledger now names the new copy)."""
    body = ChunkPayload(job=chunk.job, chunk=chunk.chunk, items=decision.items,
                        requeues=chunk.requeues + (1 if decision.counted else 0)).model_dump(mode="json")
    queue, task_id = queue_for(chunk.job.backend), chunk_task_id(chunk.job.id, chunk.chunk)
    ChunkLedger(job_store().r).sent(chunk.job.id, chunk.chunk, task_id, queue, json.dumps(body), chunk.job.ttl_seconds)
    task.apply_async(args=[body], queue=queue, countdown=decision.delay, task_id=task_id,
                     **chunk_send_options(CHUNK_TASK, body))


def _give_up(runner: ChunkRunner, outcome: ChunkOutcome, spec: JobSpec, decision: GiveUp, requeues: int) -> None:
    """The decision's items fail for good; the chunk's counts say so."""
    runner.give_up(spec, decision.items, decision.reason, requeues)
    outcome.failed += len(decision.items)
    outcome.error_types["RetryLater"] = outcome.error_types.get("RetryLater", 0) + len(decision.items)
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
    if chunk.job.mode == "economy":  # through the provider's batch API, followed by countdown polls
        summary = submit_chunk(chunk, store)  # a re-sent copy is a no-op: the chunk's submit is claimed once
        ChunkLedger(store.r).done(chunk.job.id, str(chunk.chunk), self.request.id)  # its polls follow it now
        return summary
    runner = ChunkRunner(store, settings)
    chunk_id = str(chunk.chunk)
    spec: JobSpec = chunk.job
    log = get_logger(job_id=spec.id, backend=spec.backend, chunk=chunk_id)
    outcome = None
    rejected = False  # handed back to the broker as it is: the same copy stays live in the ledger
    try:
        outcome = runner.run(chunk, chunk_id, self.request.id)
        decision = decide(outcome, chunk, settings)
        if isinstance(decision, GiveUp):
            _give_up(runner, outcome, spec, decision, chunk.requeues)
        elif isinstance(decision, Requeue):
            if decision.waiting is not None:  # every breaker open: wait for one, bounded by the deadline
                skipped = [s["target"] for s in decision.waiting.skipped]
                store.mark_waiting_for_backend(spec.id, decision.waiting.retry_at, skipped)
            _requeue(self, chunk, decision)
            event = "chunk_waiting_for_backend" if decision.waiting is not None else "chunk_requeued"
            log.info(event, items=len(decision.items), countdown=round(decision.delay, 3),
                     requeues=chunk.requeues + int(decision.counted), reason=decision.reason[:300])
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis stayed away longer than the client's retries: nothing is lost by running the chunk
        # again (results are idempotent), so hand the message back instead of failing its items.
        log.error("chunk_redis_unavailable", error=error_message(exc))
        rejected = True
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
        # a rejected copy stays live in the ledger; any other leaves it (in chunk_end's round trip when it ran)
        ended_copy = None if rejected else self.request.id
        ran = outcome is None or outcome.gate == "run"
        ended = outcome is not None and outcome.ended  # with its last results (ChunkRunner.run)
        if ran and not ended:
            try:
                store.chunk_end(spec.id, chunk_id, ended_copy)
            except Exception as exc:  # the sweeper's scan then finds nothing and re-sends a no-op
                log.error("chunk_end_failed", error=error_message(exc))
        elif not ran and ended_copy:
            try:
                ChunkLedger(store.r).done(spec.id, chunk_id, ended_copy)
            except Exception as exc:  # the sweeper's scan then finds nothing and re-sends a no-op
                log.warning("ledger_done_failed", error=error_message(exc))
        # this chunk's numbers to Redis; the job's MLflow run ended once the job has. A chunk skipped
        # because the job already ended (cancelled between chunks) ends the run too: nobody else would.
        if ran or (outcome is not None and outcome.gate in ("cancelled", "failed", "completed")):
            try:
                tracking.finish_job(spec.id, kind=spec.kind.value)
            except Exception as exc:
                log.warning("job_tracking_failed", error=error_message(exc))
            try:  # the job's end (or progress) webhook, scheduled once per event
                webhooks.after_chunk(store, spec)
            except Exception as exc:
                log.warning("webhook_schedule_failed", error=error_message(exc))
    if outcome is None:  # crashed: every item of the chunk was recorded as failed
        return {"job": spec.id, "chunk": chunk.chunk, "items": len(chunk.items), "succeeded": 0,
                "failed": len(chunk.items), "error_types": {"InternalError": len(chunk.items)}}
    return outcome.summary(chunk)
