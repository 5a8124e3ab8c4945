"""A chunk's I/O-bound items as coroutines on DSPy's async path, on the process's event loop.

Why: a thread per call in flight tops out at a few dozen on 2 cores, and a 1 s provider with a
150 requests/s limit needs ~150 calls in flight. Here each item is ``module.acall`` (or
``dspy.asyncify`` for a program without its own async forward, shared/wrapper.py) on the one
event loop of this worker process (workers/runtime.py ``event_loop``); the provider calls go
through the async twins of the same steps (shared/steps/async_steps.py) and each target's
adaptive concurrency gate (shared/concurrency.py), so hundreds are in flight per process.

The chunk runner (workers/chunk.py) keeps its loop: it submits items here and waits on the
concurrent futures with the same cancel checks, soft time limit and lease renewal as the
threaded path; cancelling a future cancels its coroutine. Each coroutine in flight borrows a
module copy (a slot) of its own, because users' modules may keep state between calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import contextmanager

from shared.config import get_settings
from shared.errors import RetryLater
from shared.jobs import Item, ItemResult, JobSpec
from shared.program_io import prediction_outputs
from workers import runtime
from workers.items import check_item, is_pass_through, item_failed, item_succeeded, served_version

_free_slots: list[int] = []  # module copies not in use; touched only on the loop's thread
_next_slot = [0]
WINDOW_HEADROOM = 1.25  # items submitted per provider slot: the next item is formatted while one waits


@contextmanager
def _slot():
    slot = _free_slots.pop() if _free_slots else _new_slot()
    try:
        yield ("async", slot)
    finally:
        _free_slots.append(slot)


def _new_slot() -> int:
    _next_slot[0] += 1
    return _next_slot[0]


async def arun_item(spec: JobSpec, item: Item, max_item_bytes: int) -> ItemResult:
    """``chunk.run_item`` on the async path: the same checks, results and errors."""
    started = time.perf_counter()
    bad = check_item(spec, item, max_item_bytes)
    if bad is not None:
        return bad
    served = None
    try:
        served = served_version(spec, item)
        with _slot() as slot:
            module = runtime.get_module(spec.backend, spec.model, spec.signature,
                                        served.uri if served else spec.program, tuple(spec.fallback), copy_key=slot)
            prediction, call = await module.apredict_with_stats(**item.inputs)
        outputs = prediction_outputs(prediction)
    except RetryLater:
        raise
    except BaseException as exc:
        if is_pass_through(exc) or isinstance(exc, asyncio.CancelledError):
            raise
        return item_failed(spec, item, exc, started, served)
    return item_succeeded(spec, item, module, outputs, call, started, served)


def submit(spec: JobSpec, item: Item, max_item_bytes: int) -> Future:
    """Schedule one item on the process's loop (batched with the others submitted in the same
    burst, workers/loop_handoff.py); the future's cancel() cancels the coroutine."""
    return runtime.loop_handoff().submit(lambda: arun_item(spec, item, max_item_bytes))


def window(spec: JobSpec) -> Callable[[], int]:
    """How many of a chunk's items to keep submitted, asked before each submission: the primary
    target's current in-flight cap with some headroom (not the whole chunk: a cancelled job then
    stops within one window). The lookups (settings, wrapper, gate) are done once per chunk."""
    ceiling = get_settings().async_max_inflight
    try:
        wrapper = runtime.get_wrapper(spec.backend, spec.model, tuple(spec.fallback))
        limit = wrapper.routes[0].async_engine.steps[-1].limit
    except Exception:  # a wrapper that cannot be built fails each item with its own error
        fixed = max(1, min(ceiling, runtime.concurrency_for(spec.backend)))
        return lambda: fixed
    pinned = limit.mode == "pinned"

    def current() -> int:
        # a pinned cap (TIDYQ_CONCURRENCY_<BACKEND>) means items in flight, as on the threaded path
        cap = int(limit.limit) if pinned else int(limit.limit * WINDOW_HEADROOM) + 4
        return max(1, min(ceiling, cap))

    return current
