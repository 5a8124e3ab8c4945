"""Secrets never leave the worker's environment: known API key, AWS secret and Redis password
values are grepped for in everything a run writes (worker logs, every Redis key and value incl.
the queued task messages Flower shows as task arguments, the AOF files on disk, job status and
results, the MLflow store with the job's run params). Jobs carry no credentials."""

import json
import os
import time
from pathlib import Path

import pytest
import redis

from producers import Client
from tests.reliability.conftest import SIG, direct_env, rows

API_KEY = "sk-live-TIDYQSECRETapikey-7f3a9c"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTIDYQSECRET"
AWS_SESSION = "FwoGZXIvYXdzEXAMPLEsessionTIDYQSECRET"


def redis_contents(client) -> bytes:
    """Every key and value in the database, as bytes (hashes, lists, sets, zsets, strings)."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out.append(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(client.smembers(key))
        elif kind == b"zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(out)


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_no_secret_reaches_logs_redis_results_status_or_mlflow(shipped_redis, worker_on, openai_fake, tmp_path,
                                                               monkeypatch, figures):
    mlflow_db = tmp_path / "mlflow" / "mlflow.db"
    mlflow_db.parent.mkdir()
    tracking = f"sqlite:///{mlflow_db}"
    from mlflow import MlflowClient

    # create the store's schema first: two pool processes creating a fresh sqlite store at once
    # race on its migrations (one of them turns tracking off for a minute)
    MlflowClient(tracking_uri=tracking).search_experiments()
    openai_fake.require_auth(API_KEY)  # the key is really used on every call
    env = direct_env(openai_fake, api_key=API_KEY, TIDYQ_CONCURRENCY_DIRECT=4, TIDYQ_MLFLOW_TRACKING_URI=tracking,
                     AWS_ACCESS_KEY_ID="AKIATIDYQEXAMPLE", AWS_SECRET_ACCESS_KEY=AWS_SECRET,
                     AWS_SESSION_TOKEN=AWS_SESSION, AWS_DEFAULT_REGION="us-east-1", TIDYQ_LOG_LEVEL="DEBUG")
    worker = worker_on(shipped_redis.url, ["predict.direct", "predict.mock"], 2, env)
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", tracking)
    client = Client(shipped_redis.url)

    # a successful batch, one with provider errors (401 with a wrong key, 500s), and a bad-input item
    openai_fake.fail_next(3, status=500)
    job = client.submit_batch(rows(60, "sec"), SIG, backend="direct", chunk_size=20)
    st = job.wait(timeout=90)
    assert st["counts"]["succeeded"] == 60
    openai_fake.require_auth("sk-some-other-key-xyz")  # now the worker's key is rejected
    failing = client.submit_batch(rows(5, "auth"), SIG, backend="direct")
    failing.wait(timeout=90)
    openai_fake.require_auth(API_KEY)
    status_texts = [json.dumps(j.status()) for j in (job, failing)]
    result_texts = [json.dumps(list(j.results(timeout=10))) for j in (job, failing)]
    assert any(r["status"] == "failed" for r in failing.results(timeout=5))

    # jobs carry no credentials: the spec stored with the job and sent in every chunk message
    spec = client.store.spec(job.id).model_dump()
    assert not {"api_key", "password", "aws_secret_access_key", "credentials"} & {k.lower() for k in spec}

    # one MLflow run per job: the worker writes it when the job ends (else written here the same way)
    from shared import keys
    from shared import tracking as tracking_mod

    job_key = keys.job(job.id)
    r = redis.Redis.from_url(shipped_redis.url)
    deadline = time.monotonic() + 60  # the last chunk writes it; MLflow's first use takes seconds
    while time.monotonic() < deadline and not r.hget(job_key, "mlflow_run_id"):
        time.sleep(0.2)
    raw_run = r.hget(job_key, "mlflow_run_id")
    written_by_worker = raw_run is not None
    run_id = raw_run.decode() if raw_run else tracking_mod.finish_job(job.id, r)
    mlflow_params = {}
    assert run_id, ("no MLflow run was written for the job", {k: v[:80] for k, v in r.hgetall(job_key).items()})
    if run_id:
        mlflow_params = MlflowClient(tracking_uri=tracking).get_run(run_id).data.params

    # a message still in the queue (what Flower shows as task arguments): enqueue with no worker on it
    queued = client.submit_batch(rows(3, "queued"), SIG, backend="gateway")
    time.sleep(0.3)
    worker.stop()
    r = redis.Redis.from_url(shipped_redis.url)
    assert r.llen("predict.gateway") == 1
    r.bgrewriteaof()
    time.sleep(1.0)

    secrets = {"api key": API_KEY, "aws secret": AWS_SECRET, "aws session token": AWS_SESSION,
               "redis password": shipped_redis.password}
    haystacks = {"redis keys and values (incl. queued task arguments)": redis_contents(r),
                 "job status": "\n".join(status_texts).encode(), "results": "\n".join(result_texts).encode(),
                 "mlflow run params": json.dumps(mlflow_params).encode()}
    for path in files_under(tmp_path, shipped_redis.directory, mlflow_db.parent):
        haystacks[str(path)] = path.read_bytes()
    leaks = [f"{name} in {where}" for where, data in haystacks.items() for name, value in secrets.items()
             if value.encode() in data]
    figures("secrets", {"places_grepped": len(haystacks), "bytes_grepped": sum(len(v) for v in haystacks.values()),
                        "mlflow_run": bool(run_id), "run_written_by_worker": written_by_worker,
                        "mlflow_params": sorted(mlflow_params), "leaks": leaks})
    assert not leaks
    assert queued.status()["status"] == "queued"
    # the grep can find: the worker log really was written and names the key's effect
    assert "chunk_done" in worker.log_path.read_text()
    assert os.path.getsize(worker.log_path) > 1000
