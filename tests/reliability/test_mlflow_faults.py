"""The fault matrix's MLflow rows: a real `mlflow server` stopped during a batch job and during an
optimize job, and an artifact store that refuses writes. A batch job never depends on tracking
(exact results, the job completes); an optimize job ends `failed` naming MLflow, within a bound,
and registers nothing half-written."""

from __future__ import annotations

import threading

import pytest
import redis

from producers import Client
from shared import keys
from tests.fakes.mlflow_gateway import start_mlflow_gateway
from tests.optimize_support import icl_reply, mlflow_template, mlflow_uri, sentiment_rows  # noqa: F401
from tests.reliability.conftest import SIG, direct_env, rows, wait_for
from tests.reliability.test_fault_matrix import assert_exact

QUEUES = ["predict.direct", "optimize"]


def optimize(client: Client, name: str):
    return client.submit_optimize(name=name, trainset=sentiment_rows(24), valset=sentiment_rows(20, offset=100),
                                  signature="review -> sentiment", optimizer="bootstrap-fewshot", metric="exact_match",
                                  backend="direct", settings={"max_bootstrapped_demos": 3})


@pytest.mark.slow
def test_mlflow_server_down_during_a_batch_and_during_an_optimize_job(redis_url, start_worker, openai_fake,
                                                                      tmp_path, figures):
    server = start_mlflow_gateway(openai_fake, tmp_path / "mlflow")
    env = direct_env(openai_fake, TIDYQ_MLFLOW_TRACKING_URI=server.tracking_uri, TIDYQ_MLFLOW_REQUEST_TIMEOUT=2,
                     TIDYQ_CONCURRENCY_DIRECT=4, TIDYQ_OPTIMIZE_HEARTBEAT_SECONDS=1)
    again: dict = {}

    def start_again() -> None:
        """The server the optimize job starts with (same store, new port) and the optimize worker on
        it: their slow starts overlap the batch part, whose worker knows only the first server."""
        again["server"] = start_mlflow_gateway(openai_fake, tmp_path / "mlflow", endpoint="again", log_name="again.log")
        start_worker(queues=["optimize"], concurrency=1, env=env | {"TIDYQ_MLFLOW_TRACKING_URI": again["server"].url})

    starting = threading.Thread(target=start_again)
    starting.start()
    try:
        start_worker(queues=["predict.direct"], concurrency=2, env=env)
        client = Client()
        r = redis.Redis.from_url(redis_url)

        # a batch job: MLflow goes away at a third; the items do not care
        openai_fake.set_latency(0.05)
        inputs = rows(400, "mb")
        job = client.submit_batch(inputs, SIG, backend="direct", chunk_size=25)
        wait_for(lambda: job.status()["counts"]["succeeded"] >= 130, 60, "a third of the items")
        server.stop()
        assert_exact(redis_url, job, inputs, job.wait(timeout=120, poll=0.1))
        assert r.hget(keys.job(job.id), "mlflow_run_id") is None  # its run could not be written: no claim of one

        # an optimize job: MLflow is back at the start, gone while the optimizer runs
        starting.join(timeout=180)
        server = again["server"]
        openai_fake.set_responder(icl_reply)
        openai_fake.set_latency(0.2)  # the optimizer takes a few seconds
        opt = optimize(client, "down")
        wait_for(lambda: (opt.status().get("progress") or {}).get("step", 0) >= 1, 120, "the optimizer running")
        server.stop()
        st = opt.wait(timeout=120, poll=0.2)
        assert st["status"] == "failed", st
        assert "MLflow" in (st.get("error") or ""), st
        from mlflow import MlflowClient

        store = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")  # the server's own database
        assert [m.name for m in store.search_registered_models()] == []  # nothing half-registered
        figures("mlflow_down", {"batch_items": 400, "optimize_error": st["error"][:200]})
    finally:
        starting.join(timeout=180)
        for each in [server, *again.values()]:  # stop() is idempotent
            each.stop()


@pytest.mark.slow
def test_an_artifact_store_refusing_writes_fails_the_optimize_job_with_its_cause(
        redis_url, mlflow_uri, start_worker, openai_fake, tmp_path):  # noqa: F811 (the imported fixture)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the artifact root should be\n")
    env = {"TIDYQ_API_BASE": openai_fake.base_url, "TIDYQ_API_KEY": "sk-test", "TIDYQ_CACHE_ENABLED": "false",
           "TIDYQ_MLFLOW_TRACKING_URI": mlflow_uri, "TIDYQ_MLFLOW_EXPERIMENT": "refusing",
           "TIDYQ_MLFLOW_ARTIFACT_ROOT": f"file://{blocker}/artifacts", "TIDYQ_MODEL": "openai/gpt-4o-mini"}
    start_worker(queues=QUEUES, concurrency=1, env=env)
    openai_fake.set_responder(icl_reply)
    client = Client()
    st = optimize(client, "refused").wait(timeout=180, poll=0.2)
    assert st["status"] == "failed" and "artifact" in st["error"], st
    from mlflow import MlflowClient

    assert [m.name for m in MlflowClient(mlflow_uri).search_registered_models()] == []
    # a batch job on the same store is not affected (its run holds no artifacts)
    openai_fake.set_responder(None)
    inputs = rows(60, "ar")
    job = client.submit_batch(inputs, SIG, backend="direct", chunk_size=20)
    assert_exact(redis_url, job, inputs, job.wait(timeout=60, poll=0.1))
