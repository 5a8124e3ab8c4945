"""Run one chunk of a job's items and record one result per item.

Why chunks: a Celery round trip costs ~2.3 ms and a mock predict ~0.5-1.5 ms, so one task per item
would spend most of its time in the broker. Inside a chunk, items of I/O-bound backends run as
coroutines on DSPy's async path (workers/async_items.py: one event loop per process, an adaptive
cap per target), or with TIDYQ_ASYNC_ITEMS=false in a per-process thread pool, so one worker
process keeps many provider calls in flight; the CPU-bound mock runs them inline.

Rules: a per-item error becomes a failed result, never a failed chunk; results already stored
(a redelivered chunk) are skipped; the job's state is re-read every ``cancel_check_interval``
seconds and a cancelled job stops taking new items (finished ones are kept); items whose provider
asked for a long wait (RetryLater) are handed back to the caller to re-enqueue with a countdown.
"""

from __future__ import annotations

import queue
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import redis

from shared import tracking
from shared.budget import Admissions, tenant_budgets
from shared.config import Settings
from shared.dedupe import all_ids, with_copies
from shared.errors import AllTargetsOpen, RetryLater
from shared.jobs import ChunkPayload, Item, ItemResult, JobSpec, JobState
from shared.program_io import prediction_outputs
from shared.program_uri import is_import_path
from shared.programs import resolve_program
from shared.queues import queue_for
from shared.store import JobStore
from shared.telemetry import get_logger
from workers import async_items, metrics_publisher, runtime
from workers.budget_gate import BudgetGate
from workers.item_cache import ChunkCache
from workers.items import (
    check_item,
    error_message,
    is_pass_through,
    item_failed,
    item_succeeded,
    served_version,
)
from workers.requeue import ProviderStillFailing


@dataclass
class ChunkOutcome:
    gate: str  # 'run', or the job state that made the chunk skip ('cancelled', 'missing', ...)
    recorded: int = 0
    stopped: str | None = None  # the job state that stopped the chunk midway
    requeue: list[Item] = field(default_factory=list)
    requeue_delay: float = 0.0
    requeue_reason: str = ""
    waiting_for_backend: AllTargetsOpen | None = None  # every requeued item met AllTargetsOpen (the latest)
    backoff: bool = False  # some items' provider still failed after the in-place retries: back off
    succeeded: int = 0  # items of this run of the chunk, by outcome (Flower shows them)
    failed: int = 0
    error_types: dict[str, int] = field(default_factory=dict)

    def summary(self, payload: ChunkPayload) -> dict:
        """What the task returns (Flower's Result column): counts only, never an item's input or output."""
        out = {"job": payload.job.id, "chunk": payload.chunk, "items": len(payload.items), "succeeded": self.succeeded,
               "failed": self.failed, "recorded": self.recorded}
        if self.error_types:
            out["error_types"] = dict(sorted(self.error_types.items(), key=lambda kv: -kv[1]))
        if self.requeue:
            out["requeued"] = len(self.requeue)
        if self.gate != "run" or self.stopped:
            out["stopped"] = self.stopped or self.gate
        return out

    budget_wait: bool = False  # items wait for a --max-cost job's items in flight (workers/budget_gate.py)
    ended: bool = False  # the chunk ended with its last results (no chunk_end call left)


class StateWatch:
    """Re-reads the job state at most every ``interval`` seconds: cheap cancel detection."""

    def __init__(self, store: JobStore, job_id: str, interval: float):
        self.store, self.job_id, self.interval = store, job_id, interval
        self._next = time.monotonic() + interval
        self.state: str | None = None

    def stopped(self) -> bool:
        if self.state is not None:
            return True
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            st = self.store.state(self.job_id)
            if st is None or st not in (JobState.QUEUED, JobState.RUNNING):
                self.state = st.value if st is not None else "missing"
        return self.state is not None


class ResultBuffer:
    """Results are written in small batches (one Lua call each): per-item writes would cost a
    Redis round trip per item, yet readers still see progress every ``interval`` seconds."""

    def __init__(self, store: JobStore, job_id: str, max_items: int, interval: float,
                 cache: ChunkCache | None = None):
        self.store, self.job_id = store, job_id
        self.cache = cache or ChunkCache()  # the item cache's entries go with the results they came from
        self.max_items, self.interval = max(1, max_items), interval
        self.pending: list[tuple[ItemResult, dict | None]] = []
        self._last = time.monotonic()
        self.recorded = 0
        self.ended = False  # the chunk ended with its last results (flush(end=))

    def add(self, result: ItemResult, inputs: dict | None, *, last: bool = False) -> None:
        """``last``: the chunk's last item; its batch waits for the final flush, which ends the chunk too."""
        self.pending.append((result, inputs))
        self.cache.keep(result)
        if not last and (len(self.pending) >= self.max_items or time.monotonic() - self._last >= self.interval):
            self.flush()

    def flush(self, end: tuple[str, str] | None = None) -> None:
        """``end`` (chunk id, task id): the chunk is over, it ends in the same Redis call (``ended``)."""
        self._last = time.monotonic()
        if not self.pending and end is None:
            return
        batch, self.pending = self.pending, []
        counters = tracking.take(self.job_id)  # the items' LM numbers ride with their results: one call
        new = self.store.record_results(self.job_id, batch, counters=counters, end=end,
                                        cache_entries=self.cache.take(), cache_ttl=self.cache.ttl)
        self.recorded += max(0, new)
        self.ended = end is not None and new >= 0
        try:
            tracking.record_versions(counters, self.store.r)
        except redis.ResponseError as exc:  # a tracking number never fails an item (Redis being away does)
            get_logger(job_id=self.job_id).warning("job_tracking_failed", error=error_message(exc))


def run_item(spec: JobSpec, item: Item, max_item_bytes: int) -> ItemResult:
    """One item on the job's target chain: its own backend/model, then its fallbacks, all inside
    one engine (shared/fallback.py decides when to move on). Raises RetryLater (AllTargetsOpen
    when every target's breaker is open) and Celery's time-limit exceptions; every other failure
    becomes a failed result, naming the targets it skipped and why. (workers/async_items.py runs
    the same steps on DSPy's async path.)"""
    started = time.perf_counter()
    bad = check_item(spec, item, max_item_bytes)
    if bad is not None:
        return bad
    served = None  # the registered version this item runs (rollout split per item id)
    try:
        served = served_version(spec, item)
        module = runtime.get_module(spec.backend, spec.model, spec.signature, served.uri if served else spec.program,
                                    tuple(spec.fallback))
        prediction, call = module.predict_with_stats(**item.inputs)
        outputs = prediction_outputs(prediction)  # a field with no JSON form fails the item, named
    except RetryLater:
        raise
    except BaseException as exc:
        if is_pass_through(exc):
            raise
        return item_failed(spec, item, exc, started, served)
    return item_succeeded(spec, item, module, outputs, call, started, served)


def prebuild_programs(spec: JobSpec, items: list[Item]) -> None:
    """Build the chunk's program(s) in this thread before its items fan out to the thread pool.
    A user's module may call ``dspy.configure`` at import (DSPy's own adapter examples do), which
    DSPy allows only in the thread that configured it first: the pool process's main thread, which
    runs this task and where mlflow.dspy.autolog configured DSPy at worker start. A build error is
    kept by the runtime and reported by each item."""
    if not spec.program:
        return
    try:
        uris = ({spec.program} if is_import_path(spec.program)
                else {resolve_program(spec.program, it.custom_id).uri for it in items})
        for uri in sorted(uris):
            runtime.load_program(uri)
    except Exception:  # noqa: S110 - each item runs (and reports) the same build
        pass


class ChunkRunner:
    """Runs a chunk payload against the store. The Celery task around it re-enqueues what the
    outcome hands back and always calls ``store.chunk_end``."""

    def __init__(self, store: JobStore, settings: Settings):
        self.store = store
        self.settings = settings

    def run(self, payload: ChunkPayload, chunk_id: str, task_id: str | None = None) -> ChunkOutcome:
        """``task_id``: this copy of the chunk; when every item finished, the chunk ends (ledger and
        running set) with its last results (``outcome.ended``), else the task calls chunk_end."""
        spec = payload.job
        log = get_logger(job_id=spec.id, backend=spec.backend, chunk=chunk_id)
        # one round trip: the chunk starts and learns which items a redelivered copy already stored
        gate, done_ids = self.store.start_chunk(spec.id, chunk_id, [cid for it in payload.items for cid in all_ids(it)])
        if gate != "run":
            log.info("chunk_skipped", job_state=gate, items=len(payload.items))
            return ChunkOutcome(gate=gate)
        outcome = ChunkOutcome(gate="run")
        # the job's MLflow run exists (RUNNING) from its first chunk on, created off this thread
        tracking.start_job_soon(spec.id, self.store.r, self.settings)
        todo = [it for it in payload.items if not done_ids.issuperset(all_ids(it))]
        cache = ChunkCache.for_items(spec, todo, self.settings).read(self.store.r)  # one MGET (workers/item_cache.py)
        # a job with --max-cost writes every result at once and re-reads its state before every item,
        # so workers see the ceiling (summed by the record script) as soon as it is crossed
        budgeted = spec.max_cost_usd is not None or spec.tenant is not None
        buffer = ResultBuffer(self.store, spec.id, 1 if budgeted else self.settings.results_flush_items,
                              self.settings.results_flush_interval, cache)
        state = StateWatch(self.store, spec.id, 0.0 if budgeted else self.settings.cancel_check_interval)
        watch: StateWatch | BudgetGate = state
        if budgeted:
            watch = BudgetGate(state, Admissions(self.store.r, self.settings.task_time_limit), spec.id,
                               tenant=spec.tenant, tenants=tenant_budgets(self.store.r, self.settings))
        finished: set[str] = set()
        retry_later: list[tuple[Item, RetryLater]] = []
        started = time.perf_counter()

        def handle(item: Item, result: ItemResult | None, exc: BaseException | None) -> None:
            finished.add(item.custom_id)
            if isinstance(exc, RetryLater):
                retry_later.append((item, exc))
                return
            if exc is not None:  # a bug in our own code path: still a failed item, never a crash
                log.error("item_crashed", item=item.custom_id, error=error_message(exc), error_type=type(exc).__name__)
                result = ItemResult.failure(item.custom_id, type(exc).__name__, error_message(exc),
                                            backend=spec.backend, model=spec.model)
            assert result is not None  # the runner hands over a result or an exception
            if result.status == "failed":
                outcome.failed += 1
                error_type = result.error.type if result.error else "Unknown"
                outcome.error_types[error_type] = outcome.error_types.get(error_type, 0) + 1
                log.warning("item_failed", item=item.custom_id, error_type=error_type,
                            error=result.error.message if result.error else None)
            else:
                outcome.succeeded += 1
                log.debug("item_done", item=item.custom_id, latency_ms=result.latency_ms, cached=result.cached)
            stored = buffer.recorded
            for each in with_copies(item, result):  # an item folded with its twins: one result each
                buffer.add(each, item.inputs, last=not budgeted and len(finished) == len(todo))  # todo: hits too
                metrics_publisher.record_item(queue_for(spec.backend), each.backend or spec.backend, each.status,
                                              each.error.type if each.error else None)
            if isinstance(watch, BudgetGate):  # its result is stored (flushed at once for a budgeted job)
                watch.item_done(result.cost_usd if buffer.recorded > stored else None)

        try:
            to_run = cache.answer(todo, handle)  # hits are results now, before any DSPy work; the rest run
            if runtime.concurrency_for(spec.backend) <= 1 or len(to_run) <= 1:
                self._run_inline(spec, to_run, handle, watch)
            else:
                prebuild_programs(spec, to_run)
                self._run_threaded(spec, to_run, handle, watch)
        except BaseException as exc:
            if not is_pass_through(exc):
                raise
            # soft time limit / shutdown: keep what finished, hand the rest back to the queue
            unfinished = [it for it in todo if it.custom_id not in finished]
            outcome.requeue.extend(unfinished)
            outcome.requeue_reason = type(exc).__name__
            log.warning("chunk_interrupted", reason=type(exc).__name__, unfinished=len(unfinished))
        finally:
            over = task_id is not None and not retry_later and not outcome.requeue and len(finished) >= len(todo)
            buffer.flush(end=(chunk_id, task_id) if over and task_id else None)
            outcome.ended = buffer.ended
            if isinstance(watch, BudgetGate):
                watch.close()
        outcome.stopped = watch.state
        if isinstance(watch, BudgetGate) and watch.waiting and not watch.state and not outcome.requeue_reason:
            outcome.requeue.extend(it for it in todo if it.custom_id not in finished)
            outcome.budget_wait = True
        if retry_later and not watch.state:
            outcome.requeue.extend(item for item, _ in retry_later)
            outcome.requeue_delay = max(exc.delay for _, exc in retry_later)
            outcome.requeue_reason = outcome.requeue_reason or str(retry_later[0][1])
            outcome.backoff = any(isinstance(exc, ProviderStillFailing) for _, exc in retry_later)
            waits = [exc for _, exc in retry_later if isinstance(exc, AllTargetsOpen)]
            if waits and len(waits) == len(retry_later) and not outcome.requeue_reason.startswith(("Soft", "Term")):
                outcome.waiting_for_backend = max(waits, key=lambda e: e.retry_at)
        outcome.recorded = buffer.recorded
        log.info("chunk_done", items=len(payload.items), skipped_existing=len(done_ids), recorded=outcome.recorded,
                 item_cache_hits=len(cache.hits), requeued=len(outcome.requeue), stopped=outcome.stopped,
                 seconds=round(time.perf_counter() - started, 4))
        return outcome

    def give_up(self, spec: JobSpec, items: list[Item], reason: str, requeues: int) -> None:
        """Items that went back to the queue too often fail with the last reason."""
        results = [(each, it.inputs) for it in items for each in with_copies(it, ItemResult.failure(
            it.custom_id, "RetryLater", f"gave up after {requeues} requeues: {reason}", backend=spec.backend,
            model=spec.model))]
        self.store.record_results(spec.id, results)

    def _run_inline(self, spec, todo, handle, watch) -> None:
        limit = self.settings.max_item_bytes
        for item in todo:
            if watch.stopped():
                return
            try:
                handle(item, run_item(spec, item, limit), None)
            except BaseException as exc:
                if is_pass_through(exc):
                    raise
                handle(item, None, exc)

    def _run_threaded(self, spec, todo, handle, watch) -> None:
        max_bytes = self.settings.max_item_bytes
        if self.settings.async_items:  # coroutines on the process's event loop (workers/async_items.py)
            def submit(item: Item) -> Future:
                return async_items.submit(spec, item, max_bytes)

            limit = async_items.window(spec)
        else:
            executor = runtime.executor_for(spec.backend)
            threads = runtime.concurrency_for(spec.backend)

            def submit(item: Item) -> Future:
                return executor.submit(run_item, spec, item, max_bytes)

            def limit() -> int:
                return threads
        pending = iter(todo)
        inflight: dict[Future, Item] = {}
        # finished futures arrive here: one wake-up per batch of completions, not a wait() that
        # registers on every future in flight (hundreds on the async path) per completion
        finished: queue.SimpleQueue[Future] = queue.SimpleQueue()

        def fill() -> None:
            while len(inflight) < limit() and not watch.stopped():
                item = next(pending, None)
                if item is None:
                    return
                fut = submit(item)
                inflight[fut] = item
                fut.add_done_callback(finished.put)

        fill()
        try:
            while inflight:
                try:
                    done = [finished.get(timeout=self.settings.cancel_check_interval)]
                except queue.Empty:
                    done = []
                while not finished.empty():
                    done.append(finished.get_nowait())
                for fut in done:
                    item = inflight.pop(fut)
                    exc = fut.exception()
                    handle(item, None if exc else fut.result(), exc)
                fill()
        finally:
            for fut in inflight:
                fut.cancel()
