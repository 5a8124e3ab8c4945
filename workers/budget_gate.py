"""A budgeted live job's chunk starts each item only when shared/budget.py admits it.

Wraps the chunk's state watch: ``stopped()`` (asked before every item) is also "not admitted". An
item that must wait for the items in flight to settle is handed back to the queue with a short
countdown (never counted as a requeue), so no worker slot idles on the ceiling; the job ends as
budget_exceeded once a result reaches it, or admits the item again when the average allows.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from shared.budget import Admissions


class Watch(Protocol):
    state: str | None

    def stopped(self) -> bool: ...


class BudgetGate:
    def __init__(self, watch: Watch, admissions: Admissions, job_id: str):
        self.watch, self.admissions, self.job_id = watch, admissions, job_id
        self.waiting = False  # an item was refused: the rest of the chunk goes back to the queue
        self._tokens: list[str] = []

    @property
    def state(self) -> str | None:
        return self.watch.state

    def stopped(self) -> bool:
        if self.waiting or self.watch.stopped():
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

    def item_done(self) -> None:
        """One admitted item has its result stored: it no longer counts as in flight."""
        if self._tokens:
            self.admissions.release(self.job_id, [self._tokens.pop()])

    def close(self) -> None:
        self.admissions.release(self.job_id, self._tokens)
        self._tokens = []
