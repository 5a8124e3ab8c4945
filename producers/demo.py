"""`tidyq demo`: the whole data path on one machine with nothing running beforehand.

A private redis-server on a free loopback port in a temporary directory, one real
`celery -A workers worker` process, the bundled batch of questions on the deterministic mock
backend, a progress bar, the results JSONL in the current directory, a summary, and everything it
started stopped again: on success, on error and on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

RESULTS_FILE = "tidyq-demo-results.jsonl"
METRICS_FILE = "tidyq-demo-metrics.json"
SIGNATURE = "question -> answer"


def bundled_batch() -> Path:
    return Path(str(resources.files("producers") / "data" / "demo.jsonl"))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(*, items: int | None = None, concurrency: int | None = None, out_dir: str | Path | None = None,
             console: Console | None = None) -> int:
    from producers.client import Client
    from producers.local_worker import LocalWorker
    from producers.progress import follow_results
    from shared.redis_server import RedisServer

    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    out_dir = Path(out_dir or os.getcwd())
    results_path, metrics_path = out_dir / RESULTS_FILE, out_dir / METRICS_FILE
    processes = concurrency or max(1, min(4, os.cpu_count() or 1))
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    writing = False
    try:
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tidyq-demo-")))
            console.print(f"tidyq demo: starting a private redis-server and one worker ({processes} processes) "
                          f"in {tmp}")
            redis_server = RedisServer(directory=tmp)
            stack.callback(redis_server.close)  # registered before start: an interrupt mid-start still stops it
            redis_server.start()
            worker = LocalWorker(redis_server.url, concurrency=processes, log_path=tmp / "worker.log", cwd=tmp)
            stack.callback(worker.stop)
            worker.start(timeout=90)
            client = Client(redis_server.url)
            source = bundled_batch()
            started = time.perf_counter()
            if items:
                rows: list[dict[str, Any]] = []
                with open(source, encoding="utf-8") as fh:
                    for line in fh:
                        if len(rows) >= items:
                            break
                        rows.append(json.loads(line))
                job = client.submit_batch(rows, SIGNATURE, backend="mock")
            else:
                job = client.submit_file(source, SIGNATURE, backend="mock")
            total = job.status()["counts"]["total"]
            console.print(f"tidyq demo: job {job.id}: {total} questions, signature {SIGNATURE!r}, backend mock")
            latencies: list[float] = []
            writing = True
            follow_results(_Recording(job, latencies), total, str(results_path), timeout=300)
            elapsed = time.perf_counter() - started
            status = job.status()
            counts = status["counts"]
            rate = counts["total"] / elapsed if elapsed > 0 else 0.0
            metrics: dict[str, Any] = {
                "job": status, "items_per_second": round(rate, 1), "elapsed_seconds": round(elapsed, 3),
                "latency_ms": {"p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95),
                               "mean": round(statistics.fmean(latencies), 3) if latencies else None},
                "worker": {"processes": processes, "queues": "all"}, "results_file": str(results_path),
            }
            metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            console.print(
                f"tidyq demo: {status['status']}: {counts['succeeded']} succeeded, {counts['failed']} failed of "
                f"{counts['total']} in {elapsed:.2f} s ({rate:,.0f} items/s, submit to last result)\n"
                f"  results: {results_path}\n"
                f"  metrics: {metrics_path} (items/s, latency p50 {metrics['latency_ms']['p50']} ms)\n"
                f"  next: `tidyq batch FILE --signature '{SIGNATURE}' --backend mock --wait` against your own Redis "
                f"(TIDYQ_REDIS_URL) and `celery -A workers worker`")
            code = 0 if status["status"] == "completed" and counts["failed"] == 0 else 1
        console.print("tidyq demo: stopped the worker and redis-server")
        return code
    except KeyboardInterrupt:
        console.print("tidyq demo: interrupted; stopped the worker and redis-server"
                      + (f" (partial results in {results_path})" if writing and results_path.exists() else ""))
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _Recording:
    """A job whose results() also records each latency (for the demo's metrics)."""

    def __init__(self, job, latencies: list[float]):
        self._job, self._latencies = job, latencies
        self.id = job.id

    def results(self, timeout=None):
        for row in self._job.results(timeout=timeout):
            self._latencies.append(row.get("latency_ms") or 0.0)
            yield row
