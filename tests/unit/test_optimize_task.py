"""The optimize task's body (workers/optimize_task.py `execute`) in this process, on real parts:
redis-server (job store, claim key), a real sqlite MLflow store (run, registry) and the offline
mock backend. The end-to-end path through a `celery -A workers worker` process is
tests/integration/test_optimize_worker.py; these pin down each outcome the task records."""

from __future__ import annotations

import json
import socket
import time

import pytest

from shared import keys
from shared.jobs import JobKind, JobSpec, JobState, new_job_id
from shared.optimize import OptimizeRequest
from tests.optimize_support import mlflow_template, mlflow_uri, sentiment_rows  # noqa: F401
from workers import optimize_task, tasks

SIGNATURE = "review -> sentiment"


@pytest.fixture
def store(redis_url, monkeypatch):
    monkeypatch.setattr(tasks, "_stores", {})  # one store per process: point it at this test's Redis
    monkeypatch.setenv("TIDYQ_CACHE_ENABLED", "false")
    monkeypatch.setenv("TIDYQ_OPTIMIZE_HEARTBEAT_SECONDS", "0.5")
    return tasks.job_store()


def optimize_payload(store, **request) -> dict:
    """A job written to the store as a producer writes it, and the task payload it sends."""
    spec = JobSpec(id=new_job_id(), kind=JobKind.OPTIMIZE, signature=SIGNATURE, backend="mock", total=1,
                   chunk_size=1, ttl_seconds=600, created_at=time.time())
    store.create_job(spec)
    body = {"name": "sentiment", "signature": SIGNATURE, "trainset": sentiment_rows(8), "optimizer": "labeled-fewshot",
            "settings": {"k": 3}, "metric": "exact_match"} | request
    return {"job": spec.model_dump(mode="json"), "request": OptimizeRequest(**body).model_dump(mode="json")}


def test_a_job_is_optimized_registered_and_completed(store, mlflow_uri):
    from mlflow import MlflowClient

    payload = optimize_payload(store)
    job_id = payload["job"]["id"]
    result = optimize_task.execute(payload)

    assert result["status"] == "registered" and result["model_uri"] == "models:/sentiment/1"
    assert result["demos"] == 3
    status = store.status(job_id)
    assert status.status is JobState.COMPLETED and status.counts.succeeded == 1
    assert status.result is not None and status.result["model_uri"] == "models:/sentiment/1"
    assert status.progress is not None and status.progress["phase"] == "registering"
    (row,) = list(store.iter_results(job_id, follow=False))
    assert row["status"] == "succeeded" and row["outputs"]["version"] == result["version"]
    assert store.r.get(keys.optimize_claim(job_id)) is None  # the claim is released
    version = MlflowClient(mlflow_uri).get_model_version("sentiment", "1")
    assert version.tags["tidyq.job_id"] == job_id and version.tags["tidyq.optimizer"] == "labeled-fewshot"


def test_a_second_delivery_while_the_first_holds_the_claim_changes_nothing(store, mlflow_uri):
    payload = optimize_payload(store)
    job_id = payload["job"]["id"]
    store.r.set(keys.optimize_claim(job_id), "other-worker:1:0", ex=30)
    assert optimize_task.execute(payload) == {"status": "duplicate"}
    assert store.state(job_id) is JobState.QUEUED
    assert store.r.get(keys.optimize_claim(job_id)) == b"other-worker:1:0"


def test_a_job_cancelled_before_it_started_never_runs(store, mlflow_uri):
    payload = optimize_payload(store)
    job_id = payload["job"]["id"]
    store.cancel(job_id)
    assert optimize_task.execute(payload) == {"status": "cancelled"}
    assert store.status(job_id).result is None


def test_a_request_a_worker_cannot_run_fails_the_job_with_the_reason(store, mlflow_uri):
    payload = optimize_payload(store)
    payload["request"]["optimizer"] = "no-such-optimizer"  # only a broken or hand-made message gets here
    result = optimize_task.execute(payload)
    assert result["status"] == "failed" and "no-such-optimizer" in result["error"]
    status = store.status(payload["job"]["id"])
    assert status.status is JobState.FAILED and status.error is not None and status.error.startswith("BadInput:")
    assert status.result == {"status": "failed", "error": {"type": "BadInput", "message": result["error"]}}


def test_mlflow_down_fails_the_job_naming_the_tracking_server(store, mlflow_uri, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TIDYQ_MLFLOW_REQUEST_TIMEOUT", "1")
    payload = optimize_payload(store)
    result = optimize_task.execute(payload)
    assert result["status"] == "failed" and "unreachable" in result["error"]
    assert store.status(payload["job"]["id"]).error.startswith("ConfigurationError: MLflow at")


def test_a_message_without_a_job_id_is_dropped(store):
    assert optimize_task.execute({"request": {}}) == {"status": "dropped"}
    assert optimize_task.execute(["not", "a", "dict"]) == {"status": "dropped"}


_cancel_on_first_call: dict[str, str] = {}


def cancelling_metric(example, prediction, trace=None) -> float:
    """exact_match; its first call cancels the job through the store, as `tidyq cancel` would
    while the job runs (allow-listed below as a user metric). The optimizer sees it at its next
    search call."""
    job_id = _cancel_on_first_call.pop("job", None)
    if job_id is not None:
        tasks.job_store().cancel(job_id)
    return float(str(example.sentiment).strip().lower() == str(prediction.sentiment).strip().lower())


def test_a_cancel_during_the_run_stops_it_and_registers_nothing(store, mlflow_uri, monkeypatch):
    from mlflow import MlflowClient

    name = f"{__name__}:cancelling_metric"
    monkeypatch.setenv("TIDYQ_METRIC_ALLOW_LIST", json.dumps([name]))
    payload = optimize_payload(store, metric=name, trainset=sentiment_rows(30), optimizer="bootstrap-fewshot",
                               settings={"max_bootstrapped_demos": 4})
    job_id = payload["job"]["id"]
    _cancel_on_first_call["job"] = job_id
    result = optimize_task.execute(payload)
    assert result["status"] == "cancelled", result
    assert store.state(job_id) is JobState.CANCELLED
    assert MlflowClient(mlflow_uri).search_model_versions("name='sentiment'") == []
