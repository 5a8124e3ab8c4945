"""A job's --max-cost across every worker: live items are admitted one by one, economy batches reserve.

The record script in shared/store.py sums each result's cost and ends the job as budget_exceeded
at the ceiling; that alone would let every item already in flight overshoot it. So a live item
of a budgeted job starts only after ``Admissions.admit``: one Lua call that lets it run while
spent + (items in flight + 1) x the job's average item cost fits under the ceiling (the first
item, and any item when none is in flight, always runs, so the job always reaches its end).
Items in flight are leased tokens (a dead worker's expire). A provider batch is paid as a whole once
submitted, so the worker reserves its estimated cost against the job's ceiling in one Lua call
(atomic across workers) and submits only when the reservation fits; the reservation is released
when the batch's real costs have been recorded.
"""

from __future__ import annotations

import time

import redis

from shared import keys

# KEYS: job ; ARGV: amount, now. 1 = reserved; 0 = refused (the job is now budget_exceeded)
_RESERVE = """
local f = redis.call('HMGET', KEYS[1], 'status', 'cost_usd', 'max_cost_usd', 'economy_reserved_usd')
if not f[1] then return -1 end
local ceiling = tonumber(f[3] or '')
local amount = tonumber(ARGV[1])
if ceiling and tonumber(f[2] or '0') + tonumber(f[4] or '0') + amount > ceiling then
  if f[1] == 'queued' or f[1] == 'running' then
    redis.call('HSET', KEYS[1], 'status', 'budget_exceeded', 'finished_at', ARGV[2])
  end
  return 0
end
redis.call('HINCRBYFLOAT', KEYS[1], 'economy_reserved_usd', amount)
return 1
"""


# KEYS: job, inflight ; ARGV: token, now, lease seconds. 'run', 'wait', or the job state that stops it
_ADMIT = """
local f = redis.call('HMGET', KEYS[1], 'status', 'cost_usd', 'max_cost_usd', 'succeeded', 'failed')
if not f[1] then return 'missing' end
if f[1] ~= 'queued' and f[1] ~= 'running' then return f[1] end
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local ceiling = tonumber(f[3] or '')
local inflight = redis.call('ZCARD', KEYS[2])
if ceiling and inflight > 0 then
  local spent, done = tonumber(f[2] or '0'), tonumber(f[4] or '0') + tonumber(f[5] or '0')
  if done > 0 and spent + (inflight + 1) * spent / done > ceiling then return 'wait' end
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[3])) + 60)
return 'run'
"""


class Admissions:
    """Admission of a budgeted live job's items (see the module docstring)."""

    def __init__(self, client: redis.Redis, lease_seconds: float):
        self.r = client
        self.lease = lease_seconds
        self._admit = client.register_script(_ADMIT)

    def admit(self, job_id: str, token: str) -> str:
        return _text(self._admit(keys=[keys.job(job_id), keys.job_budget_inflight(job_id)],
                                 args=[token, repr(time.time()), repr(self.lease)]))

    def release(self, job_id: str, tokens: list[str]) -> None:
        if tokens:
            self.r.zrem(keys.job_budget_inflight(job_id), *tokens)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Reservations:
    def __init__(self, client: redis.Redis):
        self.r = client
        self._reserve = client.register_script(_RESERVE)

    def reserve(self, job_id: str, amount: float) -> bool:
        """True when ``amount`` fits under the job's ceiling with what is spent and reserved."""
        return int(self._reserve(keys=[keys.job(job_id)], args=[repr(max(0.0, amount)), repr(time.time())])) == 1

    def release(self, job_id: str, amount: float) -> None:
        if amount > 0 and self.r.exists(keys.job(job_id)):
            self.r.hincrbyfloat(keys.job(job_id), "economy_reserved_usd", -amount)
