"""One job with failed items told the same way everywhere (real redis-server, a real worker, a real
sqlite MLflow store, the OpenAI stand-in): error types, attempts and LM calls agree between the
results, `tidyq status`, the job's MLflow run and Prometheus; `tidyq_jobs_running` counts the job
from its first chunk; the run is RUNNING while the job runs and ends FAILED at the job's times."""

from __future__ import annotations

from collections import Counter

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from producers.client import Client
from producers.metrics_exporter import exposition
from producers.ops_state import OpsReader
from shared import keys
from tests.fakes.openai_server import OpenAIFake
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)
from tests.waiting import wait_for

SIG = "question -> answer"
N = 12


def prometheus(redis_url) -> dict[tuple[str, tuple], float]:
    text = exposition(OpsReader(redis.Redis.from_url(redis_url)))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def summed(samples, name, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def by_label(samples, name, label) -> dict[str, float]:
    out: Counter[str] = Counter()
    for (n, ls), v in samples.items():
        if n == name:
            out[dict(ls)[label]] += v
    return dict(out)


def test_results_status_mlflow_and_prometheus_tell_the_same_numbers(redis_url, start_worker, mlflow_uri):
    from mlflow import MlflowClient

    fake = OpenAIFake().start()
    try:
        start_worker(queues=["predict.direct"], env={
            "TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-vocabulary-test", "TIDYQ_CACHE_ENABLED": "false",
            "TIDYQ_CONCURRENCY_DIRECT": "1", "TIDYQ_BREAKER_ENABLED": "false", "TIDYQ_MLFLOW_PROGRESS_INTERVAL": "0.5",
            "TIDYQ_METRICS_INTERVAL": "0.5"})
        # the first request is a 503 (retried), then three rejected requests (400, not retried); answers
        # are slow until the test has seen the job running, so it cannot end before that
        fake.script(503, 400, 400, 400)
        fake.set_latency(5.0)
        rows = [{"custom_id": str(i), "inputs": {"question": f"What is {i} plus {i}?"}} for i in range(N)]
        job = Client(redis_url).submit_batch(rows, SIG, backend="direct", model="openai/gpt-4o-mini", chunk_size=3)

        wait_for(lambda: job.status()["status"] == "running", 60, "the job to start")
        assert summed(prometheus(redis_url), "tidyq_jobs_running") == 1  # from the first chunk on
        r = redis.Redis.from_url(redis_url)
        run_id = wait_for(lambda: r.hget(keys.job(job.id), "mlflow_run_id"), 30, "the job's MLflow run").decode()
        running = MlflowClient(mlflow_uri).get_run(run_id)
        assert running.info.status == "RUNNING" and job.status()["status"] == "running"
        fake.set_latency(0.05)
        results = list(job.results(timeout=120))
    finally:
        fake.stop()

    status = job.status()
    failed = [x for x in results if x["status"] == "failed"]
    assert len(results) == N and len(failed) == 3 and status["counts"]["failed"] == 3
    errors = dict(Counter(x["error"]["type"] for x in failed))
    assert errors == {"LMInvalidRequestError": 3} == status["error_types"]
    attempts = sum(x["attempts"] for x in results)
    assert attempts >= N + 1 and min(x["attempts"] for x in failed) >= 1  # failed items made attempts too
    usage = status["usage"]
    assert usage["attempts"] == attempts and usage["lm_calls"] >= N
    cost = sum(x.get("cost_usd") or 0.0 for x in results)  # DSPy's price table knows gpt-4o-mini
    assert cost > 0 and usage["cost_usd"] == pytest.approx(cost, rel=1e-6)

    run = wait_for(lambda: (lambda got: got if got.info.status != "RUNNING" else None)(
        MlflowClient(mlflow_uri).get_run(run_id)), 30, "the run to end")
    h = r.hgetall(keys.job(job.id))
    assert run.info.status == "FAILED"
    assert run.info.start_time == int(float(h[b"started_at"]) * 1000)
    assert run.info.end_time == int(float(h[b"finished_at"]) * 1000)
    m = run.data.metrics
    assert (m["failed"], m["errors.LMInvalidRequestError"]) == (3, 3)
    assert (m["attempts"], m["lm_calls"]) == (attempts, usage["lm_calls"])
    assert m["cost_usd"] == pytest.approx(cost, rel=1e-6)
    assert run.data.tags["tidyq.error_types"] == "LMInvalidRequestError: 3"
    progress = MlflowClient(mlflow_uri).get_metric_history(run_id, "progress.done")
    assert progress and all(p.step == p.value for p in progress)  # stepped by items done

    def published():
        s = prometheus(redis_url)
        return s if summed(s, "tidyq_items_total") == N else None

    s = wait_for(published, 30, "the worker's counters")
    assert by_label(s, "tidyq_item_errors_total", "error") == errors
    assert summed(s, "tidyq_items_total", status="failed") == 3
    assert summed(s, "tidyq_lm_attempts_total") == attempts
    assert summed(s, "tidyq_lm_calls_total") == usage["lm_calls"]
    assert summed(s, "tidyq_cost_usd_total") == pytest.approx(cost, rel=1e-6)
    lm_errors = by_label(s, "tidyq_lm_errors_total", "error")
    assert set(lm_errors) == {"LMInvalidRequestError"}  # the results' name, not the engine's InvalidRequestError
    wait_for(lambda: summed(prometheus(redis_url), "tidyq_jobs_running") == 0, 10, "the job to leave the gauge")
