"""What every path that runs one item shares: input checks and the item's result.

The threaded path (workers/chunk.py ``run_item``) and DSPy's async path (workers/async_items.py
``arun_item``) differ only in how the module is called; the checks, the failed and succeeded
results and their tracking are these functions, so both paths record the same result.
"""

from __future__ import annotations

import json
import time

from shared import tracking
from shared.fallback import skipped_of
from shared.jobs import Item, ItemResult, JobSpec
from shared.program_uri import is_import_path
from shared.programs import resolve_program
from shared.telemetry import redact

# Celery's time-limit/termination exceptions must cross every except-Exception on the way out.
PASS_THROUGH = ("SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated", "WorkerLostError")


def is_pass_through(exc: BaseException) -> bool:
    return type(exc).__name__ in PASS_THROUGH or not isinstance(exc, Exception)


def error_message(exc: BaseException) -> str:
    return redact(str(exc) or type(exc).__name__)[:2000]


def check_item(spec: JobSpec, item: Item, max_item_bytes: int) -> ItemResult | None:
    """A failed result for inputs that are not JSON or too large, else None."""
    try:
        size = len(json.dumps(item.inputs, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        return ItemResult.failure(item.custom_id, "BadInput", f"inputs are not JSON: {exc}", backend=spec.backend,
                                  model=spec.model)
    if size > max_item_bytes:
        return ItemResult.failure(item.custom_id, "BadInput", f"item is {size} bytes; the limit is {max_item_bytes}",
                                  backend=spec.backend, model=spec.model)
    return None


def served_version(spec: JobSpec, item: Item):
    return resolve_program(spec.program, item.custom_id) if spec.program and not is_import_path(spec.program) else None


def item_failed(spec: JobSpec, item: Item, exc: BaseException, started: float, served) -> ItemResult:
    result = ItemResult.failure(item.custom_id, type(exc).__name__, error_message(exc), backend=spec.backend,
                                model=spec.model, latency_ms=round((time.perf_counter() - started) * 1000, 3))
    result.skipped = skipped_of(exc)
    tracking.record_item(spec.id, result, None, served)
    return result


def item_succeeded(spec: JobSpec, item: Item, module, outputs: dict, call, started: float, served) -> ItemResult:
    backend, model = spec.backend, module.wrapper.model
    if call.served_by and call.skipped:  # a fallback target answered
        backend, _, model = call.served_by.partition(":")
    result = ItemResult(
        custom_id=item.custom_id, status="succeeded", outputs=outputs,
        backend=backend, model=model or None, cached=call.cached, skipped=list(call.skipped),
        latency_ms=round((time.perf_counter() - started) * 1000, 3), attempts=call.attempts)
    tracking.record_item(spec.id, result, call, served)
    return result


