"""The producer's job logic without I/O, shared by the sync Client, the AsyncClient and the REST API.

Why one module: a job submitted from code, from asyncio or over HTTP must be checked the same way
(same messages, same ``where``), built into the same JobSpec and cut into the same chunk messages;
only the Redis and broker calls around it differ (producers/client.py, producers/async_client.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from producers import jsonl
from producers.program_check import check_program
from shared import keys, webhooks
from shared.config import BackendType, Settings, UnifiedConfig
from shared.errors import BadInput, ConfigurationError, TidyqError
from shared.jobs import Item, JobKind, JobSpec, JobState, Target, new_job_id, parse_backend, signature_fields


class JobFailed(TidyqError):
    """A predict job's item failed; ``error`` is the result's {"type", "message"}."""

    def __init__(self, job_id: str, error: dict | None, status: str):
        self.job_id, self.error, self.status = job_id, error or {}, status
        detail = f"{self.error.get('type')}: {self.error.get('message')}" if error else status
        super().__init__(f"job {job_id} {status}: {detail}")


def resolve_backend(settings: Settings, backend: str | None, model: str | None) -> str:
    """'auto' (the default) is resolved here, from this environment, so the job can be routed."""
    name = parse_backend(backend or settings.backend)
    if name != BackendType.AUTO.value:
        return name
    from shared.backends.auto import choose_backend

    try:
        return choose_backend(UnifiedConfig(backend=BackendType.AUTO, model=model).resolved(settings)).value
    except ConfigurationError as exc:
        raise BadInput(f"{exc} (or pass --backend mock|direct|bedrock|gateway)", where="backend") from None


def build_target(settings: Settings, signature: str | None, program: str | None, backend: str | None,
                 model: str | None, fallback: Iterable[str | Target] | None, webhook_url: str | None = None) -> dict:
    """What the job runs on: signature or program, backend, model, fallbacks, webhook (all checked)."""
    if signature and program:
        raise BadInput("give a signature or a program, not both", where="signature")
    if not signature and not program:
        raise BadInput("a signature (e.g. 'question -> answer') or a program URI is required", where="signature")
    input_fields = signature_fields(signature)[0] if signature else check_program(program, settings)
    backend = resolve_backend(settings, backend, model)
    fallbacks: list[Target] = []
    for f in [fallback] if isinstance(fallback, str) else fallback or ():
        try:
            fallbacks.extend(Target.parse_list(f))
        except (ConfigurationError, TypeError) as exc:
            raise BadInput(f"expected BACKEND[:MODEL] ({exc})", where=f"fallback {f!r}") from None
    return {"signature": signature, "program": program, "backend": backend, "model": model or None,
            "fallback": fallbacks, "input_fields": input_fields,
            "webhook_url": webhooks.job_webhook_url(webhook_url, settings)}


def deadline_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise BadInput(f"deadline must be a positive number of seconds, got {value!r}", where="deadline_seconds")
    return float(value)


def item_cache_flag(value: object) -> bool:
    """Whether the job reads and writes the item-level result cache (``--no-item-cache`` is False)."""
    if not isinstance(value, bool):
        raise BadInput(f"item_cache is true or false, got {value!r}", where="item_cache")
    return value


def check_size(item: Item, where: str, settings: Settings) -> None:
    """The per-item limit the file reader and the worker apply, also for rows given in code."""
    size = len(json.dumps(item.model_dump(mode="json"), ensure_ascii=False).encode())
    if size > settings.max_item_bytes:
        raise BadInput(f"item is {size} bytes; the limit is {settings.max_item_bytes} (TIDYQ_MAX_ITEM_BYTES)",
                       where=where)


def check_count(total: int, where: str, settings: Settings) -> None:
    if total == 0:
        raise BadInput("no items", where=where)
    if total > settings.max_items_per_job:
        raise BadInput(f"{total} items; the limit is {settings.max_items_per_job} (TIDYQ_MAX_ITEMS_PER_JOB)",
                       where=where)


PREDICT_ITEM_ID = "1"  # the custom_id of a predict job's one item


def predict_item(target: dict, inputs: Any, settings: Settings, *, where: str = "inputs") -> Item:
    """The one item of a predict job."""
    if not isinstance(inputs, dict):
        raise BadInput("inputs must be a dict of input field -> value", where=where)
    item = jsonl.item_from_row({"custom_id": PREDICT_ITEM_ID, "inputs": inputs}, where=where, line_no=None,
                               input_fields=target["input_fields"], signature=target["signature"])
    check_size(item, where, settings)
    return item


def batch_items(rows: Iterable[Any], target: dict, settings: Settings, *, where: str = "rows") -> list[Item]:
    """Rows ``{"custom_id", "inputs"}`` (or Items) checked one by one: fields, unique ids, sizes, count."""
    if isinstance(rows, (str, bytes, dict)) or not isinstance(rows, Iterable):
        raise BadInput("expected a list of {'custom_id': ..., 'inputs': {...}} objects", where=where)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows, start=1):
        at = f"{where}[{index - 1}]"
        if isinstance(row, Item):
            row = row.model_dump(include={"custom_id", "inputs"})  # what a user gives; twins are ours
        if not isinstance(row, dict):
            raise BadInput(f"expected a dict like {{'custom_id': ..., 'inputs': {{...}}}}, got {type(row).__name__}",
                           where=at)
        item = jsonl.item_from_row(row, where=at, line_no=index, input_fields=target["input_fields"],
                                   signature=target["signature"])
        if item.custom_id in seen:
            raise BadInput(f"duplicate custom_id {item.custom_id!r} (first in {where}[{seen[item.custom_id]}])",
                           where=f"{at}: field 'custom_id'")
        seen[item.custom_id] = index - 1
        check_size(item, at, settings)
        items.append(item)
    check_count(len(items), where, settings)
    return items


def retry_target(old: JobSpec) -> dict:
    """A retry job runs on the original job's program and targets."""
    return {"signature": old.signature, "program": old.program, "backend": old.backend, "model": old.model,
            "fallback": old.fallback, "input_fields": None, "webhook_url": old.webhook_url,
            "tenant": old.tenant, "item_cache": old.item_cache}


def new_spec(kind: JobKind, target: dict, total: int, settings: Settings, idempotency_key: str | None, *,
             chunk_size: int | None = None, retry_of: str | None = None) -> JobSpec:
    size = chunk_size or (settings.economy_chunk_size if target.get("mode") == "economy" else
                          settings.chunk_size if target["backend"] == "mock" else settings.chunk_size_io)
    if size < 1:
        raise BadInput("chunk size must be >= 1", where="chunk_size")
    now = time.time()
    deadline = target.get("deadline_seconds")
    return JobSpec(id=new_job_id(), kind=kind, signature=target["signature"], program=target["program"],
                   backend=target["backend"], model=target["model"], fallback=target["fallback"], total=total,
                   chunk_size=size, ttl_seconds=settings.result_ttl_seconds, created_at=now,
                   idempotency_key=idempotency_key, retry_of=retry_of, webhook_url=target.get("webhook_url"),
                   tenant=target.get("tenant"), max_cost_usd=target.get("max_cost_usd"),
                   mode=target.get("mode", "live"), item_cache=target.get("item_cache", True),
                   deadline=now + deadline if deadline else None)


def chunk_payloads(spec: JobSpec, items: Iterator[Item]) -> Iterator[dict]:
    """The chunk task messages of a job, ``spec.chunk_size`` items each, in order."""
    job = spec.model_dump(mode="json", exclude_none=True)  # unset new fields stay out: older workers accept it
    index = 0
    while chunk := list(islice(items, spec.chunk_size)):
        yield {"job": job, "chunk": index, "items": [it.model_dump(mode="json") for it in chunk], "requeues": 0}
        index += 1


def idempotency_key_name(idempotency_key: str) -> str:
    return keys.idempotency(hashlib.sha256(idempotency_key.encode()).hexdigest())


def idempotency_ttl(spec: JobSpec, settings: Settings) -> int:
    return settings.idempotency_ttl_seconds or spec.ttl_seconds


def predict_outputs(job_id: str, rows: list[dict], state: JobState | None) -> dict:
    """The outputs of a single-item job's results, or JobFailed (failed item, or ended without one)."""
    if rows and rows[0]["status"] == "succeeded":
        return rows[0]["outputs"]
    raise JobFailed(job_id, rows[0]["error"] if rows else None, state.value if state else "missing")
