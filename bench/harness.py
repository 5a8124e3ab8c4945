"""Processes a benchmark run needs, all on 127.0.0.1, all stopped at the end (also on failure):
a private redis-server, real `celery -A workers worker` processes, the OpenAI stand-in provider
as a separate process, plus small helpers for timing, percentiles and RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from producers.local_worker import PROJECT_ROOT, LocalWorker
from shared.processes import stop_process
from shared.redis_server import RedisServer
from tests.fakes.http_fake import FakeControl

SIG = "question -> answer"
MODEL = "openai/gpt-4o-mini"
API_KEY = "sk-bench-not-a-secret"


def rows(n: int, tag: str) -> list[dict]:
    """n distinct items; ``tag`` makes every run's inputs new, so no run hits another's cache."""
    return [{"custom_id": f"{tag}-{i}", "inputs": {"question": f"[{tag}] What is {i} plus {i}?"}} for i in range(n)]


def median(values) -> float:
    return float(statistics.median(values))


def percentile(values, q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def proc_status_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_pids(pgid: int) -> list[int]:
    """Every live process of a process group (a worker's main process and its pool children)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                out.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return out


class FakeProcess:
    """`python -m tests.fakes.openai_server` in its own process (its CPU is not the bench's)."""

    def __init__(self, latency: float, rate_limit: float = 0.0, rate_burst: float = 1.0):
        self.latency = latency
        self.rate_limit = rate_limit  # requests/s the stand-in accepts (429 above it); 0 = no limit
        self.rate_burst = rate_burst  # seconds of requests its bucket holds
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> FakeProcess:
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        self.process = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0",
                                         "--latency", str(self.latency), "--rate-limit", str(self.rate_limit),
                                         "--rate-burst", str(self.rate_burst)],
                                        cwd=str(PROJECT_ROOT), env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                        start_new_session=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1"):
            self.stop()
            raise RuntimeError(f"the stand-in provider did not start (printed {line!r})")
        self.url = line
        self.control = FakeControl(self.url, timeout=timeout)
        self.control.health()
        return self

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def requests(self) -> int:
        return int(self.control.stats()["total"])

    def stop(self) -> None:
        proc, self.process = self.process, None
        stop_process(proc)


class Env:
    """One benchmark run's processes. ``worker()`` and ``fake()`` register for cleanup."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stack = ExitStack()
        self._scope = self._stack  # where started processes register; see scope()
        self.redis = RedisServer()
        self.redis.start()
        self._stack.callback(self.redis.close)
        self.redis_url = self.redis.url
        os.environ["TIDYQ_REDIS_URL"] = self.redis_url
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        self._n = 0

    @contextmanager
    def scope(self):
        """Everything started inside is stopped on leaving, also when a scenario fails midway."""
        outer = self._scope
        with ExitStack() as inner:
            self._scope = inner
            try:
                yield self
            finally:
                self._scope = outer

    def direct_env(self, fake: FakeProcess, **extra) -> dict[str, str]:
        env = {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": API_KEY, "TIDYQ_MODEL": MODEL}
        return env | {k: str(v) for k, v in extra.items()}

    def worker(self, *, queues=None, concurrency: int = 1, env: dict | None = None,
               timeout: float = 120.0) -> LocalWorker:
        self._n += 1
        w = LocalWorker(self.redis_url, queues=queues, concurrency=concurrency, env=env,
                        log_path=self.workdir / f"worker-{self._n}.log")
        self._scope.callback(w.close)
        return w.start(timeout=timeout)

    def fake(self, latency: float, rate_limit: float = 0.0, rate_burst: float = 1.0) -> FakeProcess:
        f = FakeProcess(latency, rate_limit, rate_burst).start()
        self._scope.callback(f.stop)
        return f

    def flush(self) -> None:
        """Drop every job, result and cache entry between scenarios (workers stay registered)."""
        from shared.redisconn import get_redis

        r = get_redis(self.redis_url)
        for pattern in ("tidyq:job*", "tidyq:cache*"):
            for key in r.scan_iter(match=pattern, count=1000):
                r.unlink(key)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
