"""Scenario 5, memory. Worker: RSS of every process of one `celery worker -c 2` (mock backend)
after a 10,000-item batch and again after the large file (goal <= 400 MB per process).
Producer: peak RSS (VmHWM) of a separate process that submits a JSONL file and streams every
result back to a file, for a small and a large file (goal <= 150 MB, flat in file size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.harness import Env, group_pids, proc_status_mb
from producers.local_worker import PROJECT_ROOT


def write_jsonl(path, n: int, tag: str) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            row = {"custom_id": f"{tag}-{i}", "inputs": {"question": f"[{tag}] What is {i} plus {i}?"}}
            fh.write(json.dumps(row) + "\n")


def producer(env: Env, n: int, tag: str) -> dict:
    src, out = env.workdir / f"{tag}.jsonl", env.workdir / f"{tag}-results.jsonl"
    write_jsonl(src, n, tag)
    proc = subprocess.run([sys.executable, "-m", "bench.producer_rss", str(src), str(out),
                           "--redis-url", env.redis_url],
                          cwd=str(PROJECT_ROOT), env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
                          capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"producer_rss failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["results"] != n:
        raise RuntimeError(f"producer read {report['results']} of {n} results")
    src.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return report | {"lines": n}


def worker_rss(worker) -> dict:
    pids = group_pids(worker.pid)
    per = {pid: round(proc_status_mb(pid), 1) for pid in pids}
    return {"max_process_mb": max(per.values()), "total_mb": round(sum(per.values()), 1), "processes": len(per)}


def run(env: Env, worker_items: int = 10_000, small: int = 10_000, large: int = 100_000) -> dict:
    worker = env.worker(queues=["predict.mock"], concurrency=2)
    idle = worker_rss(worker)
    p_small = producer(env, small, "mem-small")  # also the worker's 10,000-item batch
    after_batch = worker_rss(worker)
    env.flush()
    p_large = producer(env, large, "mem-large")
    after_large = worker_rss(worker)
    worker.close()
    env.flush()
    growth = p_large["peak_rss_mb"] / p_small["peak_rss_mb"]
    worker_ok = after_batch["max_process_mb"] <= 400
    producer_ok = p_large["peak_rss_mb"] <= 150 and growth <= 1.2
    return {"worker_idle": idle, f"worker_after_{small}": after_batch, f"worker_after_{large}": after_large,
            "producer_small": p_small, "producer_large": p_large, "producer_peak_growth": round(growth, 3),
            "worker_goal": "<= 400 MB per process", "producer_goal": "<= 150 MB, flat in file size",
            "worker_met": worker_ok, "producer_met": producer_ok, "met": worker_ok and producer_ok}
