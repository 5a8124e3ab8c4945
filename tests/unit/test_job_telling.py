"""The pieces that make every view tell the same job (real redis-server where Redis is involved):
task names and argument summaries, the chunk failure Flower shows, error names, a failed
prediction's numbers, the submit-time target check's branches and the running-jobs gauge."""

from __future__ import annotations

import json
import time

import pytest
import redis

from producers.target_check import check_target, what_to_set
from shared import keys
from shared.config import Settings
from shared.errors import BadInput, ChunkItemsFailed, error_type_name
from shared.jobs import Target
from shared.steps import stats
from shared.task_labels import chunk_send_options, optimize_send_options


@pytest.fixture
def in_process_chunks(redis_url):
    """Chunk tasks run in this process start its metrics publisher: stop it while Redis is still up."""
    import os

    from workers import metrics_publisher

    yield
    pub = metrics_publisher._publishers.pop(os.getpid(), None)
    if pub is not None:
        pub.stop()


JOB = {"id": "0123456789abcdef0123456789abcdef", "backend": "direct", "model": "openai/gpt-4o-mini",
       "program": "models:/qa/3"}


def test_chunk_names_and_args_tell_the_job_and_never_the_inputs():
    payload = {"job": JOB, "chunk": 7, "items": [{"custom_id": "a", "inputs": {"question": "secret"}}] * 3,
               "requeues": 2}
    opts = chunk_send_options("tidyq.predict.chunk", payload)
    assert opts["shadow"] == "tidyq.predict.chunk[01234567 direct:openai/gpt-4o-mini #7 r2]"
    assert opts["argsrepr"] == (f"(job={JOB['id']}, chunk=7, items=3, backend=direct, model=openai/gpt-4o-mini, "
                                "program=models:/qa/3, requeues=2)")
    assert opts["kwargsrepr"] == "{}" and "secret" not in json.dumps(opts)
    mock = chunk_send_options("tidyq.predict.chunk", {"job": {"id": "ab", "backend": "mock"}, "chunk": 0,
                                                      "items": []})
    assert mock["shadow"] == "tidyq.predict.chunk[ab mock #0]"
    assert mock["argsrepr"] == "(job=ab, chunk=0, items=0, backend=mock)"


def test_optimize_tasks_show_sizes_of_their_data_only():
    request = {"name": "qa", "optimizer": "bootstrap-fewshot", "metric": "exact_match",
               "trainset": [{"inputs": {"q": "private"}}] * 4, "valset": [{"inputs": {"q": "private"}}] * 2}
    opts = optimize_send_options("tidyq.optimize", JOB, request)
    assert opts["shadow"] == "tidyq.optimize[01234567 qa bootstrap-fewshot]"
    assert "trainset=4" in opts["argsrepr"] and "valset=2" in opts["argsrepr"] and "private" not in json.dumps(opts)
    no_val = optimize_send_options("tidyq.optimize", {"id": "x", "backend": "mock"}, {**request, "valset": None})
    assert "valset" not in no_val["argsrepr"] and "target=mock" in no_val["argsrepr"]


def test_chunk_items_failed_names_counts_and_types_and_survives_a_round_trip():
    exc = ChunkItemsFailed({"items": 50, "succeeded": 47, "failed": 3, "error_types": {"LMNotConfiguredError": 3}})
    assert str(exc) == "3 of 50 items failed (LMNotConfiguredError x3); succeeded 47"
    import copy

    again = copy.copy(exc)  # what __reduce__ gives (Celery rebuilds exceptions the same way)
    assert str(again) == str(exc) and again.summary == exc.summary


def test_engine_errors_are_named_as_the_results_name_them():
    from dspy import lm15
    from dspy._vendor.lm15.router import MissingCredentialError

    assert error_type_name(MissingCredentialError("no key", provider="openai")) == "LMNotConfiguredError"
    assert error_type_name(lm15.RateLimitError("slow down")) == "LMRateLimitError"
    assert error_type_name(lm15.ContextLengthError("too long")) == "ContextWindowExceededError"
    assert error_type_name(ValueError("ours")) == "ValueError"


def test_a_failed_prediction_keeps_its_numbers_on_the_exception():
    with pytest.raises(RuntimeError) as info:
        with stats.track() as outer:
            with stats.track() as inner:
                inner.attempts = 1
                raise RuntimeError("provider said no")
    outer_stats = stats.of_error(info.value)
    assert outer_stats is outer  # the outermost collector wins
    assert stats.of_error(RuntimeError("never tracked")) is None


def _beat(r, host, queues, backends):
    mapping = {"queues": ",".join(queues), "processes": 1, "pid": 1, "host": host, "seen": repr(time.time())}
    if backends is not None:
        mapping["backends"] = ",".join(backends)
    r.hset(keys.worker_heartbeat(host), mapping=mapping)
    r.zadd(keys.workers_seen(), {host: time.time()})


def test_target_check_branches(redis_url):
    r = redis.Redis.from_url(redis_url)
    refuse, warn = Settings(submit_check="refuse"), Settings(submit_check="warn")
    direct = Target(backend="direct", model="anthropic/claude-3-5-haiku")
    assert check_target(r, "predict.direct", direct, Settings(submit_check="off")) == []
    _beat(r, "w1@a", ["predict.direct", "predict.mock"], None)  # has not told its backends yet
    assert check_target(r, "predict.mock", Target(backend="mock"), refuse) == []
    assert "has not reported its backends yet" in check_target(r, "predict.direct", direct, refuse)[0]
    _beat(r, "w2@b", ["predict.direct"], ["direct", "mock"])
    assert check_target(r, "predict.direct", direct, refuse) == []  # one worker that can is enough
    r.delete(keys.worker_heartbeat("w2@b"))
    _beat(r, "w1@a", ["predict.direct", "predict.mock"], ["mock"])
    with pytest.raises(BadInput) as info:
        check_target(r, "predict.direct", direct, refuse)
    assert "ANTHROPIC_API_KEY (the provider key for 'anthropic/claude-3-5-haiku')" in str(info.value)
    assert "workers: w1@a; their backends: mock" in str(info.value) and info.value.where == "backend"
    assert check_target(r, "predict.direct", direct, warn)[0].startswith("no live worker on predict.direct")


def test_what_to_set_names_each_backends_settings():
    assert "AWS_DEFAULT_REGION" in what_to_set("bedrock", "anthropic.claude-3-haiku-20240307-v1:0")
    assert "TIDYQ_GATEWAY_URL" in what_to_set("gateway", "chat")
    assert "OPENAI_API_KEY" not in what_to_set("direct", None) and "TIDYQ_API_KEY" in what_to_set("direct", None)
    assert what_to_set("other", None) == "configure backend 'other' on the workers"


def test_a_job_counts_as_running_from_the_first_chunk_a_process_sees(redis_url):
    from workers.metrics_publisher import Publisher

    r = redis.Redis.from_url(redis_url)
    pub = Publisher(r, interval=60)
    pub.note_job("job-a")  # written at once, not with the next flush
    assert r.zscore(keys.active_jobs(), "job-a") is not None
    r.delete(keys.active_jobs())
    pub.note_job("job-a")  # seen within the interval: it rides with the next flush
    assert r.zscore(keys.active_jobs(), "job-a") is None
    assert pub.flush() and r.zscore(keys.active_jobs(), "job-a") is not None

    pub.record_item("predict.direct", "direct", "failed", "LMTimeoutError")
    pub.record_item("predict.direct", "direct", "succeeded")
    assert pub.flush()
    counters = {tuple(json.loads(k)): int(v) for k, v in r.hgetall(keys.metrics_counters()).items()
                if json.loads(k)[0] == "item_errors"}
    assert counters == {("item_errors", "predict.direct", "direct", "LMTimeoutError"): 1}

    down = Publisher(redis.Redis(port=1, socket_connect_timeout=0.2), interval=60)
    down.note_job("job-b")  # Redis away: kept for the next flush, never raised
    assert "job-b" in down._jobs


def _spec(job_id, n, backend="mock"):
    from shared.jobs import JobKind, JobSpec

    return JobSpec(id=job_id, kind=JobKind.BATCH, signature="question -> answer", backend=backend, total=n,
                   chunk_size=n, ttl_seconds=600, created_at=time.time())


def test_the_chunk_task_returns_counts_and_raises_for_failed_items_in_process(redis_url, monkeypatch,
                                                                              in_process_chunks):
    """The task body run in this process (no broker round trip): what Flower gets as result or exception."""
    from shared.store import JobStore
    from workers.tasks import run_chunk

    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", "")
    store = JobStore.from_url(redis_url)
    spec = _spec("telling-ok", 2)
    store.create_job(spec)
    items = [{"custom_id": str(i), "inputs": {"question": f"q{i}"}} for i in range(2)]
    out = run_chunk({"job": spec.model_dump(mode="json"), "chunk": 0, "items": items})
    assert out == {"job": "telling-ok", "chunk": 0, "items": 2, "succeeded": 2, "failed": 0, "recorded": 2}

    # a redelivered chunk records nothing new and says so
    again = run_chunk({"job": spec.model_dump(mode="json"), "chunk": 0, "items": items})
    assert again["stopped"] == "completed" and again["succeeded"] == 0

    # a malformed message of a known job: its items fail as BadInput and the task fails for Flower
    bad = _spec("telling-bad", 2)
    store.create_job(bad)
    with pytest.raises(ChunkItemsFailed) as info:
        run_chunk({"job": {"id": "telling-bad"}, "chunk": 0, "items": items})
    assert info.value.summary["failed"] == 2 and info.value.summary["error_types"] == {"BadInput": 2}
    assert store.status("telling-bad").error_types == {"BadInput": 2}

    # a malformed message of no known job: dropped, its items counted as lost
    with pytest.raises(ChunkItemsFailed, match="2 of 2 items failed"):
        run_chunk({"job": {"id": "nobody"}, "chunk": 0, "items": items})


def test_an_unconfigured_provider_is_one_name_in_the_result_and_in_the_metrics(redis_url, monkeypatch,
                                                                              in_process_chunks):
    """The issue's case: no key for the provider. The item says LMNotConfiguredError and so does the
    per-call error counter the workers publish to Prometheus (the engine saw MissingCredentialError)."""
    from shared.metrics import registry
    from shared.store import JobStore
    from workers.tasks import run_chunk

    for name in [k for k in __import__("os").environ if k.endswith("_API_KEY")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("TIDYQ_API_BASE", raising=False)
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("TIDYQ_CACHE_ENABLED", "false")
    monkeypatch.setenv("TIDYQ_CONCURRENCY_DIRECT", "1")
    registry.reset()
    store = JobStore.from_url(redis_url)
    spec = _spec("telling-nokey", 2, backend="direct").model_copy(update={"model": "openai/gpt-4o-mini"})
    store.create_job(spec)
    items = [{"custom_id": str(i), "inputs": {"question": f"q{i}"}} for i in range(2)]
    with pytest.raises(ChunkItemsFailed) as info:
        run_chunk({"job": spec.model_dump(mode="json"), "chunk": 0, "items": items})
    assert info.value.summary["error_types"] == {"LMNotConfiguredError": 2}
    results = [store.get_result("telling-nokey", str(i)) for i in range(2)]
    assert {r["error"]["type"] for r in results} == {"LMNotConfiguredError"}
    errors = {name: n for row in registry.snapshot() for name, n in row["errors"].items()}
    assert errors == {"LMNotConfiguredError": 2}  # never the engine-side MissingCredentialError
    assert sum(r["attempts"] for r in results) == sum(row["attempts"] for row in registry.snapshot())
    registry.reset()


def test_a_worker_configured_per_target_reports_direct(monkeypatch):
    """TIDYQ_TARGET_OPTIONS alone (an api_base, or a named key variable that is set) configures direct."""
    from workers.metrics_publisher import configured_backends

    for name in [k for k in __import__("os").environ if k.endswith("_API_KEY") or k.startswith("TIDYQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert configured_backends() == ["mock"]
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({"direct:openai/b": {"api_key_env": "B_KEY"}}))
    assert configured_backends() == ["mock"]  # the named variable is not set
    monkeypatch.setenv("B_KEY", "sk-b")
    assert configured_backends() == ["direct", "mock"]
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({"direct:openai/a": {"api_base": "http://127.0.0.1:9/v1"}}))
    assert configured_backends() == ["direct", "mock"]
    monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({"gateway:chat": {"gateway_url": "http://127.0.0.1:9"}}))
    assert configured_backends() == ["gateway", "mock"]
