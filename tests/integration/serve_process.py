"""`tidyq serve` as a real subprocess for the integration tests (stopped with its process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from shared.redis_server import free_port
from tests.waiting import wait_for

TIDYQ = os.path.join(os.path.dirname(sys.executable), "tidyq")
USER, PASSWORD = "ops", "integration-test-password"


class Serve:
    """`tidyq serve` in its own process group on a free loopback port."""

    def __init__(self, redis_url: str, log: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "TIDYQ_REDIS_URL": redis_url, "TIDYQ_UI_AUTH": f"{USER}:{PASSWORD}", **env}
        self.log = log.open("w")
        self.proc = subprocess.Popen([TIDYQ, "serve", "--port", str(self.port)], env=environ, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            assert self.proc.poll() is None, "tidyq serve exited"
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()

    def __enter__(self) -> Serve:
        try:
            wait_for(self.ready, timeout=60, what="tidyq serve to answer /healthz")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
