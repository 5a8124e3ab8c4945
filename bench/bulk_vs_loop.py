"""Items/s of a bulk mock batch through the queue vs an in-process dspy.Predict loop.

    .venv/bin/python bench/bulk_vs_loop.py [--items 5000] [--processes 1,2] [--chunk-size 50]

Same script, same machine, same items:
- loop/DummyLM: ``dspy.Predict("question -> answer")`` on DSPy's DummyLM, one item after another
  (what a user writes without a queue);
- loop/wrapper: the same loop through UnifiedDSPyWrapper's mock backend (our step stack, no queue);
- queue: a private redis-server and ONE `celery -A workers worker` (prefork, -c N) running the
  batch on the mock backend; timed from submit until the last result was read back.
Ratios matter, not absolute numbers (they depend on the machine). Results go to stdout and
bench/results/bulk_vs_loop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIG = "question -> answer"


def group_cpu_seconds(pgids: set[int]) -> float:
    """user+system CPU seconds of every live process in these process groups (Linux /proc)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # field 5 (pgrp), counted after the command name
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / tick


def rows(n: int) -> list[dict]:
    return [{"custom_id": f"q{i}", "inputs": {"question": f"What is {i} plus {i * 7}?"}} for i in range(n)]


def loop_dummy(items: list[dict]) -> float:
    import dspy
    from dspy.utils import DummyLM

    lm = DummyLM([{"answer": f"answer {i}"} for i in range(len(items))])
    predict = dspy.Predict(SIG)
    with dspy.context(lm=lm):
        predict(question="warm-up")
        started, cpu = time.perf_counter(), time.process_time()
        for row in items:
            predict(**row["inputs"])
    return {"items_per_s": len(items) / (time.perf_counter() - started),
            "items_per_cpu_s": len(items) / (time.process_time() - cpu)}


def loop_wrapper(items: list[dict]) -> float:
    from shared import UnifiedConfig, UnifiedDSPyWrapper

    module = UnifiedDSPyWrapper(UnifiedConfig(backend="mock")).create_module(SIG)
    module.predict(question="warm-up")
    started, cpu = time.perf_counter(), time.process_time()
    for row in items:
        module.predict(**row["inputs"])
    return {"items_per_s": len(items) / (time.perf_counter() - started),
            "items_per_cpu_s": len(items) / (time.process_time() - cpu)}


def queue(items: list[dict], processes: int, chunk_size: int, cache: bool) -> dict:
    from producers import Client
    from producers.local_worker import LocalWorker
    from shared.redis_server import RedisServer

    env = {"TIDYQ_LOG_LEVEL": "WARNING", "TIDYQ_CACHE_ENABLED": "true" if cache else "false"}
    with RedisServer() as redis_server, LocalWorker(redis_server.url, concurrency=processes, env=env) as worker:
        client = Client(redis_server.url)
        # warm the worker's processes (wrapper and module built once per process)
        client.submit_batch(rows(processes * chunk_size), SIG, backend="mock", chunk_size=chunk_size).wait(timeout=60)
        groups = {worker.pid, redis_server.process.pid}  # both run in their own session/group
        cpu0, own0 = group_cpu_seconds(groups), time.process_time()
        started = time.perf_counter()
        job = client.submit_batch(items, SIG, backend="mock", chunk_size=chunk_size)
        enqueued = time.perf_counter()
        got = sum(1 for _ in job.results(timeout=600))
        elapsed = time.perf_counter() - started
        cpu = group_cpu_seconds(groups) - cpu0 + time.process_time() - own0
        status = job.status()
    assert got == len(items) and status["counts"]["succeeded"] == len(items), status
    return {"items_per_s": len(items) / elapsed, "items_per_cpu_s": len(items) / cpu, "enqueue_s": enqueued - started,
            "elapsed_s": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--processes", default="1,2", help="worker pool sizes to try (one worker each)")
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--with-cache", action="store_true",
                        help="also run the queue with the response cache on (its Redis tier costs a round trip per call)")
    args = parser.parse_args()
    items = rows(args.items)
    report = {"items": args.items, "chunk_size": args.chunk_size, "cpus": os.cpu_count()}
    report["loop_dummylm"] = loop_dummy(items)
    os.environ["TIDYQ_CACHE_ENABLED"] = "false"
    report["loop_wrapper"] = loop_wrapper(items)
    report["queue"] = {}
    for n in [int(x) for x in args.processes.split(",")]:
        # the loops have no cache, so neither has the queue run compared with them
        report["queue"][f"c{n}"] = queue(items, n, args.chunk_size, cache=False)
        if args.with_cache:
            report["queue"][f"c{n}+cache"] = queue(items, n, args.chunk_size, cache=True)
    base, wrap = report["loop_dummylm"], report["loop_wrapper"]
    print(f"{args.items} items, chunk size {args.chunk_size}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"  {'':44}{'items/s':>9}{'ratio':>8}{'items/CPU-s':>13}{'ratio':>8}")

    def line(label, r):
        print(f"  {label:44}{r['items_per_s']:9.0f}{r['items_per_s'] / base['items_per_s']:7.2f}x"
              f"{r['items_per_cpu_s']:13.0f}{r['items_per_cpu_s'] / base['items_per_cpu_s']:7.2f}x")

    line("in-process dspy.Predict loop on DummyLM", base)
    line("in-process loop through the mock wrapper", wrap)
    for name, q in report["queue"].items():
        line(f"queue, one worker -c {name[1:]} (all processes)", q)
    report["load_average"] = os.getloadavg()
    out = Path(__file__).resolve().parent / "results" / "bulk_vs_loop.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
