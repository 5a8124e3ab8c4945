"""Scenario 4, horizontal scale: 1, 2 and 4 worker processes (separate `celery worker -c 1`,
as if on separate machines) against the stand-in provider answering after 1 s, each with the
same fixed number of calls in flight, so the bound is concurrency, not CPU. Passes run 1-2-4 then
4-2-1 (workers are added and stopped between runs). Goal: 4 workers >= 3.6x one."""

from __future__ import annotations

import time

from bench.harness import MODEL, SIG, Env, median, rows
from producers import Client


def items_per_second(client: Client, items: list[dict], chunk_size: int) -> float:
    start = time.perf_counter()
    job = client.submit_batch(items, SIG, backend="direct", model=MODEL, chunk_size=chunk_size)
    n = sum(1 for r in job.results(timeout=600) if r["status"] == "succeeded")
    elapsed = time.perf_counter() - start
    if n != len(items):
        raise RuntimeError(f"scale: {n} of {len(items)} items succeeded")
    return n / elapsed


def run(env: Env, n: int = 96, per_worker: int = 8, latency: float = 1.0, passes: int = 2,
        counts: tuple[int, ...] = (1, 2, 4)) -> dict:
    fake = env.fake(latency)
    worker_env = env.direct_env(fake, TIDYQ_CONCURRENCY_DIRECT=per_worker, TIDYQ_CACHE_ENABLED="false")
    client = Client(env.redis_url)
    workers = []
    samples: dict[int, list[float]] = {k: [] for k in counts}
    for p in range(passes):
        order = counts if p % 2 == 0 else tuple(reversed(counts))
        for k in order:
            added = len(workers) < k
            while len(workers) < k:
                workers.append(env.worker(queues=["predict.direct"], concurrency=1, env=worker_env))
            while len(workers) > k:
                workers.pop().close()
            if added:  # one chunk per worker: each new process builds its wrapper outside the timing
                items_per_second(client, rows(per_worker * k, f"scale-warm{p}-{k}"), per_worker)
            samples[k].append(items_per_second(client, rows(n, f"scale{p}-{k}"), per_worker))
    for w in workers:
        w.close()
    fake.stop()
    med = {k: median(v) for k, v in samples.items()}
    top = max(counts)
    speedup = med[top] / med[counts[0]]
    return {"items": n, "per_worker_concurrency": per_worker, "latency_s": latency, "passes": passes,
            "items_per_s": {str(k): round(v, 2) for k, v in med.items()},
            "samples": {str(k): [round(x, 2) for x in v] for k, v in samples.items()},
            "ideal_items_per_s": {str(k): round(k * per_worker / latency, 2) for k in counts},
            "speedup": {str(k): round(med[k] / med[counts[0]], 3) for k in counts},
            "ratio": round(speedup, 3), "goal": f"{top} workers >= 3.6x one", "met": speedup >= 3.6}
