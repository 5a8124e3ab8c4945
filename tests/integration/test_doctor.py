"""`tidyq doctor` against real deployments: passes on a healthy one (AOF + password Redis, a
real worker, a real `mlflow server`, a provider stand-in speaking the OpenAI wire format) and
fails, naming the fix, on broken ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import redis

from producers.ops_state import OpsReader
from shared.redis_server import RedisServer, free_port

TIDYQ = os.path.join(os.path.dirname(sys.executable), "tidyq")
CLEAN = {"TIDYQ_GATEWAY_URL": "", "TIDYQ_API_KEY": "", "TIDYQ_API_BASE": "", "TIDYQ_MODEL": "", "OPENAI_API_KEY": "",
         "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true",
         "TIDYQ_HEARTBEAT_INTERVAL": "1"}


def doctor(redis_url: str, *args: str, mlflow: str | None = None, timeout: float = 120) -> tuple[int, dict, str]:
    env = dict(os.environ, TIDYQ_REDIS_URL=redis_url, LITELLM_LOCAL_MODEL_COST_MAP="True")
    env.pop("TIDYQ_MLFLOW_TRACKING_URI", None)
    if mlflow:
        env["TIDYQ_MLFLOW_TRACKING_URI"] = mlflow
    out = subprocess.run([TIDYQ, "doctor", "--json", "--timeout", "30", *args], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert "Traceback" not in out.stderr, out.stderr
    report = json.loads(out.stdout) if out.stdout.strip() else {}
    return out.returncode, report, out.stderr


def rows(report: dict) -> dict[str, dict]:
    return {r["check"]: r for r in report["checks"]}


def wait_backends_known(url: str, n: int = 1, timeout: float = 30) -> None:
    reader = OpsReader(redis.Redis.from_url(url))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws = reader.workers()
        if len(ws) >= n and all(w.backends is not None for w in ws):
            return
        time.sleep(0.1)
    raise AssertionError("workers did not publish their configured backends")


def direct_env(openai_fake, key: str) -> dict:
    return {**CLEAN, "TIDYQ_MODEL": "openai/gpt-4o-mini", "TIDYQ_API_BASE": openai_fake.base_url, "TIDYQ_API_KEY": key}


def test_doctor_passes_on_a_healthy_deployment(tmp_path, openai_fake, mlflow_gateway):
    from producers.local_worker import LocalWorker

    password = os.urandom(8).hex()
    openai_fake.require_auth("sk-right")
    with RedisServer(appendonly=True, password=password, directory=tmp_path) as server:
        with LocalWorker(server.url, concurrency=1, env=direct_env(openai_fake, "sk-right"),
                         log_path=tmp_path / "worker.log"):
            wait_backends_known(server.url)
            code, report, err = doctor(server.url, mlflow=mlflow_gateway.url)
    by = rows(report)
    assert code == 0, report
    assert report["ok"] is True
    assert by["redis"]["status"] == "ok" and password not in by["redis"]["detail"]
    assert by["redis persistence"]["status"] == "ok" and "AOF on" in by["redis persistence"]["detail"]
    for q in ("predict.mock", "predict.direct", "predict.bedrock", "predict.gateway", "optimize"):
        assert by[f"workers {q}"]["status"] == "ok"
    assert by["mlflow"]["status"] == "ok"
    assert by["version dspy"]["status"] == "ok"
    assert by["backend mock"]["status"] == "ok" and " ms " in by["backend mock"]["detail"]
    assert by["backend direct"]["status"] == "ok"
    assert openai_fake.request_count >= 1  # the probe really reached the provider
    assert by["backend bedrock"]["status"] == "skip" and by["backend gateway"]["status"] == "skip"


def test_doctor_fails_and_names_each_fix(redis_url, start_worker, openai_fake):
    openai_fake.require_auth("sk-right")
    start_worker(queues=["predict.mock", "predict.direct"], env=direct_env(openai_fake, "sk-wrong"))
    wait_backends_known(redis_url)
    code, report, _ = doctor(redis_url)  # the test redis has no persistence; no MLflow configured
    by = rows(report)
    assert code == 1 and report["ok"] is False
    failing = {c for c, r in by.items() if r["status"] == "FAIL"}
    assert failing == {"redis persistence", "workers predict.bedrock", "workers predict.gateway", "workers optimize",
                       "mlflow", "backend direct"}, by
    assert all(by[c]["fix"] for c in failing)
    assert "appendonly" in by["redis persistence"]["fix"]
    assert "-Q optimize" in by["workers optimize"]["fix"]
    assert "TIDYQ_MLFLOW_TRACKING_URI" in by["mlflow"]["fix"]
    direct = by["backend direct"]
    assert "credentials" in direct["fix"] and "Auth" in direct["detail"], direct
    assert by["backend mock"]["status"] == "ok"
    # with only the queues this deployment runs, only the real problems remain
    code, report, _ = doctor(redis_url, "--queue", "predict.mock", "--queue", "predict.direct", "--backend", "mock")
    failing = {c for c, r in rows(report).items() if r["status"] == "FAIL"}
    assert code == 1 and failing == {"redis persistence", "mlflow"}


def test_doctor_fails_fast_when_redis_is_unreachable_or_the_password_is_wrong(tmp_path):
    code, report, _ = doctor(f"redis://127.0.0.1:{free_port()}/0", timeout=60)
    by = rows(report)
    assert code == 1 and by["redis"]["status"] == "FAIL" and "TIDYQ_REDIS_URL" in by["redis"]["fix"]
    assert by["workers predict.mock"]["status"] == "skip"
    with RedisServer(password="right-password", directory=tmp_path) as server:
        code, report, _ = doctor(server.url.replace("right-password", "wrong-password"), timeout=60)
    by = rows(report)
    assert code == 1 and by["redis"]["status"] == "FAIL" and "password" in by["redis"]["fix"]
    assert "wrong-password" not in json.dumps(report)


def test_doctor_table_and_bad_usage(redis_url):
    env = dict(os.environ, TIDYQ_REDIS_URL=redis_url)
    out = subprocess.run([TIDYQ, "doctor", "--queue", "predict.nope"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "predict.nope" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([TIDYQ, "doctor", "--queue", "predict.mock"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "tidyq doctor" in out.stdout and "FAIL" in out.stdout and "check(s) failed" in out.stdout
