"""A budgeted live job's chunk starts each item only when shared/budget.py admits it.

Budgeted: a --max-cost job, or a job of a tenant (its results' cost is charged to the tenant's day
one by one, and the tenant's daily budget is checked before every item).

Wraps the chunk's state watch: ``stopped()`` (asked before every item) is also "not admitted". An
item that must wait for the items in flight to settle is handed back to the queue with a short
countdown (never counted as a requeue), so no worker slot idles on the ceiling; the job ends as
budget_exceeded once a result reaches it, or admits the item again when the average allows.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from shared.budget import Admissions, TenantBudgets


class Watch(Protocol):
    state: str | None

    def stopped(self) -> bool: ...


class BudgetGate:
    def __init__(self, watch: Watch, admissions: Admissions, job_id: str, *, tenant: str | None = None,
                 tenants: TenantBudgets | None = None):
        self.watch, self.admissions, self.job_id = watch, admissions, job_id
        self.tenant, self.tenants = tenant, tenants
        self.waiting = False  # an item was refused: the rest of the chunk goes back to the queue
        self._tokens: list[str] = []

    @property
    def state(self) -> str | None:
        return self.watch.state

    def stopped(self) -> bool:
        if self.waiting or self.watch.stopped():
            return True
        if self.tenant and self.tenants and self.tenants.over(self.tenant):
            self.watch.state = self.tenants.end_job(self.job_id)
            return True
        token = uuid.uuid4().hex
        verdict = self.admissions.admit(self.job_id, token)
        if verdict == "run":
            self._tokens.append(token)
            return False
        if verdict == "wait":
            self.waiting = True
        else:
            self.watch.state = verdict
        return True

    def item_done(self, cost_usd: float | None = None) -> None:
        """One admitted item has its result stored (``cost_usd`` when it was new): it no longer
        counts as in flight, and its cost goes to the tenant's day."""
        if cost_usd and self.tenant and self.tenants:
            self.tenants.charge(self.tenant, self.job_id, cost_usd)
        if self._tokens:
            self.admissions.release(self.job_id, [self._tokens.pop()])

    def close(self) -> None:
        self.admissions.release(self.job_id, self._tokens)
        self._tokens = []
