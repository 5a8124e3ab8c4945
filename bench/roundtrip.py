"""Scenario 2, round trip: one predict from submit to result (p50, p99) against a bare Celery
no-op task with a Redis result backend on the same redis-server, both on a one-process prefork
worker, interleaved in blocks. Ratio = tidyq p50 / Celery p50 (goal <= 1.3)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.harness import SIG, Env, median, percentile
from producers import Client
from producers.local_worker import PROJECT_ROOT


class NoopWorker:
    """`celery -A bench.noop_app worker -c 1` in its own session, stopped with its group."""

    def __init__(self, env: Env):
        self.env = env
        self.log = open(env.workdir / "noop-worker.log", "ab")
        environ = dict(os.environ, BENCH_REDIS_URL=env.redis_url, PYTHONPATH=str(PROJECT_ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-c", "1", "--pool", "prefork",
             "-Q", "bench.noop", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--hostname", f"noop-{os.getpid()}@localhost"],
            cwd=str(PROJECT_ROOT), env=environ, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        env._scope.callback(self.stop)

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=5)
        self.log.close()


def run(env: Env, n: int = 300, block: int = 50) -> dict:
    os.environ["BENCH_REDIS_URL"] = env.redis_url
    from bench.noop_app import app, noop

    NoopWorker(env)
    worker = env.worker(queues=["predict.mock"], concurrency=1)
    noop.apply_async(queue="bench.noop").get(timeout=120)  # ready
    client = Client(env.redis_url)

    def ours(i: int) -> float:
        start = time.perf_counter()
        out = client.submit_predict(SIG, {"question": f"round trip {i}?"}, backend="mock").result(timeout=30)
        elapsed = time.perf_counter() - start
        assert out["answer"]
        return elapsed

    def celery(i: int) -> float:
        start = time.perf_counter()
        noop.apply_async(queue="bench.noop").get(timeout=30)
        return time.perf_counter() - start

    for i in range(30):  # warm both paths
        ours(-i - 1)
        celery(i)
    t_ours, t_celery = [], []
    for b in range(max(1, n // block)):
        first, second = (ours, celery) if b % 2 == 0 else (celery, ours)
        for fn in (first, second):
            target = t_ours if fn is ours else t_celery
            target.extend(fn(b * block + i) * 1000 for i in range(block))
    worker.close()
    app.close()
    p50, c50 = median(t_ours), median(t_celery)
    return {"calls_each": len(t_ours), "tidyq_p50_ms": round(p50, 2),
            "tidyq_p99_ms": round(percentile(t_ours, 0.99), 2),
            "celery_noop_p50_ms": round(c50, 2), "celery_noop_p99_ms": round(percentile(t_celery, 0.99), 2),
            "ratio_p50": round(p50 / c50, 3), "goal": "p50 ratio <= 1.3", "met": p50 / c50 <= 1.3}
