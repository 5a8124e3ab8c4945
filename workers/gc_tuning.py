"""Garbage collection of a worker's pool process, set once when the process starts.

Why: on the async path hundreds of calls are in flight, each with its coroutines, futures,
messages and pydantic objects, so the young generation fills every few items: with Python's
default threshold (700 allocations) a pool process collected ~180 times per 1,000 items, and
each older-generation pass walked the whole import-time heap (DSPy, pydantic, Celery): in-process
measurements put collection at 0.2-0.3 ms of ~1.2-1.5 ms CPU per item. Two standard remedies:
``gc.freeze()`` once the process has imported everything (that heap lives as long as the
process, so collections stop walking it) and a larger young-generation threshold
(``TIDYQ_GC_GEN0_THRESHOLD``, default 10,000: ~6 collections per 1,000 items). Cycles are still
collected, just in larger batches; 0 keeps Python's threshold.
"""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    gc.collect()  # what the imports left as garbage is freed, not frozen
    gc.freeze()
    if gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
