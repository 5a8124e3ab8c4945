"""Job state and results in Redis: every operation on a job's keys, atomic where it matters.

Key names come from :mod:`shared.keys`. State changes that read-then-write run as Lua scripts so
two workers (or a worker and `tidyq cancel`) can never interleave badly:

- ``record_results``: HSETNX per item; counters move only on the first write of a custom_id, so a
  redelivered chunk never duplicates a result or double-counts; the last result finishes the job.
  The items' tracking numbers ride in the same call, and a chunk with nothing left to hand back
  ends in it too (``end=``); its PUBLISH wakes readers, and a one-item job's end message carries
  the result itself (a reader subscribed before the send then reads nothing: ``subscribe``).
- ``start_chunk`` / ``chunk_end``: a chunk runs only while the job is queued/running (the start
  also returns the ids a redelivered copy already stored); a running set lets ``cancel`` finish at
  once when no chunk is executing, or when the last one stops; the end also drops the chunk's
  ledger entry (shared/ledger.py) when the ending copy is the live one.

Why folded: a single predict used to cost ~7 client and 8 worker round trips; on a loaded 2-core
machine each one is a context switch to redis-server (docs/performance.md, issue 19).
- ``cancel``: queued/running -> cancelling (or cancelled straight away); results are kept.

Every key of a job expires ``ttl_seconds`` after the job finishes (set at creation as well, so an
abandoned job also goes away).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import redis

from shared import keys
from shared.errors import BadInput
from shared.jobs import TERMINAL_STATES, Counts, Item, ItemResult, JobSpec, JobState, JobStatus, iso
from shared.ledger import DONE_FRAGMENT, queue_sent


class JobNotFound(BadInput):
    """No such job: a wrong id, or it expired (the CLI exits 2)."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} (wrong id, or its results expired)", where="job")


class JobTimeout(TimeoutError):
    """Waiting for a job's results took longer than the caller's timeout."""


# KEYS: job, running, results ; ARGV: chunk id, now, then the chunk's custom_ids
# -> {'run', custom_ids that already have a result...} or {the job's state} (the chunk does not run)
_CHUNK_START = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing'} end
if st ~= 'queued' and st ~= 'running' then return {st} end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(redis.call('HGET', KEYS[1], 'ttl')))
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2])
end
local out = {'run'}
for first = 3, #ARGV, 1000 do  -- pages: unpack() has a stack limit
  local last = math.min(first + 999, #ARGV)
  local present = redis.call('HMGET', KEYS[3], unpack(ARGV, first, last))
  for i = 1, #present do
    if present[i] then out[#out + 1] = ARGV[first + i - 1] end
  end
end
return out
"""

# The end of a chunk (Lua fragment on the locals ledger, seen, chunk, task, now; KEYS[1] job, KEYS[2]
# running, KEYS[1..5] the job's keys): its ledger entry goes when ``task`` is the live copy, it leaves
# the running set, and a cancelling job with no chunk left running is cancelled. Sets st_end.
_END_FRAGMENT = DONE_FRAGMENT + """
redis.call('SREM', KEYS[2], chunk)
local st_end = redis.call('HGET', KEYS[1], 'status')
if st_end == 'cancelling' and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', now)
  local ttl_end = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
  for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl_end) end
  st_end = 'cancelled'
end
"""

# KEYS: job, running, results, order, failed-inputs, ledger, ledger-seen ; ARGV: chunk id, now, task id or ''
_CHUNK_END = ("local ledger, seen, chunk, now, task = KEYS[6], KEYS[7], ARGV[1], ARGV[2], ARGV[3]" + _END_FRAGMENT
              + "return st_end or 'missing'")

# KEYS: job, running, results, order, failed-inputs, tracking
# ARGV: now, n, then n x (custom_id, status, result json, inputs json or '', error type or ''),
#       then m, then m x (tracking counter, increment): the items' LM numbers (shared/tracking.py),
#       added before the job can end, so a job these results complete shows its usage at once
# A failed item's error type is counted in the job hash as field 'error:<type>' (JobStatus.error_types).
_RECORD_BODY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local now = ARGV[1]
local n = tonumber(ARGV[2])
local m = tonumber(ARGV[3 + n * 5] or '0')
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
for j = 0, m - 1 do  -- pcall: a tracking number never fails the results (a field HINCRBY left non-float)
  redis.pcall('HINCRBYFLOAT', KEYS[6], ARGV[4 + n * 5 + j * 2], ARGV[5 + n * 5 + j * 2])
end
if m > 0 then redis.call('EXPIRE', KEYS[6], ttl) end
local new = 0
for i = 0, n - 1 do
  local base = 3 + i * 5
  local cid, status = ARGV[base], ARGV[base + 1]
  if redis.call('HSETNX', KEYS[3], cid, ARGV[base + 2]) == 1 then
    new = new + 1
    redis.call('RPUSH', KEYS[4], cid)
    redis.call('HINCRBY', KEYS[1], status, 1)
    if status == 'failed' and ARGV[base + 3] ~= '' then
      redis.call('HSET', KEYS[5], cid, ARGV[base + 3])
    end
    if status == 'failed' and ARGV[base + 4] ~= '' then
      redis.call('HINCRBY', KEYS[1], 'error:' .. ARGV[base + 4], 1)
    end
    local cost = tonumber(string.match(ARGV[base + 2], '"cost_usd":([-+.%deE]+)'))
    if cost and cost > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'cost_usd', cost) end
  end
end
if new > 0 then
  for i = 3, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
end
local f = redis.call('HMGET', KEYS[1], 'status', 'total', 'succeeded', 'failed', 'kind', 'cost_usd', 'max_cost_usd')
local st, total = f[1], tonumber(f[2])
local ok, bad = tonumber(f[3] or '0'), tonumber(f[4] or '0')
local ceiling = tonumber(f[7] or '')
local final = nil
if ceiling and ok + bad < total and tonumber(f[6] or '0') >= ceiling and (st == 'queued' or st == 'running') then
  -- --max-cost reached: chunk_start refuses new chunks, running ones stop at their next state check
  final = 'budget_exceeded'
elseif ok + bad >= total and (st == 'queued' or st == 'running' or st == 'cancelling') then
  final = 'completed'
  if f[5] == 'predict' and bad > 0 then final = 'failed' end
end
if final then
  redis.call('HSET', KEYS[1], 'status', final, 'finished_at', now)
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
if new > 0 then  -- wakes iter_results readers (a channel, not a key); see wake_up()
  local note = tostring(new)
  if final then
    note = note .. '\\n' .. final
    if total == 1 and n == 1 then note = note .. '\\n' .. ARGV[5] end  -- a one-item job's result itself
  end
  redis.call('PUBLISH', KEYS[1], note)
end
"""
_RECORD_RESULTS = _RECORD_BODY + "return new"

# The chunk's last results and its end in one call (the chunk has nothing left to hand back).
# KEYS: those of _RECORD_RESULTS, then ledger, ledger-seen ; ARGV: those of _RECORD_RESULTS, then chunk id, task id
_RECORD_AND_END = _RECORD_BODY + """
local ledger, seen = KEYS[7], KEYS[8]
local chunk, task = ARGV[4 + n * 5 + m * 2], ARGV[5 + n * 5 + m * 2]
""" + _END_FRAGMENT + "return new"

# KEYS: job, running, results, order, failed-inputs ; ARGV: now
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st ~= 'queued' and st ~= 'running' then return st end
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
if st == 'queued' or redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'status', 'cancelling')
return 'cancelling'
"""

# KEYS: job, running, results, order, failed-inputs ; ARGV: now, error
_FAIL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'budget_exceeded' then return st end
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[1], 'error', ARGV[2])
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
return 'failed'
"""

IDLE_SUBSCRIPTIONS = 4  # open pub/sub connections a JobStore keeps for the next waits

# Index entries older than this are trimmed at create_job: longer than any job's result TTL in use
# (default 7 days), so only entries of long-expired jobs go; readers prune expired ones anyway.
JOBS_INDEX_HORIZON_SECONDS = 90 * 24 * 3600


# job hash fields "pb:<provider batch id>" hold one economy batch's state as JSON (workers/economy_task.py)
PROVIDER_BATCH_FIELD = "pb:"


def _job_keys(job_id: str) -> list[str]:
    return [keys.job(job_id), keys.job_running_chunks(job_id), keys.job_results(job_id),
            keys.job_order(job_id), keys.job_failed_inputs(job_id)]


@overload
def _s(value: None) -> None: ...
@overload
def _s(value: bytes | str | int | float) -> str: ...
def _s(value: bytes | str | int | float | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _waiting(h: dict[str, str]) -> dict | None:
    """The job's 'waiting for a backend' note while it is current and the job still runs."""
    raw = h.get("waiting_for_backend")
    if not raw or h.get("status") not in ("queued", "running"):
        return None
    note = json.loads(raw)
    return note if note.get("until", 0) > time.time() else None


USAGE_FIELDS = {"lm_calls": "calls", "attempts": "attempts", "retries": "retries", "input_tokens": "input_tokens",
                "output_tokens": "output_tokens", "cost_usd": "cost_usd"}


def usage_from_tracking(raw: dict | None) -> dict[str, int | float] | None:
    """The job's LM usage from its tracking aggregate (keys.job_tracking, summed per chunk by
    shared.tracking): the same numbers its MLflow run and Prometheus count. None before any chunk ran;
    a field that does not read as a number is left out (one damaged counter must not hide the job)."""
    if not raw:
        return None
    agg = {_s(k): _s(v) for k, v in raw.items()}
    out: dict[str, int | float] = {}
    for name, field in USAGE_FIELDS.items():
        try:
            value = float(agg.get(field) or 0)
        except ValueError:
            continue
        out[name] = round(value, 6) if name == "cost_usd" else int(value)
    return out


def _status_from_hash(job_id: str, raw: dict, ttl: int | None, outstanding: int | None = None,
                      tracking: dict | None = None) -> JobStatus:
    """A job's hash (and TTL, its ledger's size and its tracking aggregate when read) -> the status
    every reader shows."""
    h = {_s(k): _s(v) for k, v in raw.items()}
    spec = JobSpec.model_validate_json(h["spec"])
    ts = {name: iso(float(h[f"{name}_at"])) if h.get(f"{name}_at") else None
          for name in ("created", "started", "finished")}
    state = JobState(h["status"])
    if state.terminal:  # its last chunk leaves the ledger just after its results: none is outstanding
        outstanding = 0
    return JobStatus(
        id=job_id, kind=h["kind"], status=state,
        counts=Counts(total=int(h["total"]), succeeded=int(h.get("succeeded", 0)), failed=int(h.get("failed", 0))),
        timestamps=ts, backend=spec.backend, model=spec.model, signature=spec.signature, program=spec.program,
        retry_of=h.get("retry_of"), retried_by=h.get("retried_by"), error=h.get("error"),
        expires_in_seconds=ttl if ttl and ttl > 0 else None,
        progress=json.loads(h["progress"]) if h.get("progress") else None,
        result=json.loads(h["result"]) if h.get("result") else None,
        waiting_for_backend=_waiting(h),
        tenant=spec.tenant,
        webhooks={k[len("webhook:"):]: json.loads(v) for k, v in h.items() if k.startswith("webhook:")} or None,
        chunks_outstanding=int(outstanding or 0), chunk_resends=int(h.get("chunk_resends", 0)),
        error_types=error_types(h),
        usage=usage_from_tracking(tracking),
        cost_usd=round(float(h.get("cost_usd") or 0.0), 9), max_cost_usd=spec.max_cost_usd, mode=spec.mode,
        economy_note=h.get("economy_note"),
        provider_batches=sorted((json.loads(v) for k, v in h.items() if k.startswith(PROVIDER_BATCH_FIELD)),
                                key=lambda b: (b.get("chunk", 0), b.get("id", ""))) or None,
    )


def queue_list_page(pipe, ids: list[str]) -> None:
    """The reads of one list_jobs page, queued on a (sync or asyncio) pipeline: per job its hash, TTL
    and tracking aggregate (the usage every status shows), in collect_listed's order."""
    for job_id in ids:
        pipe.hgetall(keys.job(job_id))
        pipe.ttl(keys.job(job_id))
        pipe.hgetall(keys.job_tracking(job_id))


def collect_listed(ids: list[str], replies: list, wanted: set[str] | None, kind: str | None, out: list[JobStatus],
                   limit: int, tenant: str | None = None) -> list[str]:
    """One page of list_jobs: (HGETALL, TTL, tracking HGETALL) reply triples (queue_list_page) -> matching
    statuses, with their usage, appended to ``out`` (up to ``limit``); returns the ids whose job expired
    (the caller drops them from the index)."""
    gone = []
    for job_id, raw, ttl, tracking in zip(ids, replies[0::3], replies[1::3], replies[2::3], strict=True):
        if not raw:
            gone.append(job_id)
            continue
        st = _status_from_hash(job_id, raw, ttl, tracking=tracking)
        if (wanted is None or st.status.value in wanted) and (kind is None or st.kind == kind) \
                and (tenant is None or st.tenant == tenant):
            out.append(st)
            if len(out) == limit:
                break
    return gone


def queue_create_job(pipe, spec: JobSpec, first_chunk: tuple[int, str, str, str] | None = None,
                     publish: Sequence[tuple[str, tuple]] = ()) -> None:
    """The commands that write a new job, queued on a (sync or asyncio) transaction pipeline; the first
    reply says whether the id existed. Then the first chunk's ledger entry and, last, its message as
    broker commands (see JobStore.create_job). Shared by JobStore and shared.async_store.AsyncJobStore."""
    mapping: dict[str, Any] = {
        "spec": spec.model_dump_json(exclude_none=True), "kind": spec.kind.value, "status": JobState.QUEUED.value,
        "total": spec.total, "succeeded": 0, "failed": 0, "ttl": spec.ttl_seconds,
        "created_at": repr(spec.created_at)}
    if spec.retry_of:
        mapping["retry_of"] = spec.retry_of
    if spec.max_cost_usd is not None:  # read by the record script (budget_exceeded)
        mapping["max_cost_usd"] = repr(spec.max_cost_usd)
    key = keys.job(spec.id)
    pipe.exists(key)
    pipe.hset(key, mapping=mapping)
    pipe.expire(key, spec.ttl_seconds)
    pipe.zadd(keys.jobs_index(), {spec.id: spec.created_at})
    pipe.zremrangebyscore(keys.jobs_index(), "-inf", spec.created_at - JOBS_INDEX_HORIZON_SECONDS)
    if first_chunk is not None:
        queue_sent(pipe, spec.id, *first_chunk, ttl=spec.ttl_seconds, now=spec.created_at)
    for name, args in publish:
        getattr(pipe, name)(*args)


def error_types(h: dict[str, str]) -> dict[str, int]:
    """Failed items per error type (the 'error:<type>' counters of the job hash), most frequent first."""
    counts = {k[len("error:"):]: int(v) for k, v in h.items() if k.startswith("error:")}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class WakeUp:
    """One message of the record script: ``new`` results stored; ``final``, the state the job ended
    in with them; ``row``, the result itself when it was the job's only item."""

    new: int
    final: str | None = None
    row: dict | None = None

    @classmethod
    def parse(cls, data: bytes | str) -> WakeUp:
        parts = _s(data).split("\n", 2)
        return cls(int(parts[0]), parts[1] if len(parts) > 1 else None,
                   json.loads(parts[2]) if len(parts) > 2 else None)


def wake_up(sub: Any, channel: str, pause: float) -> WakeUp | None:
    """The next message on ``channel`` within ``pause`` seconds, or None. Subscribe confirmations and
    late messages of a channel the (reused) subscription listened to before do not end the wait."""
    until = time.monotonic() + pause
    while True:
        message = sub.get_message(timeout=max(0.0, until - time.monotonic()))
        if message is not None and message.get("type") == "message" and _s(message.get("channel")) == channel:
            return WakeUp.parse(message["data"])
        if time.monotonic() >= until:
            return None


class JobStore:
    """Redis operations on jobs. Cheap to build; holds a redis client (its pool is shared)."""

    def __init__(self, client: redis.Redis):
        self.r = client
        self._idle_subs: list[Any] = []  # subscriptions kept open between waits (subscribe/release)
        self._subs_lock = threading.Lock()
        self._chunk_start = client.register_script(_CHUNK_START)
        self._chunk_end = client.register_script(_CHUNK_END)
        self._record = client.register_script(_RECORD_RESULTS)
        self._record_and_end = client.register_script(_RECORD_AND_END)
        self._cancel = client.register_script(_CANCEL)
        self._fail = client.register_script(_FAIL)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        from shared.redisconn import get_redis

        return cls(get_redis(url))

    # --- producer side -------------------------------------------------------------------
    def create_job(self, spec: JobSpec, first_chunk: tuple[int, str, str, str] | None = None,
                   publish: Sequence[tuple[str, tuple]] = ()) -> None:
        """Write a new job (status queued). Raises if the id exists (ids are uuid4).
        ``first_chunk`` (chunk, task id, queue, payload JSON): its ledger entry is written in the same
        transaction, and ``publish`` (that chunk's message as broker commands, from
        shared/broker_transport.py captured_publishes) goes last in it: a one-chunk job is one
        round trip, and no worker can take its message before the job and its ledger entry exist."""
        with self.r.pipeline(transaction=True) as p:
            queue_create_job(p, spec, first_chunk, publish)
            existed = p.execute()[0]
        if existed:
            raise RuntimeError(f"job id collision: {spec.id}")

    def claim_idempotency(self, idem_key: str, job_id: str, ttl_seconds: int) -> str | None:
        """Bind ``idem_key`` to ``job_id``. Returns the id of an existing live job holding the
        key (the caller then returns that job), or None when ours won."""
        key = keys.idempotency(hashlib.sha256(idem_key.encode()).hexdigest())
        for _ in range(3):
            if self.r.set(key, job_id, nx=True, ex=ttl_seconds):
                return None
            other = _s(self.r.get(key))
            if other and self.r.exists(keys.job(other)):
                return other
            # the key outlived its job (expired or deleted): take it over
            self.r.delete(key)
        raise RuntimeError("could not claim the idempotency key (contended)")

    def delete_job(self, job_id: str) -> None:
        self.r.delete(*_job_keys(job_id))

    def link_retry(self, old_id: str, new_id: str) -> None:
        if self.r.exists(keys.job(old_id)):
            self.r.hset(keys.job(old_id), "retried_by", new_id)

    def fail_job(self, job_id: str, error: str) -> str:
        return _s(self._fail(keys=_job_keys(job_id), args=[repr(time.time()), error]))

    # --- worker side -----------------------------------------------------------------------
    def chunk_start(self, job_id: str, chunk_id: str) -> str:
        """'run' when the chunk may run; otherwise the job's state ('cancelling', 'missing'...)."""
        return self.start_chunk(job_id, chunk_id, [])[0]

    def start_chunk(self, job_id: str, chunk_id: str, custom_ids: list[str]) -> tuple[str, set[str]]:
        """:meth:`chunk_start` and :meth:`existing_results` in one round trip: ('run', the ids of
        ``custom_ids`` that already have a result) or (the job's state, empty set)."""
        reply = self._chunk_start(keys=[keys.job(job_id), keys.job_running_chunks(job_id), keys.job_results(job_id)],
                                  args=[chunk_id, repr(time.time()), *custom_ids])
        return _s(reply[0]), {_s(cid) for cid in reply[1:]}

    def chunk_end(self, job_id: str, chunk_id: str, task_id: str | None = None) -> str:
        """The chunk stopped running (a cancelling job may end here). With ``task_id`` its ledger entry
        goes too, when that copy is still the live one (shared/ledger.py ChunkLedger.done)."""
        return _s(self._chunk_end(keys=[*_job_keys(job_id), keys.job_ledger(job_id), keys.job_ledger_seen(job_id)],
                                  args=[chunk_id, repr(time.time()), task_id or ""]))

    def record_results(self, job_id: str, results: Iterable[tuple[ItemResult, dict | None]],
                       counters: dict[str, float] | None = None, end: tuple[str, str] | None = None, *,
                       cache_entries: Sequence[tuple[str, str]] = (), cache_ttl: int = 0) -> int:
        """Store results (with the inputs of failed ones, for retry). Returns how many were new;
        -1 when the job no longer exists (expired). ``counters``: the items' numbers for the job's
        tracking aggregate (shared.tracking.take), added in the same call. ``end`` (chunk id, task id):
        the chunk ends in the same call too (:meth:`chunk_end`), unless the job no longer exists.
        ``cache_entries``: (key, value) strings SET with ``cache_ttl`` in the same round trip (the
        item-level result cache, workers/item_cache.py)."""
        args: list[str] = [repr(time.time()), "0"]
        n = 0
        for result, inputs in results:
            failed = result.status == "failed" and inputs is not None
            failed_inputs = json.dumps(inputs, ensure_ascii=False) if failed else ""
            error_type = result.error.type if result.status == "failed" and result.error is not None else ""
            args += [result.custom_id, result.status, result.to_json(), failed_inputs, error_type]
            n += 1
        if n == 0 and not counters and end is None:
            return 0
        args[1] = str(n)
        args.append(str(len(counters or ())))
        for name, value in (counters or {}).items():
            args += [name, repr(float(value))]
        job_keys = [*_job_keys(job_id), keys.job_tracking(job_id)]
        script, script_keys, script_args = self._record, job_keys, args
        if end is not None:
            script = self._record_and_end
            script_keys = [*job_keys, keys.job_ledger(job_id), keys.job_ledger_seen(job_id)]
            script_args = [*args, *end]
        if cache_entries:
            return self._record_and_set(script, script_keys, script_args, cache_entries, cache_ttl)
        return int(script(keys=script_keys, args=script_args))

    def _record_and_set(self, script, job_keys: list[str], args: list[str], entries: Sequence[tuple[str, str]],
                        ttl: int) -> int:
        """Some SETs and the record script in one round trip: EVALSHA in a plain pipeline (a Script
        object there would add a SCRIPT EXISTS round trip); a Redis that lost the script (restarted)
        is sent it once more. The SETs go first, so whoever sees a result (or the job's end) also
        sees its entry. A failed SET is a cache entry missing, never a failed record."""
        with self.r.pipeline(transaction=False) as p:
            for key, value in entries:
                p.set(key, value, ex=max(1, ttl))
            p.evalsha(script.sha, len(job_keys), *job_keys, *args)
            first = p.execute(raise_on_error=False)[-1]
        if isinstance(first, redis.exceptions.NoScriptError):
            return int(script(keys=job_keys, args=args))
        if isinstance(first, Exception):
            raise first
        return int(first)

    def existing_results(self, job_id: str, custom_ids: list[str]) -> set[str]:
        """custom_ids that already have a result (a redelivered chunk skips them)."""
        if not custom_ids:
            return set()
        present = self.r.hmget(keys.job_results(job_id), custom_ids)
        return {cid for cid, v in zip(custom_ids, present, strict=True) if v is not None}

    def mark_worker_ready(self, hostname: str, queues: list[str], pid: int, ttl_seconds: int = 86400) -> None:
        key = keys.worker(hostname)
        self.r.hset(key, mapping={"queues": ",".join(queues), "pid": pid, "ready_at": repr(time.time())})
        self.r.expire(key, ttl_seconds)

    def remove_worker(self, hostname: str) -> None:
        self.r.delete(keys.worker(hostname))

    def worker_info(self, hostname: str) -> dict[str, str] | None:
        raw = self.r.hgetall(keys.worker(hostname))
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    # --- reading -------------------------------------------------------------------------
    def state(self, job_id: str) -> JobState | None:
        st = self.r.hget(keys.job(job_id), "status")
        return JobState(_s(st)) if st else None

    def spec(self, job_id: str) -> JobSpec:
        raw = self.r.hget(keys.job(job_id), "spec")
        if raw is None:
            raise JobNotFound(job_id)
        return JobSpec.model_validate_json(raw)

    def status(self, job_id: str) -> JobStatus:
        key = keys.job(job_id)
        with self.r.pipeline(transaction=True) as p:
            p.hgetall(key)
            p.ttl(key)
            p.zcard(keys.job_ledger_seen(job_id))
            p.hgetall(keys.job_tracking(job_id))
            raw, ttl, outstanding, tracking = p.execute()
        if not raw:
            raise JobNotFound(job_id)
        return _status_from_hash(job_id, raw, ttl, outstanding, tracking)

    def list_jobs(self, *, statuses: Iterable[str] | None = None, kind: str | None = None,
                  limit: int = 50) -> list[JobStatus]:
        """The newest jobs first (at most ``limit``), optionally only those in ``statuses`` / of ``kind``.

        Reads the index in pages with one pipeline per page; entries whose job expired are removed."""
        wanted = {JobState(s).value for s in statuses} if statuses else None
        out: list[JobStatus] = []
        index, start, page = keys.jobs_index(), 0, max(limit, 50)
        while len(out) < limit:
            ids = [_s(j) for j in self.r.zrevrange(index, start, start + page - 1)]  # type: ignore[arg-type]
            if not ids:
                break
            start += len(ids)
            with self.r.pipeline(transaction=False) as p:
                queue_list_page(p, ids)
                replies = p.execute()
            gone = collect_listed(ids, replies, wanted, kind, out, limit)
            if gone:
                self.r.zrem(index, *gone)
                start -= len(gone)
        return out

    def mark_waiting_for_backend(self, job_id: str, until: float, targets: list[str]) -> None:
        """The job's items wait for a circuit breaker to half-open (shown by status until then)."""
        self.r.hset(keys.job(job_id), "waiting_for_backend",
                    json.dumps({"until": until, "targets": sorted(set(targets))}))

    def cancel(self, job_id: str) -> JobState:
        st = _s(self._cancel(keys=_job_keys(job_id), args=[repr(time.time())]))
        if st == "missing":
            raise JobNotFound(job_id)
        return JobState(st)

    def result_count(self, job_id: str) -> int:
        return int(self.r.llen(keys.job_order(job_id)))

    def subscribe(self, job_id: str) -> Any:
        """A subscription to the job's wake-ups. Opened BEFORE its chunks are sent, iter_results(sub=)
        needs no read to learn that a one-item job ended (its end message carries the result). The
        SUBSCRIBE is sent without waiting for its reply, on an idle subscription's open connection
        when there is one (a new connection costs a TCP connect and a HELLO handshake)."""
        with self._subs_lock:
            sub = self._idle_subs.pop() if self._idle_subs else None
        if sub is None:
            sub = self.r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(keys.job(job_id))
        return sub

    def release(self, sub: Any, job_id: str) -> None:
        """Done with :meth:`subscribe`'s subscription: kept for the next wait (up to a few idle ones),
        its late messages ignored (wake_up reads only its own job's channel)."""
        try:
            sub.unsubscribe(keys.job(job_id))
        except redis.RedisError:
            sub.close()
            return
        with self._subs_lock:
            if len(self._idle_subs) < IDLE_SUBSCRIPTIONS:
                self._idle_subs.append(sub)
                return
        sub.close()

    def iter_results(self, job_id: str, *, timeout: float | None = None, follow: bool = True,
                     page: int = 500, poll_min: float = 0.01, poll_max: float = 0.25,
                     sub: Any = None) -> Iterator[dict]:
        """Result dicts in arrival order, as they arrive; ends when the job has ended and every
        result was read (or at once after the stored ones when ``follow`` is False).

        ``sub``: :meth:`subscribe` made before the job was sent (closed here). Raises JobTimeout after
        ``timeout`` seconds, JobNotFound if the job does not exist.
        """
        order_key, results_key, job_key = keys.job_order(job_id), keys.job_results(job_id), keys.job(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        offset, wait = 0, poll_min
        read = sub is None or not follow  # subscribed before the send: wait for the first message
        if read and not self.r.exists(job_key):
            if sub is not None:
                self.release(sub, job_id)
            raise JobNotFound(job_id)
        # pub/sub wake-up (the record script PUBLISHes on the job key's name); polling stays the fallback
        try:
            while True:
                if read:
                    # Read the state BEFORE the page (one round trip, in order): the final result and the
                    # final state are written by one script, so a terminal state seen here means every
                    # result is already listed.
                    with self.r.pipeline(transaction=False) as p:
                        p.hget(job_key, "status")
                        p.lrange(order_key, offset, offset + page - 1)
                        st, ids = p.execute()
                    if ids:
                        for raw in self.r.hmget(results_key, ids):
                            if raw is not None:
                                yield json.loads(raw)
                        offset += len(ids)
                        wait = poll_min
                        continue
                    if st is None:
                        raise JobNotFound(job_id)
                    if JobState(_s(st)) in TERMINAL_STATES or not follow:
                        return
                read = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(f"job {job_id} did not finish within {timeout}s ({offset} results so far)")
                pause = wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic()))
                if sub is None:
                    try:
                        sub = self.subscribe(job_id)
                        continue  # re-read: a result may have landed before the subscription
                    except redis.RedisError:
                        sub = False
                if sub:
                    try:
                        note = wake_up(sub, job_key, pause)
                    except redis.RedisError:
                        sub.close()
                        sub = False
                    else:
                        if offset == 0 and note is not None and note.row is not None:
                            yield note.row  # a one-item job ended: the message is its result
                            return
                else:
                    time.sleep(pause)
                wait = min(poll_max, wait * 1.5)
        finally:
            if sub:
                self.release(sub, job_id)

    def results_page(self, job_id: str, offset: int, limit: int) -> tuple[list[dict], int, JobState, bool]:
        """One page of results in arrival order from position ``offset`` (a stable cursor: the order
        list only grows). Returns (rows, next offset, job state, end) where ``end`` means the job has
        ended and nothing is left after this page. JobNotFound if the job does not exist."""
        order_key = keys.job_order(job_id)
        st = self.r.hget(keys.job(job_id), "status")  # before the page: see iter_results
        if st is None:
            raise JobNotFound(job_id)
        ids = self.r.lrange(order_key, offset, offset + limit - 1) if limit > 0 else []
        raws = self.r.hmget(keys.job_results(job_id), ids) if ids else []
        rows = [json.loads(raw) for raw in raws if raw is not None]
        state, nxt = JobState(_s(st)), offset + len(ids)
        return rows, nxt, state, state in TERMINAL_STATES and nxt >= self.result_count(job_id)

    def get_result(self, job_id: str, custom_id: str) -> dict | None:
        raw = self.r.hget(keys.job_results(job_id), custom_id)
        return None if raw is None else json.loads(raw)

    def iter_failed_items(self, job_id: str, count: int = 500) -> Iterator[Item]:
        """Failed items with their original inputs (streamed with HSCAN)."""
        for cid, raw in self.r.hscan_iter(keys.job_failed_inputs(job_id), count=count):
            yield Item(custom_id=_s(cid), inputs=json.loads(raw))

    def failed_count(self, job_id: str) -> int:
        return int(self.r.hlen(keys.job_failed_inputs(job_id)))
