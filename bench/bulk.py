"""Scenario 1, bulk: N mock items through Redis and one worker (-c 2) against an in-process
dspy.Predict loop on DSPy's DummyLM. Ratio = loop seconds / queue seconds (goal >= 1.0, issue 19).

The queue time runs from submit to the last result read back by the client, so it includes
validation, enqueueing, the broker, result writes and reading; inputs are new every repeat so
no run is served from another's cache."""

from __future__ import annotations

import time

import dspy
from dspy.utils.dummies import DummyLM

from bench.harness import SIG, Env, median, rows
from producers import Client


def loop_seconds(items: list[dict]) -> float:
    lm = DummyLM([{"answer": f"answer {i}"} for i in range(len(items))])
    predict = dspy.Predict(SIG)
    start = time.perf_counter()
    with dspy.context(lm=lm):
        for row in items:
            predict(**row["inputs"])
    return time.perf_counter() - start


def queue_seconds(client: Client, items: list[dict], timeout: float) -> float:
    start = time.perf_counter()
    job = client.submit_batch(items, SIG, backend="mock")
    n = sum(1 for r in job.results(timeout=timeout) if r["status"] == "succeeded")
    elapsed = time.perf_counter() - start
    if n != len(items):
        raise RuntimeError(f"bulk: {n} of {len(items)} items succeeded")
    return elapsed


def run(env: Env, n: int = 5000, repeats: int = 3) -> dict:
    worker = env.worker(queues=["predict.mock"], concurrency=2)
    client = Client(env.redis_url)
    queue_seconds(client, rows(200, "bulk-warm"), 120)  # both pool processes build their wrapper
    loop_seconds(rows(200, "bulk-warm-loop"))
    loops, queues = [], []
    for r in range(repeats):  # interleaved, alternating which goes first
        order = ("loop", "queue") if r % 2 == 0 else ("queue", "loop")
        for kind in order:
            items = rows(n, f"bulk{r}{kind}")
            if kind == "loop":
                loops.append(loop_seconds(items))
            else:
                queues.append(queue_seconds(client, items, 600))
    worker.close()
    loop_s, queue_s = median(loops), median(queues)
    return {"items": n, "repeats": repeats, "worker_concurrency": 2,
            "loop_seconds": [round(x, 3) for x in loops], "queue_seconds": [round(x, 3) for x in queues],
            "loop_items_per_s": round(n / loop_s, 1), "queue_items_per_s": round(n / queue_s, 1),
            "ratio": round(loop_s / queue_s, 3), "goal": ">= 1.0", "met": loop_s / queue_s >= 1.0}
