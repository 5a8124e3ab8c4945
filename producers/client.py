"""The Python producer: submit predict and batch jobs, follow their status and results.

    from producers import Client
    c = Client()                                   # TIDYQ_REDIS_URL
    job = c.submit_batch(rows, signature="question -> answer", backend="mock")
    for row in job.results(timeout=60): ...        # result dicts as they arrive
    c.submit_predict("question -> answer", {"question": "2+2?"}, backend="mock").result(timeout=10)

Submitting checks everything first (signature, backend, every row), then writes the job and
sends its chunks; bad input raises BadInput and enqueues nothing.
"""

from __future__ import annotations

import json
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from producers import jsonl, submission
from producers.program_check import registered_program_notes
from producers.submission import JobFailed
from producers.target_check import LiveWorkers, SubmitWarning, check_target
from shared import webhooks
from shared.broker_transport import captured_publishes
from shared.budget import tenant_budgets
from shared.celery_config import celery_app
from shared.config import Settings, get_settings
from shared.dedupe import fold_duplicates, folds
from shared.errors import BadInput, TidyqError
from shared.jobs import Item, JobKind, JobSpec, JobState, Target
from shared.ledger import ChunkLedger, chunk_task_id
from shared.queues import CHUNK_TASK, queue_for
from shared.store import JobNotFound, JobStore, JobTimeout
from shared.task_labels import chunk_send_options

__all__ = ["Client", "Job", "JobFailed", "JobNotFound", "JobTimeout", "SubmitWarning"]


class Job:
    """A handle on a submitted job. ``existing`` is True when an idempotency key matched."""

    def __init__(self, client: Client, job_id: str, *, existing: bool = False, warnings: list[str] | None = None,
                 sub: Any = None):
        self.client, self.id, self.existing = client, job_id, existing
        self.warnings = list(warnings or [])  # what the submit-time target check could not confirm
        self._sub = sub  # subscribed before the send (submit_predict): the first wait needs no read
        # a handle nobody waits on does not keep a connection
        self._unsubscribe = weakref.finalize(self, client.store.release, sub, job_id) if sub is not None else None

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> dict:
        return self.client.store.status(self.id).model_dump(mode="json")

    def results(self, timeout: float | None = None, *, follow: bool = True) -> Iterator[dict]:
        """Result dicts in arrival order as they arrive; ends when the job ends (JobTimeout after
        ``timeout`` seconds)."""
        sub, self._sub = self._sub, None
        if self._unsubscribe is not None:
            self._unsubscribe.detach()  # iter_results releases it now
        return self.client.store.iter_results(self.id, timeout=timeout, follow=follow, sub=sub)

    def result(self, timeout: float | None = None) -> dict:
        """The outputs of a single-item job; JobFailed if its item failed or it was cancelled."""
        rows = list(self.results(timeout=timeout))
        return submission.predict_outputs(self.id, rows, None if rows and rows[0]["status"] == "succeeded"
                                          else self.client.store.state(self.id))

    def wait(self, timeout: float | None = None, poll: float = 0.1) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status()
            if JobState(st["status"]).terminal:
                return st
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} did not finish within {timeout}s")
            time.sleep(poll)

    def cancel(self) -> str:
        """Stop pending chunks; finished results are kept. Returns 'cancelling' or 'cancelled'
        (or the terminal state the job had already reached)."""
        state = self.client.store.cancel(self.id)
        if state.terminal:  # ended here, not on a worker: its webhook event is scheduled from here
            self.client.job_ended(self.id)
        return state.value

    def retry(self, **kwargs: Any) -> Job | None:
        return self.client.retry(self.id, **kwargs)


class Client:
    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 on_warning: Callable[[str], None] | None = None):
        """``on_warning(message)`` receives the submit-time target check's warnings (default:
        ``warnings.warn`` with SubmitWarning); they are also on ``Job.warnings``."""
        self.settings = settings or get_settings()
        self.on_warning = on_warning or _warn
        self.redis_url = redis_url or self.settings.redis_url or self.settings.default_redis_url
        self.store = JobStore.from_url(self.redis_url)
        self.ledger = ChunkLedger(self.store.r)
        self._app = None
        self._workers = LiveWorkers(self.store.r, self.settings)

    @property
    def app(self):
        """A task-less Celery app on the same broker, built on first send (tasks go by name)."""
        if self._app is None:
            self._app = celery_app(self.redis_url, settings=self.settings)
        return self._app

    def job_ended(self, job_id: str) -> None:
        """Schedule the job's end webhook (once per event id) when the job ended outside a worker."""
        spec = self.store.spec(job_id)

        def send(name: str, args: list, countdown: float) -> None:
            self.app.send_task(name, args=args, queue=queue_for(spec.backend), countdown=countdown)

        webhooks.after_change(self.store, spec, send, self.settings)

    def job(self, job_id: str) -> Job:
        if self.store.state(job_id) is None:
            raise JobNotFound(job_id)
        return Job(self, job_id)

    # --- submitting --------------------------------------------------------------------------
    def submit_optimize(self, *, name: str, trainset: Any, signature: str | None = None, program: str | None = None,
                        **options: Any) -> Job:
        """An optimize job (queue ``optimize``): see producers.optimize_client.submit_optimize."""
        from producers.optimize_client import submit_optimize

        job_id, notes = submit_optimize(self, name=name, trainset=trainset, signature=signature, program=program,
                                        **options)
        return Job(self, job_id, warnings=notes)

    def submit_predict(self, signature: str | None, inputs: dict[str, Any], *, backend: str | None = None,
                       model: str | None = None, program: str | None = None,
                       fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                       deadline_seconds: float | None = None, webhook_url: str | None = None,
                       item_cache: bool = True) -> Job:
        """``item_cache=False``: neither answered from nor written to the item-level result cache."""
        target = self._target(signature, program, backend, model, fallbacks, webhook_url)
        target["deadline_seconds"] = _deadline_seconds(deadline_seconds)
        target["item_cache"] = submission.item_cache_flag(item_cache)
        item = submission.predict_item(target, inputs, self.settings)
        return self._submit(JobKind.PREDICT, target, lambda: iter([item]), 1, idempotency_key, chunk_size=1,
                            subscribe=True)

    def submit_batch(self, rows: Iterable[dict | Item], signature: str | None = None, *, backend: str | None = None,
                     model: str | None = None, program: str | None = None,
                     fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                     chunk_size: int | None = None, deadline_seconds: float | None = None,
                     webhook_url: str | None = None, max_cost_usd: float | None = None, mode: str = "live",
                     tenant: str | None = None, item_cache: bool = True) -> Job:
        """Rows are ``{"custom_id", "inputs"}`` dicts (held in memory here; use submit_file for
        files of any size). ``deadline_seconds``: how long items may wait for a backend when every
        target's circuit breaker is open (default TIDYQ_BACKEND_WAIT_DEADLINE_SECONDS). ``max_cost_usd``:
        the job ends as budget_exceeded once its results cost this much (default TIDYQ_MAX_COST_USD).
        ``item_cache=False``: every item runs, none answered from (or written to) the item-level result cache."""
        target = self._target(signature, program, backend, model, fallbacks, webhook_url)
        target["deadline_seconds"] = _deadline_seconds(deadline_seconds)
        target["item_cache"] = submission.item_cache_flag(item_cache)
        target["max_cost_usd"] = self._max_cost(max_cost_usd)
        target["mode"] = self._mode(mode, target)
        target["tenant"] = self._tenant(tenant)
        if idempotency_key and (existing := self._existing(idempotency_key)):
            return existing
        items = submission.batch_items(rows, target, self.settings)
        return self._submit(JobKind.BATCH, target, lambda: iter(items), len(items), idempotency_key,
                            chunk_size=chunk_size)

    def submit_file(self, path: str | Path, signature: str | None = None, *, backend: str | None = None,
                    model: str | None = None, program: str | None = None,
                    fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                    chunk_size: int | None = None, deadline_seconds: float | None = None,
                    webhook_url: str | None = None, max_cost_usd: float | None = None, mode: str = "live",
                    tenant: str | None = None, item_cache: bool = True) -> Job:
        """A JSONL file of any size: checked in one streaming pass, enqueued in a second."""
        target = self._target(signature, program, backend, model, fallbacks, webhook_url)
        target["deadline_seconds"] = _deadline_seconds(deadline_seconds)
        target["item_cache"] = submission.item_cache_flag(item_cache)
        target["max_cost_usd"] = self._max_cost(max_cost_usd)
        target["mode"] = self._mode(mode, target)
        target["tenant"] = self._tenant(tenant)
        if idempotency_key and (existing := self._existing(idempotency_key)):
            return existing
        total = jsonl.FileCheck(path, input_fields=target["input_fields"], signature=signature,
                                max_items=self.settings.max_items_per_job,
                                max_item_bytes=self.settings.max_item_bytes).run()
        return self._submit(JobKind.BATCH, target, lambda: jsonl.iter_items(path), total, idempotency_key,
                            chunk_size=chunk_size)

    def retry(self, job_id: str, *, idempotency_key: str | None = None) -> Job | None:
        """A new job with only the failed items of ``job_id`` (same program and targets), linked
        both ways (retry_of / retried_by). None when nothing failed."""
        old = self.store.spec(job_id)
        state = self.store.state(job_id)
        if state is not None and not state.terminal:
            raise BadInput(f"job {job_id} is still {state.value}; retry it after it ends", where="job")
        total = self.store.failed_count(job_id)
        if total == 0:
            return None
        job = self._submit(JobKind.BATCH if old.kind is not JobKind.PREDICT else JobKind.PREDICT,
                           submission.retry_target(old),
                           lambda: self.store.iter_failed_items(job_id), total, idempotency_key,
                           chunk_size=old.chunk_size, retry_of=job_id)
        if not job.existing:
            self.store.link_retry(job_id, job.id)
        return job

    def resolve_target(self, signature: str | None, program: str | None, backend: str | None,
                       model: str | None) -> dict:
        """What a submit would run (signature or program, concrete backend); BadInput otherwise."""
        return self._target(signature, program, backend, model, None)

    # --- internals ---------------------------------------------------------------------------
    def _target(self, signature, program, backend, model, fallback, webhook_url=None) -> dict:
        return submission.build_target(self.settings, signature, program, backend, model, fallback, webhook_url)

    def resolve_backend(self, backend: str | None, model: str | None) -> str:
        return submission.resolve_backend(self.settings, backend, model)

    def _check_size(self, item: Item, where: str) -> None:
        submission.check_size(item, where, self.settings)

    @staticmethod
    def _mode(mode: str, target: dict) -> str:
        """'live' or 'economy' (provider batch APIs: an OpenAI-compatible endpoint on the direct backend)."""
        if mode not in ("live", "economy"):
            raise BadInput(f"unknown mode {mode!r}; expected live or economy", where="mode")
        if mode == "economy":
            if target["backend"] not in ("direct", "bedrock") or not target["model"]:
                raise BadInput("economy mode needs --backend direct or bedrock and a --model: bedrock goes to "
                               "Bedrock batch inference, anthropic/... models to Anthropic Message Batches, others "
                               "to an OpenAI-compatible Files + Batches API (TIDYQ_API_BASE)", where="mode")
            if not folds(target["program"]):
                raise BadInput("economy mode needs a signature or a pinned program version (models:/NAME/N): "
                               "a rollout splits items between versions", where="program")
        return mode

    def _tenant(self, tenant: str | None) -> str | None:
        """A tenant whose daily budget is spent gets no new job (TidyqError: the CLI exits 1)."""
        if tenant is None:
            return None
        if not isinstance(tenant, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", tenant):
            raise BadInput(f"bad tenant {tenant!r}: 1-64 letters, digits, '_', '.', '-'", where="tenant")
        budgets = tenant_budgets(self.store.r, self.settings)
        if budgets.over(tenant):
            raise TidyqError(f"tenant {tenant!r} has spent ${budgets.spent(tenant):.6f} of its daily budget "
                             f"${budgets.budget(tenant):.6f} (UTC day); nothing was enqueued")
        return tenant

    def _max_cost(self, value: float | None) -> float | None:
        value = self.settings.max_cost_usd if value is None else value
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise BadInput(f"max cost must be a positive number of USD, got {value!r}", where="max_cost_usd")
        return float(value)

    def _check_count(self, total: int, where: str) -> None:
        submission.check_count(total, where, self.settings)

    def _existing(self, idempotency_key: str) -> Job | None:
        other = self.store.r.get(submission.idempotency_key_name(idempotency_key))
        if other is not None:
            job_id = other.decode() if isinstance(other, bytes) else str(other)
            if self.store.state(job_id) is not None:
                return Job(self, job_id, existing=True)
        return None

    def _submit(self, kind: JobKind, target: dict, items: Callable[[], Iterator[Item]], total: int,
                idempotency_key: str | None, *, chunk_size: int | None = None, retry_of: str | None = None,
                subscribe: bool = False) -> Job:
        """``subscribe``: the returned Job holds a subscription to the job's wake-ups made before the send
        (a single predict then learns its result from the message, with no read)."""
        spec = submission.new_spec(kind, target, total, self.settings, idempotency_key, chunk_size=chunk_size,
                                   retry_of=retry_of)
        notes = self.check_target(spec)
        if kind is JobKind.BATCH and folds(spec.program):  # identical rows are sent once (shared/dedupe.py)
            items, _ = fold_duplicates(items)
        queue = queue_for(spec.backend)
        payloads = submission.chunk_payloads(spec, items())
        first, publish = None, None
        if not idempotency_key:  # its ledger entry and its message ride with the job's creation (one round trip)
            first, publish = self._first_chunk(spec, payloads, queue)
        sub = self.store.subscribe(spec.id) if subscribe and publish else None  # before the send
        try:
            self.store.create_job(spec, first_chunk=first[:4] if first else None, publish=publish or ())
        except BaseException:
            if sub is not None:
                self.store.release(sub, spec.id)
            raise
        if idempotency_key:
            ttl = submission.idempotency_ttl(spec, self.settings)
            other = self.store.claim_idempotency(idempotency_key, spec.id, ttl)
            if other is not None:
                self.store.delete_job(spec.id)
                return Job(self, other, existing=True)
        if subscribe and sub is None:
            sub = self.store.subscribe(spec.id)
        try:
            self._enqueue(spec, payloads, queue, None if publish else first)
        except BaseException as exc:
            if sub is not None:
                self.store.release(sub, spec.id)
            self.store.fail_job(spec.id, f"enqueue interrupted: {type(exc).__name__}: {exc}")
            raise
        return Job(self, spec.id, warnings=notes, sub=sub)

    def check_target(self, spec: JobSpec, queue: str | None = None) -> list[str]:
        """Refuse (BadInput) a job no live worker of its queue could run, or whose registered program
        does not exist, before anything is written;
        the warnings of what this producer cannot know go to ``on_warning`` and are returned."""
        notes = check_target(self.store.r, queue or queue_for(spec.backend),
                             Target(backend=spec.backend, model=spec.model), self.settings, self._workers)
        notes += registered_program_notes(spec.program, self.settings)
        for note in notes:
            self.on_warning(note)
        return notes

    def _enqueue(self, spec: JobSpec, payloads: Iterator[dict], queue: str, first: tuple | None = None) -> int:
        """Send the chunk messages, each first written to the ledger (``first``: the one create_job
        already wrote, from :func:`_ledger_entry`)."""
        sent = 0
        with self.app.producer_or_acquire() as producer:
            if first is not None:
                sent += self._send(first[4], first[1], queue, producer)
            for payload in payloads:
                task_id = chunk_task_id(spec.id, payload["chunk"])  # the ledger keeps it until the chunk ends
                self.ledger.sent(spec.id, payload["chunk"], task_id, queue, json.dumps(payload), spec.ttl_seconds)
                sent += self._send(payload, task_id, queue, producer)
        return sent

    def _first_chunk(self, spec: JobSpec, payloads: Iterator[dict], queue: str) -> tuple[tuple | None, list | None]:
        """The first chunk's ledger entry and its message as broker commands (None, None: no chunk)."""
        head = next(payloads, None)
        first = _ledger_entry(spec, head, queue) if head is not None else None
        return first, self._captured_send(first, queue) if first is not None else None

    def _captured_send(self, first: tuple, queue: str) -> list | None:
        """The first chunk's message as broker commands for create_job's transaction: Celery's own
        send, its final LPUSH kept (shared/broker_transport.py). None: send it after the job, as usual."""
        with self.app.producer_or_acquire() as producer, captured_publishes(producer) as commands:
            if commands is not None:
                self._send(first[4], first[1], queue, producer)
        return commands or None

    def _send(self, payload: dict, task_id: str, queue: str, producer) -> int:
        self.app.send_task(CHUNK_TASK, args=[payload], queue=queue, producer=producer, task_id=task_id,
                           **chunk_send_options(CHUNK_TASK, payload))
        return len(payload["items"])


def _ledger_entry(spec: JobSpec, payload: dict, queue: str) -> tuple[int, str, str, str, dict]:
    """(chunk, task id, queue, payload JSON, payload) of a chunk about to be sent."""
    return payload["chunk"], chunk_task_id(spec.id, payload["chunk"]), queue, json.dumps(payload), payload


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, SubmitWarning, stacklevel=4)


_deadline_seconds = submission.deadline_seconds
