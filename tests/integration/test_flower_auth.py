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
        # each chunk is named after its job, backend and chunk number (Celery's shadow name)
        assert names == {f"tidyq.predict.chunk[{job.id[:8]} mock #{n}]" for n in range(3)}
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


def _flower_tasks(base, auth, job_id, want, timeout=60):
    """Flower's tasks of ``job_id`` once ``want`` of them have ended (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = json.loads(_get(f"{base}/api/tasks", auth)[1])
        mine = [t for t in tasks.values() if job_id[:8] in (t.get("name") or "")]
        if len([t for t in mine if t.get("state") in ("SUCCESS", "FAILURE")]) >= want:
            return mine
        assert time.monotonic() < deadline, f"flower saw only {mine}"
        time.sleep(0.3)


def test_flower_shows_job_chunks_with_their_counts_and_chunks_with_failed_items_as_failures(flower, redis_url,
                                                                                            tmp_path):
    """A direct job whose provider rejects the first three requests (HTTP 400): those items fail, and
    Flower's task list, its per-worker "Failed" counter and its /metrics say which chunks had them,
    with our own argument summary instead of the items' inputs."""
    from producers.client import Client
    from tests.fakes.openai_server import OpenAIFake

    base, auth = flower
    fake = OpenAIFake().start()
    env = {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-flower-test", "TIDYQ_CACHE_ENABLED": "false",
           "TIDYQ_CONCURRENCY_DIRECT": "1", "TIDYQ_BREAKER_ENABLED": "false"}
    worker = EventsWorker(redis_url, queues=["predict.direct"], concurrency=1, env=env,
                          log_path=tmp_path / "worker.log")
    worker.start(timeout=60)
    try:
        fake.fail_next(3, status=400)
        secret_input = "the-private-question-{}"
        rows = [{"custom_id": str(i), "inputs": {"question": secret_input.format(i)}} for i in range(6)]
        job = Client(redis_url).submit_batch(rows, "question -> answer", backend="direct", model="openai/gpt-4o-mini",
                                             chunk_size=2)
        status = job.wait(timeout=60)
        assert status["counts"] == {"total": 6, "succeeded": 3, "failed": 3}
        assert status["error_types"] == {"LMInvalidRequestError": 3}
        tasks = _flower_tasks(base, auth, job.id, want=3)
    finally:
        worker.close()
        fake.stop()

    by_chunk = {t["name"]: t for t in tasks}
    assert set(by_chunk) == {f"tidyq.predict.chunk[{job.id[:8]} direct:openai/gpt-4o-mini #{n}]" for n in range(3)}
    for n in range(3):
        t = by_chunk[f"tidyq.predict.chunk[{job.id[:8]} direct:openai/gpt-4o-mini #{n}]"]
        assert t["args"] == (f"(job={job.id}, chunk={n}, items=2, backend=direct, model=openai/gpt-4o-mini)")
        assert t["kwargs"] == "{}"
        assert "private-question" not in json.dumps(t)
    # one worker thread, the first three requests rejected: chunks 0 and 1 have failed items, chunk 2 none
    first = by_chunk[f"tidyq.predict.chunk[{job.id[:8]} direct:openai/gpt-4o-mini #0]"]
    second = by_chunk[f"tidyq.predict.chunk[{job.id[:8]} direct:openai/gpt-4o-mini #1]"]
    last = by_chunk[f"tidyq.predict.chunk[{job.id[:8]} direct:openai/gpt-4o-mini #2]"]
    assert first["state"] == second["state"] == "FAILURE" and last["state"] == "SUCCESS"
    assert "2 of 2 items failed (LMInvalidRequestError x2); succeeded 0" in first["exception"]
    assert "1 of 2 items failed (LMInvalidRequestError x1); succeeded 1" in second["exception"]
    result = last["result"]
    assert "'succeeded': 2" in result and "'failed': 0" in result and f"'job': '{job.id}'" in result

    workers = json.loads(_get(f"{base}/workers?json=1", auth)[1])["data"]
    assert sum(w.get("task-failed", 0) for w in workers) == 2
    assert sum(w.get("task-succeeded", 0) for w in workers) == 1
    metrics = _get(f"{base}/metrics")[1].decode()
    failed_lines = [line for line in metrics.splitlines()
                    if line.startswith("flower_events_total") and 'type="task-failed"' in line and job.id[:8] in line]
    assert len(failed_lines) == 2
    assert "Traceback" not in (tmp_path / "worker.log").read_text()  # an expected outcome, logged without one


def test_inspect_replies_of_a_worker_never_carry_item_inputs(redis_url, start_worker):
    """Flower's worker page asks the workers `inspect reserved/scheduled`, whose replies hold raw task
    arguments unless the task's Request says otherwise: ours answer with our argsrepr."""
    from producers.client import Client
    from shared.queues import CHUNK_TASK
    from shared.task_labels import chunk_send_options

    start_worker(queues=["predict.mock"])
    client = Client(redis_url)
    job = client.submit_batch([{"custom_id": "0", "inputs": {"question": "the-private-question"}}],
                              "question -> answer", backend="mock")
    job.wait(timeout=60)
    payload = {"job": {**client.store.spec(job.id).model_dump(mode="json"), "id": job.id}, "chunk": 1,
               "items": [{"custom_id": "later", "inputs": {"question": "the-private-question"}}], "requeues": 1}
    client.app.send_task(CHUNK_TASK, args=[payload], queue="predict.mock", countdown=120,
                         **chunk_send_options(CHUNK_TASK, payload))
    inspect = client.app.control.inspect(timeout=5)
    scheduled = []
    deadline = time.monotonic() + 30
    while not scheduled:
        scheduled = [entry for reply in (inspect.scheduled() or {}).values() for entry in reply]
        assert time.monotonic() < deadline, "the countdown chunk never showed as scheduled"
        time.sleep(0.3)
    request = scheduled[0]["request"]
    assert request["name"] == f"tidyq.predict.chunk[{job.id[:8]} mock #1 r1]"
    assert request["args"] == f"(job={job.id}, chunk=1, items=1, backend=mock, requeues=1)"
    replies = json.dumps([scheduled, inspect.reserved(), inspect.active()])
    assert "private-question" not in replies
