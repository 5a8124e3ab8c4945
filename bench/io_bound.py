"""Scenario 3, I/O-bound: the DIRECT backend against the stand-in provider answering after
100 ms, one worker process with ``concurrency`` calls in flight, against in-process threaded
DSPy (dspy.Predict, dspy.LM on the same lm15 engine, same number of threads). Both are bound
by one process's CPU (the GIL), not by the provider. Ratio = queue items/s / DSPy items/s
(goal >= 0.9). Then the same with the in-flight cap left to adapt (issue 19: goal >= 1.5x).""" 

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import dspy

from bench.harness import API_KEY, MODEL, SIG, Env, median, rows
from producers import Client


def dspy_seconds(lm, items: list[dict], concurrency: int) -> float:
    predict = dspy.Predict(SIG)

    def one(row):
        with dspy.context(lm=lm):  # contexts do not reach plain threads: enter it in each
            return predict(**row["inputs"])

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, items))
    elapsed = time.perf_counter() - start
    assert all(r.answer for r in results)
    return elapsed


def queue_seconds(client: Client, items: list[dict], chunk_size: int | None) -> float:
    start = time.perf_counter()
    job = client.submit_batch(items, SIG, backend="direct", model=MODEL, chunk_size=chunk_size)
    n = sum(1 for r in job.results(timeout=600) if r["status"] == "succeeded")
    elapsed = time.perf_counter() - start
    if n != len(items):
        raise RuntimeError(f"io_bound: {n} of {len(items)} items succeeded")
    return elapsed


def run(env: Env, n: int = 1000, repeats: int = 3, concurrency: int = 32, latency: float = 0.1,
        chunk_size: int | None = None) -> dict:
    fake = env.fake(latency)
    worker = env.worker(queues=["predict.direct"], concurrency=1,
                        env=env.direct_env(fake, TIDYQ_CONCURRENCY_DIRECT=concurrency))
    lm = dspy.LM(MODEL, engine="lm15", api_base=fake.base_url, api_key=API_KEY, cache=False, num_retries=0)
    client = Client(env.redis_url)
    queue_seconds(client, rows(100, "io-warm"), chunk_size)
    dspy_seconds(lm, rows(100, "io-warm-dspy"), concurrency)
    base, ours = [], []
    for r in range(repeats):
        order = ("dspy", "queue") if r % 2 == 0 else ("queue", "dspy")
        for kind in order:
            items = rows(n, f"io{r}{kind}")
            if kind == "dspy":
                base.append(dspy_seconds(lm, items, concurrency))
            else:
                ours.append(queue_seconds(client, items, chunk_size))
    worker.close()
    # the same worker process shape with the cap left to adapt (TIDYQ_CONCURRENCY_DIRECT unset: DSPy's
    # async path grows the calls in flight while the provider keeps up), against the same DSPy figure
    worker = env.worker(queues=["predict.direct"], concurrency=1, env=env.direct_env(fake))
    queue_seconds(client, rows(100, "io-warm-adaptive"), chunk_size or n)
    adaptive = []
    for r in range(repeats):
        adaptive.append(queue_seconds(client, rows(n, f"io{r}adaptive"), chunk_size or n))
        base.append(dspy_seconds(lm, rows(n, f"io{r}dspy-b"), concurrency))
    worker.close()
    fake.stop()
    b, o, a = median(base), median(ours), median(adaptive)
    return {"items": n, "repeats": repeats, "concurrency": concurrency, "latency_s": latency,
            "chunk_size": chunk_size, "dspy_threaded_items_per_s": round(n / b, 1),
            "queue_items_per_s": round(n / o, 1), "dspy_seconds": [round(x, 3) for x in base],
            "queue_seconds": [round(x, 3) for x in ours], "ratio": round(b / o, 3), "goal": ">= 0.9",
            "met": b / o >= 0.9, "queue_adaptive_items_per_s": round(n / a, 1),
            "queue_adaptive_seconds": [round(x, 3) for x in adaptive], "ratio_adaptive": round(b / a, 3),
            "goal_adaptive": ">= 1.5", "met_adaptive": b / a >= 1.5}
