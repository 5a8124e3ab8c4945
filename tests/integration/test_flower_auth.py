"""A real Flower process started the shipped way (deploy/flower/flowerconfig.py): it refuses to
start without auth, refuses unauthenticated requests, serves authenticated ones and shows the
tasks of a real worker (events on). /metrics and /healthcheck stay open, as the docs say."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

import pytest

from producers.local_worker import LocalWorker
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CONF = "--conf=deploy/flower/flowerconfig.py"


class EventsWorker(LocalWorker):
    """The Procfile/compose workers run with -E (task events), which Flower needs."""

    def command(self) -> list[str]:
        return super().command() + ["-E"]


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urlopen(Request(url, headers=headers), timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read()
    except HTTPError as exc:
        return exc.code, exc.read()


def _flower_env(redis_url: str, port: int, basic_auth: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env.update(TIDYQ_REDIS_URL=redis_url, FLOWER_PORT=str(port), LITELLM_LOCAL_MODEL_COST_MAP="True")
    if basic_auth:
        env["FLOWER_BASIC_AUTH"] = basic_auth
    return env


@pytest.fixture
def flower(redis_url, tmp_path):
    port = free_port()
    password = os.urandom(6).hex()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "flower", CONF], cwd=ROOT,
                            env=_flower_env(redis_url, port, f"ops:{password}"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()[-3000:]
            try:
                if _get(f"{base}/healthcheck")[0] == 200:
                    break
            except (URLError, OSError):
                pass
            assert time.monotonic() < deadline, "flower did not start"
            time.sleep(0.1)
        yield base, ("ops", password)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_flower_refuses_unauthenticated_requests_and_shows_tasks_behind_the_password(flower, redis_url, tmp_path):
    base, auth = flower
    assert _get(f"{base}/")[0] == 401
    assert _get(f"{base}/", ("ops", "wrong"))[0] == 401
    assert _get(f"{base}/api/tasks")[0] == 401
    assert _get(f"{base}/api/workers")[0] == 401
    status, body = _get(f"{base}/", auth)
    assert status == 200 and b"Flower" in body

    worker = EventsWorker(redis_url, queues=["predict.mock"], concurrency=1, log_path=tmp_path / "worker.log")
    worker.start(timeout=60)
    try:
        from producers.client import Client

        rows = [{"custom_id": str(i), "inputs": {"question": f"q {i}"}} for i in range(6)]
        job = Client(redis_url).submit_batch(rows, "question -> answer", backend="mock", chunk_size=2)
        assert job.wait(timeout=60)["status"] == "completed"
        deadline = time.monotonic() + 30
        while True:
            status, body = _get(f"{base}/api/tasks", auth)
            assert status == 200
            tasks = json.loads(body)
            names = {t.get("name") for t in tasks.values()}
            if len([t for t in tasks.values() if t.get("state") == "SUCCESS"]) >= 3:
                break
            assert time.monotonic() < deadline, f"flower saw only {tasks}"
            time.sleep(0.3)
        assert names == {"tidyq.predict.chunk"}
    finally:
        worker.close()

    # Flower's own Prometheus endpoint and health check are open by Flower's design
    status, body = _get(f"{base}/metrics")
    assert status == 200 and b"flower_events_total" in body
    assert _get(f"{base}/healthcheck")[0] == 200


def test_flower_will_not_start_without_auth(redis_url):
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "flower", CONF], cwd=ROOT,
                         env=_flower_env(redis_url, free_port(), None), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "refusing to start without authentication" in out.stderr + out.stdout
