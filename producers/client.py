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

import re
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from shared.budget import tenant_budgets
from shared.config import BackendType, Settings, UnifiedConfig, get_settings
from shared.dedupe import fold_duplicates, folds
from shared.errors import BadInput, ConfigurationError, TidyqError
from shared.jobs import Item, JobKind, JobSpec, JobState, Target, new_job_id, parse_backend, signature_fields
from shared.store import JobNotFound, JobStore, JobTimeout
from producers import jsonl
from workers.routing import CHUNK_TASK, queue_for

__all__ = ["Client", "Job", "JobFailed", "JobNotFound", "JobTimeout"]


class JobFailed(TidyqError):
    """A predict job's item failed; ``error`` is the result's {"type", "message"}."""

    def __init__(self, job_id: str, error: dict | None, status: str):
        self.job_id, self.error, self.status = job_id, error or {}, status
        detail = f"{self.error.get('type')}: {self.error.get('message')}" if error else status
        super().__init__(f"job {job_id} {status}: {detail}")


class Job:
    """A handle on a submitted job. ``existing`` is True when an idempotency key matched."""

    def __init__(self, client: "Client", job_id: str, *, existing: bool = False):
        self.client, self.id, self.existing = client, job_id, existing

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> dict:
        return self.client.store.status(self.id).model_dump(mode="json")

    def results(self, timeout: float | None = None, *, follow: bool = True) -> Iterator[dict]:
        """Result dicts in arrival order as they arrive; ends when the job ends (JobTimeout after
        ``timeout`` seconds)."""
        return self.client.store.iter_results(self.id, timeout=timeout, follow=follow)

    def result(self, timeout: float | None = None) -> dict:
        """The outputs of a single-item job; JobFailed if its item failed or it was cancelled."""
        rows = list(self.results(timeout=timeout))
        if rows and rows[0]["status"] == "succeeded":
            return rows[0]["outputs"]
        st = self.client.store.status(self.id)
        raise JobFailed(self.id, rows[0]["error"] if rows else None, st.status.value)

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
        return self.client.store.cancel(self.id).value

    def retry(self, **kwargs: Any) -> "Job | None":
        return self.client.retry(self.id, **kwargs)


class Client:
    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.redis_url = redis_url or self.settings.redis_url or self.settings.default_redis_url
        self.store = JobStore.from_url(self.redis_url)
        self._app = None

    @property
    def app(self):
        """A task-less Celery app on the same broker, built on first send."""
        if self._app is None:
            from workers.celery_app import make_app

            self._app = make_app(self.redis_url, settings=self.settings, with_tasks=False)
        return self._app

    def job(self, job_id: str) -> Job:
        if self.store.state(job_id) is None:
            raise JobNotFound(job_id)
        return Job(self, job_id)

    # --- submitting --------------------------------------------------------------------------
    def submit_optimize(self, *, name: str, trainset: Any, signature: str | None = None, program: str | None = None,
                        **options: Any) -> Job:
        """An optimize job (queue ``optimize``): see producers.optimize_client.submit_optimize."""
        from producers.optimize_client import submit_optimize

        return submit_optimize(self, name=name, trainset=trainset, signature=signature, program=program, **options)

    def submit_predict(self, signature: str | None, inputs: dict[str, Any], *, backend: str | None = None,
                       model: str | None = None, program: str | None = None,
                       fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                       deadline_seconds: float | None = None) -> Job:
        target = self._target(signature, program, backend, model, fallbacks)
        target["deadline_seconds"] = _deadline_seconds(deadline_seconds)
        if not isinstance(inputs, dict):
            raise BadInput("inputs must be a dict of input field -> value", where="inputs")
        item = jsonl.item_from_row({"custom_id": "1", "inputs": inputs}, where="inputs", line_no=None,
                                   input_fields=target["input_fields"], signature=signature)
        self._check_size(item, "inputs")
        return self._submit(JobKind.PREDICT, target, lambda: iter([item]), 1, idempotency_key, chunk_size=1)

    def submit_batch(self, rows: Iterable[dict | Item], signature: str | None = None, *, backend: str | None = None,
                     model: str | None = None, program: str | None = None,
                     fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                     chunk_size: int | None = None, deadline_seconds: float | None = None,
                     max_cost_usd: float | None = None, mode: str = "live",
                     tenant: str | None = None) -> Job:
        """Rows are ``{"custom_id", "inputs"}`` dicts (held in memory here; use submit_file for
        files of any size). ``deadline_seconds``: how long items may wait for a backend when every
        target's circuit breaker is open (default TIDYQ_BACKEND_WAIT_DEADLINE_SECONDS). ``max_cost_usd``:
        the job ends as budget_exceeded once its results cost this much (default TIDYQ_MAX_COST_USD)."""
        target = self._target(signature, program, backend, model, fallbacks)
        target["deadline_seconds"] = _deadline_seconds(deadline_seconds)
        target["max_cost_usd"] = self._max_cost(max_cost_usd)
        target["mode"] = self._mode(mode, target)
        target["tenant"] = self._tenant(tenant)
        if idempotency_key and (existing := self._existing(idempotency_key)):
            return existing
        items: list[Item] = []
        seen: dict[str, int] = {}
        for index, row in enumerate(rows, start=1):
            where = f"rows[{index - 1}]"
            if isinstance(row, Item):
                row = row.model_dump()
            if not isinstance(row, dict):
                raise BadInput(f"expected a dict like {{'custom_id': ..., 'inputs': {{...}}}}, got {type(row).__name__}",
                               where=where)
            item = jsonl.item_from_row(row, where=where, line_no=index, input_fields=target["input_fields"],
                                       signature=signature)
            if item.custom_id in seen:
                raise BadInput(f"duplicate custom_id {item.custom_id!r} (first in rows[{seen[item.custom_id]}])",
                               where=f"{where}: field 'custom_id'")
            seen[item.custom_id] = index - 1
            self._check_size(item, where)
            items.append(item)
        self._check_count(len(items), "rows")
        return self._submit(JobKind.BATCH, target, lambda: iter(items), len(items), idempotency_key,
                            chunk_size=chunk_size)

    def submit_file(self, path: str | Path, signature: str | None = None, *, backend: str | None = None,
                    model: str | None = None, program: str | None = None,
                    fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                    chunk_size: int | None = None, deadline_seconds: float | None = None,
                    max_cost_usd: float | None = None, mode: str = "live",
                     tenant: str | None = None) -> Job:
        """A JSONL file of any size: checked in one streaming pass, enqueued in a second."""
        target = self._target(signature, program, backend, model, fallbacks)
        target["deadline_seconds"] = _deadline_seconds(deadline_seconds)
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
        target = {"signature": old.signature, "program": old.program, "backend": old.backend, "model": old.model,
                  "fallback": old.fallback, "input_fields": None}
        job = self._submit(JobKind.BATCH if old.kind is not JobKind.PREDICT else JobKind.PREDICT, target,
                           lambda: self.store.iter_failed_items(job_id), total, idempotency_key,
                           chunk_size=old.chunk_size, retry_of=job_id)
        if not job.existing:
            self.store.link_retry(job_id, job.id)
        return job

    def check_target(self, signature: str | None, program: str | None, backend: str | None,
                     model: str | None) -> dict:
        """What a submit would run (signature or program, concrete backend); BadInput otherwise."""
        return self._target(signature, program, backend, model, None)

    # --- internals ---------------------------------------------------------------------------
    def _target(self, signature, program, backend, model, fallback) -> dict:
        if signature and program:
            raise BadInput("give a signature or a program, not both", where="signature")
        if not signature and not program:
            raise BadInput("a signature (e.g. 'question -> answer') or a program URI is required", where="signature")
        input_fields = signature_fields(signature)[0] if signature else None
        backend = self.resolve_backend(backend, model)
        fallbacks = []
        for f in fallback or ():
            try:
                fallbacks.append(f if isinstance(f, Target) else Target.parse(f))
            except BadInput as exc:
                raise BadInput(str(exc).split(": ", 1)[-1], where=f"fallback {f!r}") from None
            except ValueError as exc:
                raise BadInput(f"expected BACKEND[:MODEL] ({exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc})",
                               where=f"fallback {f!r}") from None
        return {"signature": signature, "program": program, "backend": backend, "model": model or None,
                "fallback": fallbacks, "input_fields": input_fields}

    def resolve_backend(self, backend: str | None, model: str | None) -> str:
        """'auto' (the default) is resolved here, from this environment, so the job can be routed."""
        name = parse_backend(backend or self.settings.backend)
        if name != BackendType.AUTO.value:
            return name
        from shared.backends.auto import choose_backend

        try:
            return choose_backend(UnifiedConfig(backend="auto", model=model).resolved(self.settings)).value
        except ConfigurationError as exc:
            raise BadInput(f"{exc} (or pass --backend mock|direct|bedrock|gateway)", where="backend") from None

    def _check_size(self, item: Item, where: str) -> None:
        """The per-item limit the file reader and the worker apply, also for rows given in code."""
        import json

        size = len(json.dumps(item.model_dump(mode="json"), ensure_ascii=False).encode())
        if size > self.settings.max_item_bytes:
            raise BadInput(f"item is {size} bytes; the limit is {self.settings.max_item_bytes} (TIDYQ_MAX_ITEM_BYTES)",
                           where=where)

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
        if total == 0:
            raise BadInput("no items", where=where)
        if total > self.settings.max_items_per_job:
            raise BadInput(f"{total} items; the limit is {self.settings.max_items_per_job} (TIDYQ_MAX_ITEMS_PER_JOB)",
                           where=where)

    def _existing(self, idempotency_key: str) -> Job | None:
        from shared import keys
        import hashlib

        other = self.store.r.get(keys.idempotency(hashlib.sha256(idempotency_key.encode()).hexdigest()))
        if other is not None:
            job_id = other.decode()
            if self.store.state(job_id) is not None:
                return Job(self, job_id, existing=True)
        return None

    def _submit(self, kind: JobKind, target: dict, items: Callable[[], Iterator[Item]], total: int,
                idempotency_key: str | None, *, chunk_size: int | None = None, retry_of: str | None = None) -> Job:
        size = chunk_size or (self.settings.economy_chunk_size if target.get("mode") == "economy" else
                              self.settings.chunk_size if target["backend"] == "mock" else self.settings.chunk_size_io)
        if size < 1:
            raise BadInput("chunk size must be >= 1", where="chunk_size")
        spec = JobSpec(id=new_job_id(), kind=kind, signature=target["signature"], program=target["program"],
                       backend=target["backend"], model=target["model"], fallback=target["fallback"], total=total,
                       chunk_size=size, ttl_seconds=self.settings.result_ttl_seconds, created_at=time.time(),
                       idempotency_key=idempotency_key, retry_of=retry_of,
                       deadline=time.time() + target["deadline_seconds"] if target.get("deadline_seconds") else None,
                       max_cost_usd=target.get("max_cost_usd"), mode=target.get("mode", "live"),
                       tenant=target.get("tenant"))
        if kind is JobKind.BATCH and folds(spec.program):  # identical rows are sent once (shared/dedupe.py)
            items, _ = fold_duplicates(items)
        self.store.create_job(spec)
        if idempotency_key:
            ttl = self.settings.idempotency_ttl_seconds or spec.ttl_seconds
            other = self.store.claim_idempotency(idempotency_key, spec.id, ttl)
            if other is not None:
                self.store.delete_job(spec.id)
                return Job(self, other, existing=True)
        try:
            self._enqueue(spec, items())
        except BaseException as exc:
            self.store.fail_job(spec.id, f"enqueue interrupted: {type(exc).__name__}: {exc}")
            raise
        return Job(self, spec.id)

    def _enqueue(self, spec: JobSpec, items: Iterator[Item]) -> int:
        job = spec.model_dump(mode="json")
        queue = queue_for(spec.backend)
        sent = 0
        with self.app.producer_or_acquire() as producer:
            index = 0
            while chunk := list(islice(items, spec.chunk_size)):
                payload = {"job": job, "chunk": index, "items": [it.model_dump(mode="json") for it in chunk],
                           "requeues": 0}
                self.app.send_task(CHUNK_TASK, args=[payload], queue=queue, producer=producer)
                index += 1
                sent += len(chunk)
        return sent


def _deadline_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise BadInput(f"deadline must be a positive number of seconds, got {value!r}", where="deadline_seconds")
    return float(value)
