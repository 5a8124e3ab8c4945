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

Per-tenant daily budgets (``--tenant``, ``TIDYQ_TENANT_BUDGETS``) are kept per UTC day in Redis:
the worker charges each stored result's cost to its tenant's day (``TenantBudgets.charge``, one
HINCRBYFLOAT per key, so concurrent workers never lose an update) and checks the tenant's total
before each item; a tenant over its budget ends its running jobs as budget_exceeded and new
submits are refused.
"""

from __future__ import annotations

import datetime as _dt
import time

import redis

from shared import keys
from shared.config import Settings

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


# KEYS: job ; ARGV: now. The job ends as budget_exceeded unless it has already ended.
_EXCEED = """
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' or st == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'budget_exceeded', 'finished_at', ARGV[1])
  return 'budget_exceeded'
end
return st or 'missing'
"""

TENANT_SPEND_TTL_SECONDS = 8 * 24 * 3600


def utc_day(ts: float | None = None) -> str:
    return _dt.datetime.fromtimestamp(time.time() if ts is None else ts, tz=_dt.UTC).strftime("%Y-%m-%d")


class TenantBudgets:
    """Spend per tenant and UTC day, and the daily budgets of TIDYQ_TENANT_BUDGETS."""

    def __init__(self, client: redis.Redis, budgets: dict[str, float], default: float | None = None):
        self.r, self.budgets, self.default = client, budgets, default
        self._exceed = client.register_script(_EXCEED)

    def budget(self, tenant: str) -> float | None:
        return self.budgets.get(tenant, self.default)

    def charge(self, tenant: str, job_id: str, amount: float, day: str | None = None) -> float:
        """Add ``amount`` to the tenant's day; returns the day's new total."""
        key = keys.tenant_spend(tenant, day or utc_day())
        with self.r.pipeline(transaction=True) as p:
            p.hincrbyfloat(key, "total", amount)
            p.hincrbyfloat(key, f"job:{job_id}", amount)
            p.expire(key, TENANT_SPEND_TTL_SECONDS)
            p.sadd(keys.tenants_index(), tenant)
            total = p.execute()[0]
        return float(total)

    def spent(self, tenant: str, day: str | None = None) -> float:
        return float(self.r.hget(keys.tenant_spend(tenant, day or utc_day()), "total") or 0.0)

    def over(self, tenant: str) -> bool:
        budget = self.budget(tenant)
        return budget is not None and self.spent(tenant) >= budget

    def end_job(self, job_id: str) -> str:
        return _text(self._exceed(keys=[keys.job(job_id)], args=[repr(time.time())]))

    def report(self, tenant: str | None = None, day: str | None = None) -> list[dict]:
        """Spend per tenant (and per job) on ``day``, with each tenant's budget."""
        day = day or utc_day()
        names = [tenant] if tenant else sorted(_text(t) for t in self.r.smembers(keys.tenants_index()))
        rows = []
        for name in names:
            raw = {_text(k): float(v) for k, v in self.r.hgetall(keys.tenant_spend(name, day)).items()}
            rows.append({"tenant": name, "day": day, "spent_usd": round(raw.pop("total", 0.0), 9),
                         "budget_usd": self.budget(name),
                         "jobs": {k.removeprefix("job:"): round(v, 9) for k, v in sorted(raw.items())}})
        return rows


def check_day(day: str | None, *, where: str = "--day") -> str | None:
    """``day`` if it is None or a YYYY-MM-DD date (`tidyq budget --day`, GET /budget?day=), else a BadInput."""
    from shared.errors import BadInput

    if day is not None:
        try:
            _dt.date.fromisoformat(day)
        except ValueError:
            raise BadInput(f"expected a date like 2026-12-01, got {day!r}", where=where) from None
    return day


def tenant_budgets(client: redis.Redis, settings: Settings) -> TenantBudgets:
    return TenantBudgets(client, settings.tenant_budgets, settings.tenant_daily_budget_usd)
