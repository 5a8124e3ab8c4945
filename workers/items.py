"""What every path that runs one item shares: input checks and the item's result.

The threaded path (workers/chunk.py ``run_item``) and DSPy's async path (workers/async_items.py
``arun_item``) differ only in how the module is called; the checks, the failed and succeeded
results and their tracking are these functions, so both paths record the same result.
"""

from __future__ import annotations

import json
import time

from shared import tracking
from shared.cost import item_cost
from shared.errors import TidyqError, error_type_name
from shared.fallback import skipped_of
from shared.jobs import Item, ItemResult, JobSpec
from shared.program_uri import is_import_path
from shared.programs import resolve_program
from shared.steps import stats
from shared.telemetry import redact
from shared.user_code import raised_in_user_code
from workers.requeue import ProviderStillFailing, transient_cause

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
    """The failed result of an item whose prediction raised; raises ProviderStillFailing instead when
    the provider's transient trouble outlasted the in-place retries and no breaker turned it into
    AllTargetsOpen (the item goes back to the queue: workers/requeue.py)."""
    cause = transient_cause(exc)
    if cause is not None:
        raise ProviderStillFailing(cause) from exc
    call = stats.of_error(exc)  # a failed prediction's calls and attempts still count
    message = error_message(exc)
    where = None if isinstance(exc, TidyqError) else raised_in_user_code(exc, spec.program)
    if where:  # an exception of the user's own code (forward(), a tool): say where it was raised
        message = f"{message} (raised at {where})"
    result = ItemResult.failure(item.custom_id, error_type_name(exc), message, backend=spec.backend,
                                model=spec.model, latency_ms=round((time.perf_counter() - started) * 1000, 3),
                                attempts=call.attempts if call is not None else 0)
    result.skipped = skipped_of(exc)
    return _finish(spec, result, call, served)


def item_succeeded(spec: JobSpec, item: Item, module, outputs: dict, call, started: float, served) -> ItemResult:
    backend, model = spec.backend, module.wrapper.model
    if call.served_by and call.skipped:  # a fallback target answered
        backend, _, model = call.served_by.partition(":")
    result = ItemResult(
        custom_id=item.custom_id, status="succeeded", outputs=outputs,
        backend=backend, model=model or None, cached=call.cached, skipped=list(call.skipped),
        latency_ms=round((time.perf_counter() - started) * 1000, 3), attempts=call.attempts)
    return _finish(spec, result, call, served)


def _finish(spec: JobSpec, result: ItemResult, call, served) -> ItemResult:
    result.cost_usd = item_cost(call, result.backend)  # failed items' calls are priced too
    tracking.record_item(spec.id, result, call, served)
    return result
