"""Start a real ``celery -A workers worker`` child process and stop it completely.

Used by the embedded demo, the benchmark and the integration tests. The worker runs in its own
session (its process group holds the pool children), so Ctrl-C in a terminal reaches only us and
``stop()`` can end the whole group. Readiness is read from Redis (the worker_ready signal records
the worker there), not guessed from sleeps or log text.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from shared.errors import ConfigurationError
from shared.store import JobStore

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class LocalWorker:
    def __init__(self, redis_url: str, *, queues: Iterable[str] | None = None, concurrency: int = 1,
                 pool: str = "prefork", env: dict[str, str] | None = None, log_path: str | Path | None = None,
                 cwd: str | Path | None = None, loglevel: str = "WARNING"):
        self.redis_url = redis_url
        self.queues = list(queues) if queues else None
        self.concurrency, self.pool, self.loglevel = concurrency, pool, loglevel
        self.hostname = f"tidyq-{uuid.uuid4().hex[:10]}@localhost"
        self.extra_env = dict(env or {})
        self._tmp = None
        if log_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tidyq-worker-")
            log_path = Path(self._tmp.name) / "worker.log"
        self.log_path = Path(log_path)
        self.cwd = str(cwd) if cwd else None
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel", self.loglevel,
               "--concurrency", str(self.concurrency), "--pool", self.pool, "--hostname", self.hostname,
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        if self.queues:
            cmd += ["--queues", ",".join(self.queues)]
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"TIDYQ_REDIS_URL": self.redis_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "PYTHONUNBUFFERED": "1"})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> LocalWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), env=self.environment(), cwd=self.cwd,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        finally:
            log.close()
        store = JobStore.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.process = None
                raise ConfigurationError(f"the worker exited at start (code see log {self.log_path}):\n{tail}")
            if store.worker_info(self.hostname):
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"the worker was not ready within {timeout}s; log {self.log_path}:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): a crash, for tests."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self, timeout: float = 20.0, *, warm: bool = True) -> None:
        """Warm shutdown (SIGTERM: running chunks finish) or cold (SIGQUIT: unacked chunks go
        back to the broker), then SIGKILL whatever is left of the group.

        The signal goes to the main process only, as Celery expects: it closes its pool and waits
        for the pool processes to leave their loop and exit (billiard's os._exit, where coverage
        also saves a measured child's data). Sent to the whole group, the same SIGTERM raised
        SystemExit inside each pool process at whatever it was running, the main process's own
        shutdown then signalled them again or outlived them (their parent-death SIGKILL), so
        running chunks were cut and a child's exit was a race."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM if warm else signal.SIGQUIT)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # pool children that outlived the main process
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.process = None

    def close(self, *, warm: bool = True) -> None:
        self.stop(warm=warm)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalWorker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
