"""Completion webhooks end to end: a real API process, real workers delivering through the queue, a
loopback receiver that checks every signature and fails on purpose before it accepts."""

import httpx
import pytest

from producers import Client
from producers.api.process import ApiServerProcess
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.waiting import wait_for

TOKEN = "api-token-0123456789abcdef"
SECRET = "whsec-test-0123456789"
SIG = "question -> answer"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
WORKER_ENV = {"TIDYQ_WEBHOOK_SECRET": SECRET, "TIDYQ_WEBHOOK_ALLOW_PRIVATE": "true",
              "TIDYQ_WEBHOOK_RETRY_BASE_SECONDS": "0.2"}


@pytest.fixture
def api(redis_url, tmp_path):
    env = {"TIDYQ_REDIS_URL": redis_url, "TIDYQ_API_TOKENS": TOKEN, "TIDYQ_WEBHOOK_SECRET": SECRET,
           "TIDYQ_WEBHOOK_ALLOW_PRIVATE": "true"}
    server = ApiServerProcess(env, log_path=tmp_path / "api.log").start()
    yield server
    server.stop()


def status(api, job_id):
    return httpx.get(f"{api.url}/jobs/{job_id}", headers=HEADERS).json()


def test_signed_end_event_retried_after_two_500s_and_delivered_once(api, start_worker):
    worker = start_worker(concurrency=1, env=WORKER_ENV)
    with WebhookReceiver(SECRET, statuses=[500, 500]) as receiver:
        rows = [{"custom_id": f"w{i}", "inputs": {"question": f"hook {i}"}} for i in range(12)]
        r = httpx.post(f"{api.url}/jobs", headers=HEADERS,
                       json={"signature": SIG, "backend": "mock", "rows": rows, "webhook_url": receiver.url})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_for(lambda: receiver.delivered(), 60, "the webhook to be accepted")
        state = wait_for(lambda: (status(api, job_id).get("webhooks") or {}).get("job.completed", {})
                         .get("state") == "delivered" and status(api, job_id), 30, "the delivery state")
        assert [d["status"] for d in receiver.deliveries] == [500, 500, 200]
        assert all(d["signature_ok"] for d in receiver.deliveries)
        assert {d["event_id"] for d in receiver.deliveries} == {f"{job_id}.job.completed"}  # one event id
        body = receiver.deliveries[-1]["body"]
        assert body["id"] == job_id and body["status"] == "completed" and body["event"] == "job.completed"
        assert body["counts"] == {"total": 12, "succeeded": 12, "failed": 0}
        delivery = state["webhooks"]["job.completed"]
        assert delivery["attempts"] == 3 and delivery["last_response"] == "HTTP 200"
        # a redelivered chunk or a second look at the ended job schedules nothing new
        Client().job(job_id).cancel()
        assert len(receiver.deliveries) == 3
    assert SECRET not in worker.log_path.read_text() and SECRET not in api.log()


def test_cancel_of_a_queued_job_and_progress_events(api, start_worker, monkeypatch):
    monkeypatch.setenv("TIDYQ_WEBHOOK_SECRET", SECRET)  # this test process submits through the Client too
    monkeypatch.setenv("TIDYQ_WEBHOOK_ALLOW_PRIVATE", "true")
    with WebhookReceiver(SECRET) as receiver:
        r = httpx.post(f"{api.url}/jobs", headers=HEADERS,  # no worker yet: the job stays queued
                       json={"signature": SIG, "backend": "mock", "webhook_url": receiver.url,
                             "rows": [{"inputs": {"question": "never"}}]})
        job_id = r.json()["id"]
        assert httpx.post(f"{api.url}/jobs/{job_id}/cancel", headers=HEADERS).json()["status"] == "cancelled"
        start_worker(concurrency=1, env={**WORKER_ENV, "TIDYQ_WEBHOOK_PROGRESS_PERCENT": "50"})
        wait_for(lambda: receiver.delivered(), 60, "the cancelled event")
        assert receiver.delivered()[0]["event_id"] == f"{job_id}.job.cancelled"

        job = Client().submit_batch([{"custom_id": f"p{i}", "inputs": {"question": f"p{i}"}} for i in range(20)],
                                    SIG, backend="mock", chunk_size=5, webhook_url=receiver.url)
        job.wait(timeout=60)
        events = wait_for(lambda: {d["event"] for d in receiver.delivered() if d["body"]["id"] == job.id}
                          >= {"job.progress.50", "job.completed"} and receiver.delivered(), 60, "progress + end")
        mine = [d["event"] for d in events if d["body"]["id"] == job.id]
        assert len(mine) == len(set(mine))  # each event id arrives once
        assert set(mine) <= {"job.progress.50", "job.completed"}


def test_a_receiver_that_turned_private_is_refused_at_delivery(redis_url, start_worker):
    # the producer allows private receivers, the workers do not: the delivery re-check refuses it
    start_worker(concurrency=1, env={**WORKER_ENV, "TIDYQ_WEBHOOK_ALLOW_PRIVATE": "false"})
    with WebhookReceiver(SECRET) as receiver, pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIDYQ_WEBHOOK_SECRET", SECRET)
        mp.setenv("TIDYQ_WEBHOOK_ALLOW_PRIVATE", "true")
        job = Client().submit_predict(SIG, {"question": "x"}, backend="mock", webhook_url=receiver.url)
        job.result(timeout=60)
        state = wait_for(lambda: (job.status().get("webhooks") or {}).get("job.completed", {}).get("state")
                         == "refused" and job.status()["webhooks"]["job.completed"], 60, "the refusal")
        assert "loopback" in state["last_error"] and receiver.deliveries == []


def test_webhooks_without_a_secret_or_to_private_hosts_are_refused_at_submit(redis_url, monkeypatch):
    monkeypatch.delenv("TIDYQ_WEBHOOK_SECRET", raising=False)
    from shared.errors import BadInput, ConfigurationError

    with pytest.raises(ConfigurationError, match="TIDYQ_WEBHOOK_SECRET"):
        Client().submit_predict(SIG, {"question": "x"}, backend="mock", webhook_url="http://127.0.0.1:1/")
    monkeypatch.setenv("TIDYQ_WEBHOOK_SECRET", SECRET)
    with pytest.raises(BadInput) as err:
        Client().submit_predict(SIG, {"question": "x"}, backend="mock", webhook_url="http://169.254.169.254/")
    assert err.value.where == "webhook_url"
