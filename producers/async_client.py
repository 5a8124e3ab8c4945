"""``AsyncClient``: the Client's methods, awaitable, for asyncio services (FastAPI, Starlette, aiohttp).

    from tidyq import AsyncClient
    async with AsyncClient() as c:                                   # TIDYQ_REDIS_URL
        job = await c.submit_predict("question -> answer", {"question": "2+2?"}, backend="mock")
        outputs = await job.result(timeout=10)
        async for row in (await c.submit_batch(rows, signature="q -> a", backend="mock")).results(): ...

Why this shape:
- Checks, JobSpec building, chunking and result decoding are producers/submission.py, the same code
  the sync Client runs; Redis keys and Lua scripts are shared.store's (via shared.async_store).
- Job state and results go through redis.asyncio, one pool per event loop (a redis.asyncio pool is
  bound to the loop that created it), so no call blocks the loop.
- Chunk messages are published with Celery's own producer in a worker thread (``asyncio.to_thread``):
  Celery has no asyncio publisher, and writing its wire protocol by hand would be a second copy of it.
- Cancellation-safe: a submit cancelled while its chunks are being sent stops sending and marks the
  job failed ("enqueue interrupted"), so workers skip the chunks already sent; cancelling a
  ``result()``/``results()`` await leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from producers import jsonl, submission
from producers.client import Client
from producers.submission import JobFailed
from shared.async_store import AsyncJobStore
from shared.config import Settings, get_settings
from shared.errors import BadInput
from shared.jobs import Item, JobKind, Target
from shared.queues import queue_for
from shared.store import JobNotFound, JobTimeout

__all__ = ["AsyncClient", "AsyncJob", "JobFailed", "JobNotFound", "JobTimeout"]


class EnqueueStopped(Exception):
    """The awaiting submit was cancelled: the sending thread stops at the next item."""


def _stoppable(items: Iterator[Item], stop: threading.Event) -> Iterator[Item]:
    for item in items:
        if stop.is_set():
            raise EnqueueStopped("submit cancelled")
        yield item


class AsyncJob:
    """A handle on a submitted job. ``existing`` is True when an idempotency key matched."""

    def __init__(self, client: AsyncClient, job_id: str, *, existing: bool = False, warnings: list[str] | None = None):
        self.client, self.id, self.existing = client, job_id, existing
        self.warnings = list(warnings or [])  # what the submit-time target check could not confirm

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def status(self) -> dict:
        return (await self.client.store.status(self.id)).model_dump(mode="json")

    def results(self, timeout: float | None = None, *, follow: bool = True) -> AsyncIterator[dict]:
        """``async for row in job.results()``: result dicts as they arrive; ends when the job ends."""
        return self.client.store.iter_results(self.id, timeout=timeout, follow=follow)

    async def result(self, timeout: float | None = None) -> dict:
        """The outputs of a single-item job; JobFailed if its item failed or it was cancelled."""
        rows = [row async for row in self.results(timeout=timeout)]
        ok = rows and rows[0]["status"] == "succeeded"
        return submission.predict_outputs(self.id, rows, None if ok else await self.client.store.state(self.id))

    async def wait(self, timeout: float | None = None) -> dict:
        """The status once the job has ended, woken by its results (JobTimeout after ``timeout`` seconds)."""
        status = await self.client.store.wait_end(self.id, math.inf if timeout is None else timeout)
        if not status.status.terminal:
            raise JobTimeout(f"job {self.id} did not finish within {timeout}s")
        return status.model_dump(mode="json")

    async def cancel(self) -> str:
        """Stop pending chunks; finished results are kept. Returns the new state."""
        state = await self.client.store.cancel(self.id)
        if state.terminal:
            await asyncio.to_thread(self.client.sync.job_ended, self.id)
        return state.value

    async def retry(self, **kwargs: Any) -> AsyncJob | None:
        return await self.client.retry(self.id, **kwargs)


class AsyncClient:
    """Awaitable producer. Build one per process and share it; ``await close()`` (or ``async with``)."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.redis_url = redis_url or self.settings.redis_url or self.settings.default_redis_url
        self.sync = Client(self.redis_url, settings=self.settings)  # Celery publishing and the webhook scheduler
        self._stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncJobStore] = \
            weakref.WeakKeyDictionary()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def store(self) -> AsyncJobStore:
        """The running loop's store (its own redis.asyncio pool)."""
        loop = asyncio.get_running_loop()
        store = self._stores.get(loop)
        if store is None:
            store = self._stores[loop] = AsyncJobStore.from_url(self.redis_url, self.settings.async_max_connections)
        return store

    async def close(self) -> None:
        """Close the running loop's pool (other loops' pools close with their loop)."""
        store = self._stores.pop(asyncio.get_running_loop(), None)
        if store is not None:
            await store.close()

    async def job(self, job_id: str) -> AsyncJob:
        if await self.store.state(job_id) is None:
            raise JobNotFound(job_id)
        return AsyncJob(self, job_id)

    async def list_jobs(self, *, statuses: Iterable[str] | None = None, kind: str | None = None,
                        limit: int = 50) -> list[dict]:
        """The newest jobs' statuses first."""
        return [st.model_dump(mode="json") for st in await self.store.list_jobs(statuses=statuses, kind=kind,
                                                                                limit=limit)]

    # --- submitting ------------------------------------------------------------------------------
    async def submit_predict(self, signature: str | None, inputs: dict[str, Any], *, backend: str | None = None,
                             model: str | None = None, program: str | None = None,
                             fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                             deadline_seconds: float | None = None, webhook_url: str | None = None,
                             tenant: str | None = None, item_cache: bool = True) -> AsyncJob:
        target = await self._target(signature, program, backend, model, fallbacks, webhook_url, deadline_seconds,
                                    tenant)
        target["item_cache"] = submission.item_cache_flag(item_cache)
        item = submission.predict_item(target, inputs, self.settings)
        return await self._submit(JobKind.PREDICT, target, lambda: iter([item]), 1, idempotency_key, chunk_size=1)

    async def submit_batch(self, rows: Iterable[dict | Item], signature: str | None = None, *,
                           backend: str | None = None, model: str | None = None, program: str | None = None,
                           fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                           chunk_size: int | None = None, deadline_seconds: float | None = None,
                           webhook_url: str | None = None, tenant: str | None = None,
                           max_cost_usd: float | None = None, mode: str = "live", item_cache: bool = True) -> AsyncJob:
        """Rows are ``{"custom_id", "inputs"}`` dicts, held in memory (submit_file streams a file).
        ``max_cost_usd``, ``mode``, ``tenant`` and ``item_cache`` are checked as Client.submit_batch checks them."""
        target = await self._batch_target(signature, program, backend, model, fallbacks, webhook_url,
                                          deadline_seconds, tenant, max_cost_usd, mode)
        target["item_cache"] = submission.item_cache_flag(item_cache)

        def check() -> tuple[int, Callable[[], Iterator[Item]]]:
            items = submission.batch_items(rows, target, self.settings)
            return len(items), lambda: iter(items)

        return await self._submit_checked(target, idempotency_key, chunk_size, check, in_thread=False)

    async def submit_file(self, path: str | Path, signature: str | None = None, *, backend: str | None = None,
                          model: str | None = None, program: str | None = None,
                          fallbacks: Iterable[str | Target] | None = None, idempotency_key: str | None = None,
                          chunk_size: int | None = None, deadline_seconds: float | None = None,
                          webhook_url: str | None = None, tenant: str | None = None,
                          max_cost_usd: float | None = None, mode: str = "live", item_cache: bool = True) -> AsyncJob:
        """A JSONL file of any size: checked in one streaming pass (in a thread), enqueued in a second."""
        target = await self._batch_target(signature, program, backend, model, fallbacks, webhook_url,
                                          deadline_seconds, tenant, max_cost_usd, mode)
        target["item_cache"] = submission.item_cache_flag(item_cache)

        def check() -> tuple[int, Callable[[], Iterator[Item]]]:
            total = jsonl.FileCheck(path, input_fields=target["input_fields"], signature=signature,
                                    max_items=self.settings.max_items_per_job,
                                    max_item_bytes=self.settings.max_item_bytes).run()
            return total, lambda: jsonl.iter_items(path)

        return await self._submit_checked(target, idempotency_key, chunk_size, check, in_thread=True)

    async def submit_optimize(self, **options: Any) -> AsyncJob:
        """An optimize job (see Client.submit_optimize); its checks may read MLflow, so they run in a thread."""
        job = await asyncio.to_thread(self.sync.submit_optimize, **options)
        return AsyncJob(self, job.id)

    async def retry(self, job_id: str, *, idempotency_key: str | None = None) -> AsyncJob | None:
        """A new job with only the failed items of ``job_id``, linked both ways. None when nothing failed."""
        store = self.store
        old = await store.spec(job_id)
        state = await store.state(job_id)
        if state is not None and not state.terminal:
            raise BadInput(f"job {job_id} is still {state.value}; retry it after it ends", where="job")
        total = await store.failed_count(job_id)
        if total == 0:
            return None
        items = [item async for item in store.failed_items(job_id)]
        kind = JobKind.PREDICT if old.kind is JobKind.PREDICT else JobKind.BATCH
        job = await self._submit(kind, submission.retry_target(old), lambda: iter(items), len(items),
                                 idempotency_key, chunk_size=old.chunk_size, retry_of=job_id)
        if not job.existing:
            await store.link_retry(job_id, job.id)
        return job

    # --- internals ---------------------------------------------------------------------------------
    async def _target(self, signature, program, backend, model, fallbacks, webhook_url, deadline,
                      tenant=None) -> dict:
        # resolving a webhook host is a DNS lookup: off the loop
        target = await asyncio.to_thread(submission.build_target, self.settings, signature, program, backend, model,
                                         fallbacks, webhook_url) if webhook_url or self.settings.webhook_url else \
            submission.build_target(self.settings, signature, program, backend, model, fallbacks)
        target["deadline_seconds"] = submission.deadline_seconds(deadline)
        target["tenant"] = tenant
        return target

    async def _batch_target(self, signature, program, backend, model, fallbacks, webhook_url, deadline, tenant,
                            max_cost_usd, mode) -> dict:
        """A batch's target: the sync Client's own checks of max cost, mode and tenant (its daily budget)."""
        target = await self._target(signature, program, backend, model, fallbacks, webhook_url, deadline)
        target["max_cost_usd"] = self.sync._max_cost(max_cost_usd)
        target["mode"] = self.sync._mode(mode, target)
        target["tenant"] = await asyncio.to_thread(self.sync._tenant, tenant) if tenant is not None else None
        return target

    async def _submit_checked(self, target: dict, idempotency_key: str | None, chunk_size: int | None,
                              check: Callable[[], tuple[int, Callable[[], Iterator[Item]]]], *,
                              in_thread: bool) -> AsyncJob:
        """A batch: the existing job of the idempotency key, else check every row, then submit."""
        if idempotency_key and (existing := await self._existing(idempotency_key)):
            return existing
        total, items = await asyncio.to_thread(check) if in_thread else check()
        return await self._submit(JobKind.BATCH, target, items, total, idempotency_key, chunk_size=chunk_size)

    async def _existing(self, idempotency_key: str) -> AsyncJob | None:
        job_id = await self.store.idempotent_job(idempotency_key)
        return AsyncJob(self, job_id, existing=True) if job_id else None

    def _checked_first(self, spec, payloads: Iterator[dict], queue: str) -> tuple[list[str], tuple | None, list | None]:
        """In a thread: the target check (refuses before anything is written), the first chunk's ledger
        entry and its message as broker commands (Client._captured_send; None: sent after the job)."""
        return (self.sync.check_target(spec), *self.sync._first_chunk(spec, payloads, queue))

    async def _submit(self, kind: JobKind, target: dict, items: Callable[[], Iterator[Item]], total: int,
                      idempotency_key: str | None, *, chunk_size: int | None = None,
                      retry_of: str | None = None) -> AsyncJob:
        spec = submission.new_spec(kind, target, total, self.settings, idempotency_key, chunk_size=chunk_size,
                                   retry_of=retry_of)
        queue, stop = queue_for(spec.backend), threading.Event()
        payloads = submission.chunk_payloads(spec, _stoppable(items(), stop))
        first, publish = None, None
        if idempotency_key:
            notes = await asyncio.to_thread(self.sync.check_target, spec)  # refuses before anything is written
        else:  # the first chunk's ledger entry and message ride with the job's creation (one round trip)
            notes, first, publish = await asyncio.to_thread(self._checked_first, spec, payloads, queue)
        store = self.store
        await store.create_job(spec, first_chunk=first[:4] if first else None, publish=publish or ())
        if idempotency_key:
            other = await store.claim_idempotency(idempotency_key, spec.id,
                                                  submission.idempotency_ttl(spec, self.settings))
            if other is not None:
                await store.delete_job(spec.id)
                return AsyncJob(self, other, existing=True)
        if publish and kind is JobKind.PREDICT:  # its only chunk is sent
            return AsyncJob(self, spec.id, warnings=notes)
        try:
            await asyncio.to_thread(self.sync._enqueue, spec, payloads, queue, None if publish else first)
        except BaseException as exc:
            stop.set()
            await asyncio.shield(store.fail_job(spec.id, f"enqueue interrupted: {type(exc).__name__}: {exc}"))
            raise
        return AsyncJob(self, spec.id, warnings=notes)
