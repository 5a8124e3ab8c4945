"""Run ``python -m producers.api`` as a child process (tests and the bench): started on a free
loopback port, ready when its openapi.json answers, stopped with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared.redis_server import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ApiServerProcess:
    def __init__(self, env: dict[str, str], *, log_path: str | Path, host: str = "127.0.0.1"):
        self.host, self.port = host, free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), self.env.get("PYTHONPATH", "")) if p)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v1"

    def start(self, timeout: float = 60.0) -> ApiServerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "producers.api", "--host", self.host,
                                             "--port", str(self.port)], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the API server did not answer within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
