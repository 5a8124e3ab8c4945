"""The queue's data: job spec, item, per-item result, job status, chunk payload (pydantic).

These models are the wire format between producers and workers (Celery JSON messages) and the
shape of what the store keeps, so both sides validate the same way: the producer refuses bad
input before anything is enqueued, the worker validates again and turns a poison message into
failed items instead of crashing.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from enum import Enum
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.config import BackendType, Target
from shared.errors import BadInput


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"  # --max-cost reached: no new chunks, the results so far kept

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.BUDGET_EXCEEDED})


class JobKind(str, Enum):
    PREDICT = "predict"
    BATCH = "batch"
    OPTIMIZE = "optimize"


def new_job_id() -> str:
    return uuid.uuid4().hex


def parse_backend(value: str, *, allow_auto: bool = True) -> str:
    try:
        b = BackendType.parse(value)
    except Exception:
        names = ", ".join(x.value for x in BackendType if allow_auto or x is not BackendType.AUTO)
        raise BadInput(f"unknown backend {value!r}; expected one of: {names}", where="backend") from None
    if b is BackendType.AUTO and not allow_auto:
        raise BadInput("backend 'auto' must be resolved to a concrete backend before enqueueing", where="backend")
    return b.value


class JobSpec(BaseModel):
    """Everything a worker needs to run a job's items; travels inside every chunk message.

    No credentials here: they live in the worker's environment.
    """

    model_config = ConfigDict(extra="forbid")
    id: str
    kind: JobKind
    signature: str | None = None
    program: str | None = None
    backend: str
    model: str | None = None
    fallback: list[Target] = Field(default_factory=list)
    deadline: float | None = None  # Unix time; items waiting for a backend (every breaker open) fail after it
    total: int = Field(ge=0)
    chunk_size: int = Field(ge=1)
    ttl_seconds: int = Field(ge=1)
    created_at: float
    idempotency_key: str | None = None
    retry_of: str | None = None
    webhook_url: str | None = None  # POSTed the signed status at the job's end (shared/webhooks.py)
    max_cost_usd: float | None = Field(default=None, gt=0)  # the job ends as budget_exceeded at this spend
    # False: this job neither reads nor writes the item-level result cache (shared/item_cache.py)
    item_cache: bool = True
    mode: Literal["live", "economy"] = "live"  # economy: through the provider's batch API (workers/economy_task.py)
    # who submitted it (the API token's tenant, or --tenant) and whose daily budget pays
    tenant: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("backend")
    @classmethod
    def _concrete_backend(cls, v: str) -> str:
        return parse_backend(v, allow_auto=False)

    def model_post_init(self, _ctx: Any) -> None:
        if self.kind is not JobKind.OPTIMIZE and not (self.signature or self.program):
            raise ValueError("a predict or batch job needs a signature or a program")

    @property
    def targets(self) -> list[Target]:
        return [Target(self.backend, self.model), *self.fallback]


class Item(BaseModel):
    """One input row: ``{"custom_id": "...", "inputs": {...}}``."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str = Field(min_length=1, max_length=512)
    inputs: dict[str, Any]
    # custom_ids of later rows with the same inputs: answered by this item's result (shared/dedupe.py)
    duplicates: list[str] = Field(default_factory=list)


class ErrorInfo(BaseModel):
    type: str
    message: str


class ItemResult(BaseModel):
    """One result line of the contract's result JSONL."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str
    status: Literal["succeeded", "failed"]
    outputs: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    backend: str | None = None
    model: str | None = None
    latency_ms: float = 0.0
    cached: bool = False
    attempts: int = 0
    skipped: list[dict[str, str]] = Field(default_factory=list)  # targets passed over: {"target", "reason"}
    cost_usd: float | None = None  # what this item's LM calls cost (shared/cost.py); None: price unknown
    economy: dict[str, Any] | None = None  # economy mode: {"batch_id"} or {"finished_live": why}

    def to_json(self) -> str:
        # ``skipped`` appears only when a fallback happened, ``economy`` only in economy mode: plain
        # results keep the contract's keys
        extra = {name for name, absent in (("skipped", not self.skipped), ("economy", self.economy is None)) if absent}
        data = self.model_dump(mode="json", exclude=extra or None)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def failure(cls, custom_id: str, exc_type: str, message: str, *, backend: str | None = None,
                model: str | None = None, latency_ms: float = 0.0, attempts: int = 0) -> ItemResult:
        return cls(custom_id=custom_id, status="failed", error=ErrorInfo(type=exc_type, message=message),
                   backend=backend, model=model, latency_ms=latency_ms, attempts=attempts)


class ChunkPayload(BaseModel):
    """The body of one chunk task. ``requeues`` counts trips back to the queue (RetryLater,
    soft time limit) so an item cannot bounce forever."""

    model_config = ConfigDict(extra="forbid")
    job: JobSpec
    chunk: int = Field(ge=0)
    items: list[Item]
    requeues: int = Field(default=0, ge=0)


class Counts(BaseModel):
    total: int = 0
    succeeded: int = 0
    failed: int = 0


class JobStatus(BaseModel):
    """What ``Job.status()`` and ``tidyq status`` return (as a dict / JSON)."""

    id: str
    kind: str
    status: JobState
    counts: Counts
    timestamps: dict[str, str | None]
    backend: str | None = None
    model: str | None = None
    signature: str | None = None
    program: str | None = None
    retry_of: str | None = None
    retried_by: str | None = None
    error: str | None = None
    expires_in_seconds: int | None = None
    progress: dict | None = None  # optimize jobs: phase, step, best score (shared/optimize.py)
    result: dict | None = None  # optimize jobs: model_uri, scores
    waiting_for_backend: dict | None = None  # {"until", "targets"} while every target's breaker is open
    webhooks: dict | None = None  # event -> delivery state {"event_id", "state", "attempts", ...}
    chunks_outstanding: int = 0  # chunks in the ledger: sent and not ended yet (shared/ledger.py)
    chunk_resends: int = 0  # chunks the sweeper sent again because the broker had lost them
    error_types: dict[str, int] = Field(default_factory=dict)  # failed items per error type, most first
    usage: dict[str, int | float] | None = None  # lm_calls, attempts, retries, tokens, cost_usd (shared.tracking)
    cost_usd: float = 0.0  # running total of the results' cost_usd (summed atomically as they are stored)
    max_cost_usd: float | None = None
    mode: str = "live"
    tenant: str | None = None
    provider_batches: list[dict] | None = None  # economy mode: [{"id", "status", "chunk", "items", ...}]
    economy_note: str | None = None  # economy mode: why some items ran live instead (e.g. a multi-stage program)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, tz=_dt.UTC).isoformat(timespec="milliseconds")


@lru_cache(maxsize=256)
def signature_fields(signature: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input field names, output field names) of a DSPy signature string; BadInput if invalid.

    DSPy is imported here, lazily, so status/results/cancel never pay for it.
    """
    if not isinstance(signature, str) or "->" not in signature:
        raise BadInput(f"bad signature {signature!r}: expected 'inputs -> outputs', e.g. 'question -> answer'",
                       where="signature")
    import dspy

    try:
        sig = dspy.ensure_signature(signature)
    except Exception as exc:  # DSPy raises ValueError/SyntaxError/TypeError for bad strings
        raise BadInput(f"bad signature {signature!r}: {exc}", where="signature") from None
    ins, outs = tuple(sig.input_fields), tuple(sig.output_fields)
    if not ins or not outs:
        raise BadInput(f"bad signature {signature!r}: needs at least one input and one output field",
                       where="signature")
    return ins, outs


def check_inputs(inputs: dict[str, Any], input_fields: tuple[str, ...] | None, signature: str | None,
                 where: str) -> None:
    """Unknown or missing input fields are refused with the field named. ``input_fields`` may also
    be a program's forward() parameters (shared.program_io.ProgramInputs)."""
    if input_fields is None:
        return
    if hasattr(input_fields, "check"):
        input_fields.check(inputs, where)
        return
    for name in inputs:
        if name not in input_fields:
            raise BadInput(f"unknown input field {name!r} for signature {signature!r} "
                           f"(expected: {', '.join(input_fields)})", where=f"{where}: field 'inputs.{name}'")
    for name in input_fields:
        if name not in inputs:
            raise BadInput(f"missing input field {name!r} for signature {signature!r}",
                           where=f"{where}: field 'inputs.{name}'")
