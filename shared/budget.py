"""A job's --max-cost for work paid up front: an economy batch reserves its estimate first.

Live jobs need no reservation (the record script in shared/store.py sums each result's cost and
ends the job as budget_exceeded at the ceiling). A provider batch is paid as a whole once
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
