"""Per-call overhead of UnifiedDSPyWrapper over plain dspy.Predict on the same mock backend.

Baseline: dspy.LM(engine=MockBackend) with DSPy's cache and retries off, called through
dspy.Predict. Measured: the wrapper with every step on (metrics, cache miss + write, retry).
Both run interleaved in one process, several rounds, median per-call time reported.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time

import dspy

from shared import CacheConfig, UnifiedConfig, UnifiedDSPyWrapper
from shared.backends.mock import MockBackend


def per_call_ms(fn, n: int, tag: str) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(f"{tag} question {i}")
    return (time.perf_counter() - start) / n * 1000


def run(n: int = 400, rounds: int = 5, redis_url: str | None = None) -> dict:
    plain_lm = dspy.LM("mock/mock", engine=MockBackend(), cache=False, num_retries=0)
    plain = dspy.Predict("question -> answer")

    def plain_call(q):
        with dspy.context(lm=plain_lm):
            return plain(question=q)

    with tempfile.TemporaryDirectory() as tmp:
        wrapped = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache_dir=tmp, redis_url=redis_url))
        module = wrapped.create_module("question -> answer")
        nocache = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False)))
        module_nocache = nocache.create_module("question -> answer")
        for fn in (plain_call, lambda q: module.predict(question=q), lambda q: module_nocache.predict(question=q)):
            per_call_ms(fn, 50, "warm")
        base, full, bare = [], [], []
        for r in range(rounds):
            base.append(per_call_ms(plain_call, n, f"p{r}"))
            full.append(per_call_ms(lambda q: module.predict(question=q), n, f"w{r}"))
            bare.append(per_call_ms(lambda q: module_nocache.predict(question=q), n, f"n{r}"))
            hits = per_call_ms(lambda q: module.predict(question=q), n, f"w{r}")
        wrapped.close()
    b, f, nc = statistics.median(base), statistics.median(full), statistics.median(bare)
    return {"plain_predict_ms": round(b, 3), "wrapper_ms": round(f, 3), "wrapper_no_cache_ms": round(nc, 3),
            "wrapper_cache_hit_ms": round(hits, 3),
            "overhead_pct": round((f / b - 1) * 100, 1), "overhead_no_cache_pct": round((nc / b - 1) * 100, 1),
            "calls_per_round": n, "rounds": rounds, "shared_tier": "redis" if redis_url else "disk"}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
    sys.exit(0)
