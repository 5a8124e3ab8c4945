"""Submit checks the target against what live workers report (real redis-server, real workers, the
real `tidyq` console script): a backend no worker on its queue has configured is refused with exit 2,
what to set and nothing enqueued; a queue nobody serves yet is accepted with a warning."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from producers.ops_state import OpsReader
from shared.queues import ALL_QUEUES
from tests.waiting import wait_for

TIDYQ = str(Path(sys.executable).with_name("tidyq"))
SIG = "question -> answer"


def tidyq(args, redis_url, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TIDYQ_")}
    full.update(TIDYQ_REDIS_URL=redis_url, LITELLM_LOCAL_MODEL_COST_MAP="True", **env)
    return subprocess.run([TIDYQ, *args], env=full, capture_output=True, text=True, timeout=120)


def nothing_enqueued(redis_url):
    r = redis.Redis.from_url(redis_url)
    return all(r.llen(q) == 0 for q in ALL_QUEUES) and not r.keys("tidyq:job:*") and not r.zcard("tidyq:jobs")


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": str(i), "inputs": {"question": f"q{i}?"}}) + "\n"
                            for i in range(3)))
    return str(path)


@pytest.fixture
def keyless(monkeypatch):
    """Workers started from here have no provider credentials at all (as on a fresh machine)."""
    for name in [k for k in os.environ if k.endswith("_API_KEY") or k.startswith(("AWS_", "TIDYQ_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def reported(redis_url, queue):
    workers = OpsReader(redis.Redis.from_url(redis_url)).workers()
    return [w for w in workers if queue in w.queues and w.backends is not None]


def test_a_backend_no_worker_has_configured_is_refused_with_what_to_set(redis_url, start_worker, keyless, rows):
    start_worker(queues=["predict.direct", "predict.mock"])
    assert wait_for(lambda: reported(redis_url, "predict.direct"), 60, "the worker's backends")[0].backends == ["mock"]
    out = tidyq(["batch", rows, "--signature", SIG, "--backend", "direct", "--model", "openai/gpt-4o-mini"],
                redis_url)
    assert out.returncode == 2, out.stderr
    assert "backend: no live worker on predict.direct has backend 'direct' configured" in out.stderr
    assert "OPENAI_API_KEY" in out.stderr and "TIDYQ_API_KEY" in out.stderr and "Traceback" not in out.stderr
    assert nothing_enqueued(redis_url)

    # the same workers run mock jobs, and the refusal can be turned into a warning
    assert tidyq(["batch", rows, "--signature", SIG, "--backend", "mock"], redis_url).returncode == 0
    warned = tidyq(["batch", rows, "--signature", SIG, "--backend", "direct", "--model", "openai/gpt-4o-mini"],
                   redis_url, TIDYQ_SUBMIT_CHECK="warn")
    assert warned.returncode == 0 and len(warned.stdout.split()) == 1
    assert "tidyq: warning: no live worker on predict.direct has backend 'direct'" in warned.stderr


def test_a_worker_with_credentials_is_enough(redis_url, start_worker, keyless, rows):
    start_worker(queues=["predict.gateway"], env={"TIDYQ_GATEWAY_URL": "http://127.0.0.1:9"})
    wait_for(lambda: reported(redis_url, "predict.gateway"), 60, "the worker's backends")
    out = tidyq(["batch", rows, "--signature", SIG, "--backend", "gateway", "--model", "chat"], redis_url)
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


def test_a_queue_nobody_serves_yet_is_accepted_with_a_warning_or_refused_when_strict(redis_url, keyless, rows):
    out = tidyq(["batch", rows, "--signature", SIG, "--backend", "bedrock",
                 "--model", "anthropic.claude-3-haiku-20240307-v1:0"], redis_url)
    assert out.returncode == 0, out.stderr
    assert ("tidyq: warning: no live worker serves queue predict.bedrock now; the job waits until one starts "
            "(`celery -A workers worker -Q predict.bedrock`)") in out.stderr
    job_id = out.stdout.strip()
    assert redis.Redis.from_url(redis_url).llen("predict.bedrock") == 1 and len(job_id) == 32

    redis.Redis.from_url(redis_url).flushdb()
    strict = tidyq(["batch", rows, "--signature", SIG, "--backend", "bedrock",
                    "--model", "anthropic.claude-3-haiku-20240307-v1:0"], redis_url, TIDYQ_SUBMIT_CHECK="strict")
    assert strict.returncode == 2 and "TIDYQ_SUBMIT_CHECK=strict" in strict.stderr
    assert nothing_enqueued(redis_url)
    bad = tidyq(["batch", rows, "--signature", SIG, "--backend", "mock"], redis_url, TIDYQ_SUBMIT_CHECK="sometimes")
    assert bad.returncode == 2 and "TIDYQ_SUBMIT_CHECK: unknown mode 'sometimes'" in bad.stderr


def test_the_python_client_warns_with_submitwarning(redis_url, keyless):
    from producers.client import Client, SubmitWarning

    with pytest.warns(SubmitWarning, match="no live worker serves queue predict.direct"):
        job = Client(redis_url).submit_batch([{"custom_id": "1", "inputs": {"question": "q"}}], SIG, backend="direct",
                                             model="openai/gpt-4o-mini")
    assert job.warnings and job.warnings[0].startswith("no live worker serves queue predict.direct")
