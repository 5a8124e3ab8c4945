"""Helpers of the reliability tests: rows, waits, worker process RSS, and the figures the tests
measure (printed at the end of the run and written to $TIDYQ_RELIABILITY_REPORT, default
<tmp>/tidyq-reliability.json) so docs/reliability.md can quote real numbers."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.workers import stop_all
from tests.waiting import wait_for  # noqa: F401  (re-exported to the reliability tests)

SIG = "question -> answer"
FIGURES: dict[str, object] = {}


def record(name: str, value) -> None:
    FIGURES[name] = value


def rows(n: int, prefix: str = "q") -> list[dict]:
    return [{"custom_id": f"{prefix}{i}", "inputs": {"question": f"What is {i} plus {i} ({prefix})?"}}
            for i in range(n)]


def direct_env(fake, api_key: str = "sk-reliability-test-key", **extra) -> dict[str, str]:
    env = {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": api_key, "TIDYQ_MODEL": "openai/gpt-4o-mini",
           "TIDYQ_CACHE_ENABLED": "false"}
    return env | {k: str(v) for k, v in extra.items()}


def children(pid: int) -> list[int]:
    """Direct child pids (the prefork pool processes of a worker's main process)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    path = Path(os.environ.get("TIDYQ_RELIABILITY_REPORT") or Path(tempfile.gettempdir()) / "tidyq-reliability.json")
    try:
        path.write_text(json.dumps(FIGURES, indent=1, default=str))
    except OSError:
        pass
    terminalreporter.write_sep("-", f"reliability figures (also in {path})")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(value, default=str)}")


@pytest.fixture
def figures():
    return record


SHIPPED_REDIS_CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"


class ShippedRedis:
    """redis-server started with the shipped deploy/redis.conf (AOF on) plus a password, the way
    the launcher adds port, directory and requirepass. ``restart()`` keeps port and data."""

    def __init__(self, directory: Path, password: str):
        from shared.redis_server import RedisServer

        self._server = RedisServer(directory=directory, password=password)  # port, binary, ping()
        self.password = password
        self.directory = directory
        self.process = None

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    def start(self, timeout: float = 15.0) -> ShippedRedis:
        import subprocess

        args = [self._server.binary, str(SHIPPED_REDIS_CONF), "--port", str(self.port), "--dir", str(self.directory),
                "--requirepass", self.password, "--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self._server.process = self.process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}")
            if self._server.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self, *, kill: bool = False) -> None:
        self._server.process = self.process
        self._server.stop(kill=kill)
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> ShippedRedis:
        self.stop()
        time.sleep(down_seconds)
        return self.start()


@pytest.fixture
def shipped_redis(tmp_path, monkeypatch):
    """A password-protected, AOF-persisted redis-server from deploy/redis.conf; TIDYQ_REDIS_URL points to it."""
    if not SHIPPED_REDIS_CONF.exists():
        pytest.skip("deploy/redis.conf is missing")
    data = tmp_path / "redis-data"
    data.mkdir()
    server = ShippedRedis(data, password="rds-Pw-" + os.urandom(6).hex())
    server.start()
    monkeypatch.setenv("TIDYQ_REDIS_URL", server.url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def worker_on(tmp_path):
    """Factory: worker_on(redis_url, queues, concurrency, env) -> a ready LocalWorker (stopped at teardown)."""
    from producers.local_worker import LocalWorker

    started = []

    def start(redis_url, queues=None, concurrency=1, env=None, timeout=60.0):
        w = LocalWorker(redis_url, queues=queues, concurrency=concurrency, env=env,
                        log_path=tmp_path / f"worker-{len(started)}.log", loglevel="INFO")
        started.append(w)
        return w.start(timeout=timeout)

    yield start
    stop_all(started, timeout=20)  # LocalWorker.stop's own default warm-shutdown wait
