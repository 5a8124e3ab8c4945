"""Economy mode on the worker: a chunk becomes provider batches, followed without holding a slot.

``submit_chunk`` (called by the chunk task for an economy job) renders the chunk's items through the
program's adapter, reserves the batch's estimated cost against --max-cost, submits one provider
batch per provider limit and schedules ``poll_batch``. ``poll_batch`` re-enqueues itself with a
growing countdown while the provider works (a worker slot is never held waiting), cancels the
provider batch when the job is cancelled, and at the end records every answer parsed back through
the same adapter at the batch price; items the provider failed, left when its batch expired, or
answered unparseably or invalidly are finished live and say so.

Requeue-safe: the chunk's batch claim (HSETNX on the job hash) means a redelivered chunk never
submits twice, and results are written with HSETNX, so a repeated poll records nothing twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from shared import keys, tracking
from shared.budget import Reservations, tenant_budgets
from shared.config import Settings, get_settings
from shared.cost import estimated_tokens, prices_for
from shared.dedupe import all_ids, with_copies
from shared.economy.cached import cached_answer
from shared.economy.openai_batch import BatchState, ProviderBatchError, split
from shared.economy.providers import batch_custom_id, batch_provider
from shared.economy.requests import NotBatchable, Unanswered, parse_answer, render, single_stage
from shared.errors import RetryLater
from shared.jobs import ChunkPayload, Item, ItemResult, JobSpec, JobState
from shared.ledger import ChunkLedger, chunk_task_id
from shared.metrics import registry as metrics_registry
from shared.program_io import prediction_outputs
from shared.prompts import StagePrompt
from shared.queues import CHUNK_TASK, ECONOMY_POLL_TASK, queue_for
from shared.steps.stats import CallStats
from shared.store import PROVIDER_BATCH_FIELD, JobStore
from shared.task_labels import chunk_send_options
from shared.telemetry import get_logger
from workers import app, metrics_publisher, runtime
from workers.celery_app import broker_url
from workers.chunk import error_message, is_pass_through, run_item
from workers.item_cache import ChunkCache, answer_stored

STOPPING = frozenset({JobState.CANCELLING, JobState.CANCELLED})


def _store() -> JobStore:
    return JobStore.from_url(broker_url())


def _provider(spec: JobSpec, module: Any, settings: Settings) -> Any:
    return batch_provider(spec.backend, module.wrapper.config.model or module.wrapper.model, module.wrapper.config,
                          settings)


def _chunk_id(chunk: ChunkPayload) -> str:
    return f"economy-{chunk.chunk}"


def _send_live(spec: JobSpec, chunk: int, items: list[Item]) -> None:
    """Items that cannot go (or come back) through the batch API run as a normal live chunk."""
    if items:
        live = spec.model_copy(update={"mode": "live"})
        body = ChunkPayload(job=live, chunk=chunk, items=items).model_dump(mode="json")
        queue, task_id = queue_for(spec.backend), chunk_task_id(spec.id, chunk)
        ChunkLedger(_store().r).sent(spec.id, chunk, task_id, queue, json.dumps(body), spec.ttl_seconds)
        app.send_task(CHUNK_TASK, args=[body], queue=queue, task_id=task_id, **chunk_send_options(CHUNK_TASK, body))


def _note_batch(store: JobStore, job_id: str, state: dict) -> None:
    store.r.hset(keys.job(job_id), PROVIDER_BATCH_FIELD + state["id"], json.dumps(state))


def submit_chunk(chunk: ChunkPayload, store: JobStore | None = None) -> dict:
    store = store or _store()
    settings = get_settings()
    spec = chunk.job
    log = get_logger(job_id=spec.id, backend=spec.backend, chunk=chunk.chunk, mode="economy")
    chunk_id = _chunk_id(chunk)
    gate = store.chunk_start(spec.id, chunk_id)
    if gate != "run":
        return {"gate": gate}
    if not store.r.hsetnx(keys.job(spec.id), f"economy_chunk:{chunk.chunk}", repr(time.time())):
        log.info("economy_chunk_already_submitted")  # a redelivery: its poll task follows the batch
        return {"gate": "submitted"}
    done = store.existing_results(spec.id, [cid for it in chunk.items for cid in all_ids(it)])
    todo = [it for it in chunk.items if not done.issuperset(all_ids(it))]
    todo = answer_stored(store, spec, todo, settings)  # the item cache first: no rendering, no batch line
    module = runtime.get_module(spec.backend, spec.model, spec.signature, spec.program)
    try:
        stage = single_stage(module.module)
        provider = _provider(spec, module, settings)
    except NotBatchable as exc:
        store.r.hset(keys.job(spec.id), "economy_note", str(exc))
        log.warning("economy_not_batchable", reason=str(exc))
        _send_live(spec, chunk.chunk, todo)
        store.chunk_end(spec.id, chunk_id)
        return {"live": len(todo)}
    lm_kwargs = dict(module.wrapper.lm.kwargs)
    todo = _answer_from_cache(store, spec, module, stage, todo)
    prompts, estimate = [], 0.0
    prices = prices_for(spec.backend, module.wrapper.model)
    answer = " ".join(["word"] * settings.estimate_output_tokens)
    for item in todo:
        prompt = StagePrompt("self", render(stage, item.inputs), stage.signature, stage.adapter)
        prompts.append((item, prompt))
        if spec.max_cost_usd is not None and prices is not None:
            tokens_in, tokens_out = estimated_tokens(module.wrapper.model, prompt.messages,
                                                     prompt.completion_text(answer))
            estimate += prices.cost(tokens_in, tokens_out, batch=True)
    # requests are named by their place in the chunk (batch_custom_id); a poll task gets its group's first place
    lines = [provider.line(batch_custom_id(i), p.messages, module.wrapper.model, lm_kwargs)
             for i, (_, p) in enumerate(prompts)]
    limit = min(settings.economy_batch_max_requests, provider.max_requests)
    submitted, base = 0, 0
    for group in split(lines, max_requests=limit, max_bytes=provider.max_bytes):
        items = [it for it, _ in prompts[base:base + len(group)]]
        first, base = base, base + len(group)
        share = estimate * len(group) / max(1, len(prompts))
        if spec.max_cost_usd is not None and not Reservations(store.r).reserve(spec.id, share):
            log.warning("economy_budget_refused", estimate_usd=round(share, 6), max_cost_usd=spec.max_cost_usd)
            break
        try:
            state = provider.submit(group, {"tidyq_job": spec.id, "tidyq_chunk": str(chunk.chunk)})
        except ProviderBatchError as exc:
            log.warning("economy_submit_failed", error=error_message(exc), items=len(items))
            Reservations(store.r).release(spec.id, share)
            _send_live(spec, chunk.chunk, items)
            continue
        submitted += 1
        store.r.hincrby(keys.job(spec.id), f"economy_open:{chunk.chunk}", 1)  # before its poll can end it
        _note_batch(store, spec.id, {"id": state.id, "provider": provider.name, "status": state.status,
                                     "chunk": chunk.chunk, "items": len(items), "submitted_at": time.time()})
        follow = {"chunk": ChunkPayload(job=spec, chunk=chunk.chunk, items=items).model_dump(mode="json"),
                  "batch_id": state.id, "first": first, "polls": 0, "reserved": share}
        app.send_task(ECONOMY_POLL_TASK, args=[follow], queue=queue_for(spec.backend),
                      countdown=settings.economy_poll_seconds)
        log.info("economy_batch_submitted", batch_id=state.id, items=len(items), estimate_usd=round(share, 6))
    if submitted == 0:
        store.chunk_end(spec.id, chunk_id)
    return {"batches": submitted}


def _answer_from_cache(store: JobStore, spec: JobSpec, module: Any, stage: Any, items: list[Item]) -> list[Item]:
    """Store the results the shared response cache already holds; return the items still to send."""
    hits: list[tuple[ItemResult, dict]] = []
    rest: list[Item] = []
    for item in items:
        answer = cached_answer(module, item.inputs)
        try:
            outputs = parse_answer(answer, stage, module.wrapper.config.validation, None)[0]
        except Unanswered:
            rest.append(item)
            continue
        result = ItemResult(custom_id=item.custom_id, status="succeeded", outputs=prediction_outputs(outputs),
                            backend=spec.backend, model=module.wrapper.model, cached=True, cost_usd=0.0,
                            economy={"from_cache": True})
        hits.extend((each, item.inputs) for each in with_copies(item, result))
    store.record_results(spec.id, hits)
    return rest


def _end_once(store: JobStore, spec: JobSpec, chunk: ChunkPayload, batch_id: str, reserved: float) -> None:
    """A batch is over: its reservation is released and, with the last batch of its chunk, the chunk
    ends; once only, even when the poll that gets here is delivered twice."""
    if not store.r.hsetnx(keys.job(spec.id), f"economy_done:{batch_id}", "1"):
        return
    Reservations(store.r).release(spec.id, reserved)
    if store.r.hincrby(keys.job(spec.id), f"economy_open:{chunk.chunk}", -1) <= 0:
        store.chunk_end(spec.id, _chunk_id(chunk))


def _finish_live(spec: JobSpec, chunk: ChunkPayload, items: list[tuple[Item, str]], batch_id: str,
                 settings: Settings) -> list[tuple[ItemResult, dict]]:
    """Run the unanswered items live, each result saying why; a long provider wait re-queues them."""
    live = spec.model_copy(update={"mode": "live"})
    later: list[Item] = []

    def one(pair: tuple[Item, str]) -> ItemResult | None:
        item, why = pair
        try:
            result = run_item(live, item, settings.max_item_bytes)
        except RetryLater:
            later.append(item)
            return None
        result.economy = {"batch_id": batch_id, "finished_live": why}
        return result

    pool = runtime.executor_for(spec.backend)
    results = list(pool.map(one, items)) if len(items) > 1 else [one(p) for p in items]
    _send_live(spec, chunk.chunk, later)
    return [(each, item.inputs) for (item, _), r in zip(items, results, strict=True) if r is not None
            for each in with_copies(item, r)]


@app.task(name=ECONOMY_POLL_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def poll_batch(self, payload: Any) -> dict:
    log = get_logger(mode="economy")
    try:
        chunk = ChunkPayload.model_validate(payload["chunk"])
        batch_id, polls, reserved = str(payload["batch_id"]), int(payload["polls"]), float(payload["reserved"])
        first = int(payload.get("first", 0))
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        log.error("economy_poll_malformed", error=error_message(exc))
        return {"poison": True}
    settings = get_settings()
    store = _store()
    spec = chunk.job
    log = log.bind(job_id=spec.id, batch_id=batch_id)
    module = runtime.get_module(spec.backend, spec.model, spec.signature, spec.program)
    provider = _provider(spec, module, settings)
    state_now = store.state(spec.id)
    note = {"id": batch_id, "provider": provider.name, "chunk": chunk.chunk, "items": len(chunk.items)}
    if state_now is None or state_now in STOPPING:
        try:
            state = provider.cancel(batch_id)
            _note_batch(store, spec.id, note | {"status": state.status})
            log.info("economy_batch_cancelled", provider_status=state.status)
        except ProviderBatchError as exc:  # e.g. it ended meanwhile: the job is stopping either way
            log.warning("economy_cancel_failed", error=error_message(exc))
        _end_once(store, spec, chunk, batch_id, reserved)
        return {"cancelled": True}
    try:
        state = provider.retrieve(batch_id)
    except ProviderBatchError as exc:  # transient: the next poll tries again; otherwise its items go live
        log.warning("economy_poll_failed", error=error_message(exc), retryable=exc.retryable)
        state = None if exc.retryable else BatchState(batch_id, "failed", None, None, {})
    if state is None or state.running:
        if state is not None:
            _note_batch(store, spec.id, note | {"status": state.status, "counts": state.counts})
        delay = min(settings.economy_poll_max_seconds, settings.economy_poll_seconds * 1.5 ** (polls + 1))
        self.apply_async(args=[payload | {"polls": polls + 1}], queue=queue_for(spec.backend), countdown=delay)
        return {"polls": polls + 1}
    _note_batch(store, spec.id, note | {"status": state.status, "counts": state.counts})
    try:
        lines = provider.results(state)
    except ProviderBatchError as exc:
        log.warning("economy_results_unreadable", error=error_message(exc))
        lines = {}
    stage = single_stage(module.module)
    prices = prices_for(spec.backend, module.wrapper.model)
    validation = module.wrapper.config.validation
    answered: list[tuple[ItemResult, dict]] = []
    unanswered: list[tuple[Item, str]] = []
    for index, item in enumerate(chunk.items, start=first):
        try:
            outputs, cost, tokens = parse_answer(lines.get(batch_custom_id(index)), stage, validation, prices)
        except Unanswered as exc:
            why = str(exc) if state.status == "completed" else f"provider batch {state.status}: {exc}"
            unanswered.append((item, why))
            continue
        result = ItemResult(custom_id=item.custom_id, status="succeeded", outputs=prediction_outputs(outputs),
                            backend=spec.backend, model=module.wrapper.model, attempts=1,
                            cost_usd=None if cost is None else round(cost, 12), economy={"batch_id": batch_id})
        answered.extend((each, item.inputs) for each in with_copies(item, result))
        tracking.record_item(spec.id, result, CallStats(calls=1, attempts=1, cost_usd=result.cost_usd,
                                                        input_tokens=tokens["input_tokens"],
                                                        output_tokens=tokens["output_tokens"]))
        # the same numbers to Prometheus (tidyq_cost_usd_total, token and item counters) as a live call's
        metrics_registry.record_call(spec.backend, module.wrapper.model, latency_ms=0.0, cached=False, attempts=1,
                                     retries=0, cost_usd=result.cost_usd, error=None, **tokens)
        metrics_publisher.record_item(queue_for(spec.backend), spec.backend, "succeeded")
    cache = ChunkCache.for_items(spec, chunk.items, settings)  # the answers go to the item cache too
    for result, _ in answered:
        cache.keep(result)
    new = store.record_results(spec.id, answered, cache_entries=cache.take(), cache_ttl=cache.ttl)
    spent = sum(r.cost_usd or 0.0 for r, _ in answered)
    if spec.tenant and new > 0 and spent:  # a repeated poll stores nothing new and charges nothing
        tenant_budgets(store.r, settings).charge(spec.tenant, spec.id, spent)
    # a redelivered poll must not pay again for items a previous delivery already finished live
    done = store.existing_results(spec.id, [cid for item, _ in unanswered for cid in all_ids(item)])
    unanswered = [(item, why) for item, why in unanswered if not done.issuperset(all_ids(item))]
    try:
        if unanswered and store.state(spec.id) not in STOPPING:
            store.record_results(spec.id, _finish_live(spec, chunk, unanswered, batch_id, settings))
    except BaseException as exc:
        if is_pass_through(exc):
            raise
        log.exception("economy_finish_live_crashed", error=error_message(exc))
    finally:
        _end_once(store, spec, chunk, batch_id, reserved)
        tracking.finish_job(spec.id)
    log.info("economy_batch_done", provider_status=state.status, answered=len(answered), live=len(unanswered))
    return {"answered": len(answered), "live": len(unanswered)}
