"""Scenario 7: per-call overhead of UnifiedDSPyWrapper over plain dspy.Predict on the same mock
backend, in one process, interleaved rounds.

Baseline: dspy.LM(engine=MockBackend) with DSPy's cache and retries off, called through
dspy.Predict. Measured: the wrapper with every default step on (metrics, cache miss + write to
the shared tier, retry), without cache, and on cache hits. The headline is CPU time of this
process per call (time.process_time: every thread, so the cache's background writer is counted;
each block ends with a flush of pending cache writes). CPU time is what the wrapper costs; wall
time on a shared machine mostly measures the neighbours, so it is reported alongside only.
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


def per_call(fn, n: int, tag: str, flush=None) -> tuple[float, float]:
    """(cpu ms, wall ms) per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(f"{tag} question {i}")
    if flush is not None:
        flush()
    return (time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000


def run(env=None, n: int = 400, rounds: int = 5, redis_url: str | None = None) -> dict:
    redis_url = redis_url or (env.redis_url if env is not None else None)
    plain_lm = dspy.LM("mock/mock", engine=MockBackend(), cache=False, num_retries=0)
    plain = dspy.Predict("question -> answer")

    def plain_call(q):
        with dspy.context(lm=plain_lm):
            return plain(question=q)

    with tempfile.TemporaryDirectory() as tmp:
        wrapped = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache_dir=tmp, redis_url=redis_url))
        module = wrapped.create_module("question -> answer")
        cache_step = next(s for s in wrapped.engine.steps if s.name == "cache")
        nocache = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False)))
        module_nocache = nocache.create_module("question -> answer")
        full = lambda q: module.predict(question=q)  # noqa: E731
        bare = lambda q: module_nocache.predict(question=q)  # noqa: E731
        for fn in (plain_call, full, bare):
            per_call(fn, 50, "warm", cache_step.flush)
        s = {"plain": [], "wrapper": [], "no_cache": [], "hit": []}
        for r in range(rounds):
            runs = [("plain", plain_call, f"p{r}"), ("wrapper", full, f"w{r}"), ("no_cache", bare, f"n{r}")]
            if r % 2:
                runs.reverse()
            for name, fn, tag in runs:
                s[name].append(per_call(fn, n, tag, cache_step.flush))
            s["hit"].append(per_call(full, n, f"w{r}", cache_step.flush))  # the same questions again: hits
        wrapped.close()
        nocache.close()
    cpu = {k: statistics.median(v[0] for v in vals) for k, vals in s.items()}
    wall = {k: statistics.median(v[1] for v in vals) for k, vals in s.items()}
    over = (cpu["wrapper"] / cpu["plain"] - 1) * 100
    return {"plain_predict_cpu_ms": round(cpu["plain"], 3), "wrapper_cpu_ms": round(cpu["wrapper"], 3),
            "wrapper_no_cache_cpu_ms": round(cpu["no_cache"], 3), "wrapper_cache_hit_cpu_ms": round(cpu["hit"], 3),
            "overhead_pct": round(over, 1),
            "overhead_no_cache_pct": round((cpu["no_cache"] / cpu["plain"] - 1) * 100, 1),
            "wall_ms": {k: round(v, 3) for k, v in wall.items()},
            "wall_overhead_pct": round((wall["wrapper"] / wall["plain"] - 1) * 100, 1),
            "calls_per_round": n, "rounds": rounds, "shared_tier": "redis" if redis_url else "disk",
            "ratio": round(cpu["wrapper"] / cpu["plain"], 3), "goal": "< 10%", "met": over < 10}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
    sys.exit(0)
