"""The job store on redis.asyncio: the same keys, Lua scripts and decoding as shared.store.JobStore.

Why a second class and not a second copy: every script text, key name and hash decoding is imported
from :mod:`shared.store` and :mod:`shared.keys`; only the awaiting differs. Readers waiting for
results share ONE pattern subscription per store (:class:`JobEvents`) instead of a connection each,
so a server can hold hundreds of waits on a handful of connections. Polling with a short cap stays
the fallback: a lost wake-up costs at most ``poll_max`` seconds, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis

from shared import keys
from shared.jobs import TERMINAL_STATES, Item, JobSpec, JobState, JobStatus
from shared.store import (
    _CANCEL,
    _FAIL,
    JobNotFound,
    JobTimeout,
    _job_keys,
    _s,
    _status_from_hash,
    collect_listed,
    queue_create_job,
    queue_list_page,
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class JobEvents:
    """Wake-ups for waiters on job channels from one ``PSUBSCRIBE tidyq:job:{*}`` connection."""

    def __init__(self, client: aioredis.Redis):
        self.client = client
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._reader: asyncio.Task | None = None

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``channel`` is published on, for the duration of the block. Register
        first, then read, then wait: a publish in between is never missed."""
        event = asyncio.Event()
        self._waiters.setdefault(channel, set()).add(event)
        try:
            self._ensure_reader()
            yield event
        finally:
            waiting = self._waiters.get(channel)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[channel]

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(), name="tidyq-job-events")

    async def _read(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(keys.job_events_pattern())
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                for event in self._waiters.get(_s(message.get("channel")) or "", ()):
                    event.set()
        except aioredis.RedisError:
            return  # waiters fall back to polling; the next wait starts a new reader
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None


class AsyncJobStore:
    """Awaitable job operations. Bound to the event loop its client was built on (redis.asyncio pools
    are per loop): producers.async_client.AsyncClient keeps one per loop."""

    def __init__(self, client: aioredis.Redis):
        self.r = client
        self._cancel = client.register_script(_CANCEL)
        self._fail = client.register_script(_FAIL)
        self.events = JobEvents(client)

    @classmethod
    def from_url(cls, url: str, max_connections: int = 64) -> AsyncJobStore:
        """A blocking pool: past ``max_connections`` a caller waits (up to 20 s) for a free connection
        instead of failing, so a burst of requests queues instead of erroring."""
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=20,
                                                        health_check_interval=30, socket_keepalive=True,
                                                        retry_on_timeout=True)
        return cls(aioredis.Redis(connection_pool=pool))

    async def close(self) -> None:
        await self.events.close()
        await self.r.aclose()

    # --- producer side -------------------------------------------------------------------------
    async def create_job(self, spec: JobSpec, first_chunk: tuple[int, str, str, str] | None = None,
                         publish: Sequence[tuple[str, tuple]] = ()) -> None:
        """As JobStore.create_job: the first chunk's ledger entry and its message in the same transaction."""
        async with self.r.pipeline(transaction=True) as p:
            queue_create_job(p, spec, first_chunk, publish)
            existed = (await p.execute())[0]
        if existed:
            raise RuntimeError(f"job id collision: {spec.id}")

    async def claim_idempotency(self, idem_key: str, job_id: str, ttl_seconds: int) -> str | None:
        """As JobStore.claim_idempotency: None when ours won, else the live job holding the key."""
        key = keys.idempotency(hashlib.sha256(idem_key.encode()).hexdigest())
        for _ in range(3):
            if await self.r.set(key, job_id, nx=True, ex=ttl_seconds):
                return None
            other = _s(await self.r.get(key))
            if other and await self.r.exists(keys.job(other)):
                return other
            await self.r.delete(key)
        raise RuntimeError("could not claim the idempotency key (contended)")

    async def idempotent_job(self, idem_key: str) -> str | None:
        """The live job an idempotency key is bound to, if any."""
        other = _s(await self.r.get(keys.idempotency(hashlib.sha256(idem_key.encode()).hexdigest())))
        if other and await self.r.exists(keys.job(other)):
            return other
        return None

    async def delete_job(self, job_id: str) -> None:
        await self.r.delete(*_job_keys(job_id))

    async def fail_job(self, job_id: str, error: str) -> str:
        return _s(await self._fail(keys=_job_keys(job_id), args=[repr(time.time()), error])) or "missing"

    async def link_retry(self, old_id: str, new_id: str) -> None:
        if await self.r.exists(keys.job(old_id)):
            await self.r.hset(keys.job(old_id), "retried_by", new_id)

    # --- reading ---------------------------------------------------------------------------------
    async def state(self, job_id: str) -> JobState | None:
        st = await self.r.hget(keys.job(job_id), "status")
        return JobState(_s(st)) if st else None

    async def spec(self, job_id: str) -> JobSpec:
        raw = await self.r.hget(keys.job(job_id), "spec")
        if raw is None:
            raise JobNotFound(job_id)
        return JobSpec.model_validate_json(raw)

    async def status(self, job_id: str) -> JobStatus:
        key = keys.job(job_id)
        async with self.r.pipeline(transaction=True) as p:
            p.hgetall(key)
            p.ttl(key)
            p.zcard(keys.job_ledger_seen(job_id))
            p.hgetall(keys.job_tracking(job_id))
            raw, ttl, outstanding, tracking = await p.execute()
        if not raw:
            raise JobNotFound(job_id)
        return _status_from_hash(job_id, raw, ttl, outstanding, tracking)

    async def list_jobs(self, *, statuses: Iterable[str] | None = None, kind: str | None = None,
                        limit: int = 50, tenant: str | None = None) -> list[JobStatus]:
        """As JobStore.list_jobs: newest first, filtered (also by tenant), expired index entries dropped."""
        wanted = {JobState(s).value for s in statuses} if statuses else None
        out: list[JobStatus] = []
        index, start, page = keys.jobs_index(), 0, max(limit, 50)
        while len(out) < limit:
            ids = [_text(j) for j in await self.r.zrevrange(index, start, start + page - 1)]
            if not ids:
                break
            start += len(ids)
            async with self.r.pipeline(transaction=False) as p:
                queue_list_page(p, ids)
                replies = await p.execute()
            gone = collect_listed(ids, replies, wanted, kind, out, limit, tenant)
            if gone:
                await self.r.zrem(index, *gone)
                start -= len(gone)
        return out

    async def wait_end(self, job_id: str, timeout: float, poll_max: float = 0.25) -> JobStatus:
        """The job's status once it has ended, or after ``timeout`` seconds (woken by its results)."""
        deadline = time.monotonic() + timeout
        async with self.events.watch(keys.job(job_id)) as woken:
            while True:
                woken.clear()
                status = await self.status(job_id)
                left = deadline - time.monotonic()
                if status.status.terminal or left <= 0:
                    return status
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(poll_max, left))

    async def cancel(self, job_id: str) -> JobState:
        st = _s(await self._cancel(keys=_job_keys(job_id), args=[repr(time.time())]))
        if st == "missing":
            raise JobNotFound(job_id)
        return JobState(st)

    async def get_result(self, job_id: str, custom_id: str) -> dict | None:
        raw = await self.r.hget(keys.job_results(job_id), custom_id)
        return None if raw is None else json.loads(raw)

    async def failed_count(self, job_id: str) -> int:
        return int(await self.r.hlen(keys.job_failed_inputs(job_id)))

    async def failed_items(self, job_id: str, count: int = 500) -> AsyncIterator[Item]:
        async for cid, raw in self.r.hscan_iter(keys.job_failed_inputs(job_id), count=count):
            yield Item(custom_id=_text(cid), inputs=json.loads(raw))

    async def results_page(self, job_id: str, offset: int, limit: int) -> tuple[list[dict], int, JobState, bool]:
        """As JobStore.results_page: (rows, next offset, state, ended and nothing left)."""
        job_key, order_key = keys.job(job_id), keys.job_order(job_id)
        async with self.r.pipeline(transaction=False) as p:
            p.hget(job_key, "status")  # before the page: a terminal state seen here means all results are listed
            p.lrange(order_key, offset, offset + limit - 1)
            p.llen(order_key)
            st, ids, listed = await p.execute()
        if st is None:
            raise JobNotFound(job_id)
        ids = ids if limit > 0 else []
        rows = [json.loads(raw) for raw in await self.r.hmget(keys.job_results(job_id), ids) if raw is not None] \
            if ids else []
        state, nxt = JobState(_s(st)), offset + len(ids)
        return rows, nxt, state, state in TERMINAL_STATES and nxt >= int(listed)

    async def iter_results(self, job_id: str, *, timeout: float | None = None, follow: bool = True,
                           page: int = 500, poll_max: float = 0.25) -> AsyncIterator[dict]:
        """Result dicts in arrival order as they arrive; ends when the job has ended and every result was
        read (JobTimeout after ``timeout`` s, JobNotFound for an unknown job). Cancelling the consumer
        leaves nothing behind: the only state is this generator's offset."""
        deadline = None if timeout is None else time.monotonic() + timeout
        offset = 0
        async with self.events.watch(keys.job(job_id)) as woken:
            while True:
                woken.clear()
                rows, offset, state, end = await self.results_page(job_id, offset, page)
                for row in rows:
                    yield row
                if rows:
                    continue
                if end or not follow or state in TERMINAL_STATES:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(f"job {job_id} did not finish within {timeout}s ({offset} results so far)")
                pause = poll_max if deadline is None else max(0.0, min(poll_max, deadline - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), pause)
