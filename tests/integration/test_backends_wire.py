"""Every backend answering through its real client library against loopback stand-ins that speak
the real wire formats; retry, cache and error semantics observed at the provider."""

import json
import os
import subprocess
import sys
import time

import pytest
from dspy.utils.exceptions import LMAuthError, LMInvalidRequestError

from shared import CacheConfig, RetryConfig, UnifiedConfig, UnifiedDSPyWrapper
from tests.fakes.answers import expected_outputs
from tests.fakes.bedrock_server import BedrockFake
from tests.fakes.openai_server import OpenAIFake

SIGNATURE = "question -> answer, confidence: float"


@pytest.fixture
def openai():
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def bedrock(monkeypatch):
    with BedrockFake() as fake:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTIDYQTEST")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "tidyq-test-secret-key")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.url)
        yield fake


def direct(fake, tmp_path, **kw):
    kw.setdefault("cache", CacheConfig(enabled=False))
    return UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/gpt-4o-mini", api_base=f"{fake.url}/v1",
                                            api_key="sk-tidyq-test-key", cache_dir=str(tmp_path), **kw))


def assert_answers(pred, question):
    expected = expected_outputs({"question": question}, {"answer": "str", "confidence": "float"})
    assert pred.answer == expected["answer"]
    assert pred.confidence == pytest.approx(expected["confidence"])


@pytest.mark.parametrize("engine", ["lm15", "litellm"])
def test_direct_answers_two_outputs_with_both_engines(openai, tmp_path, engine):
    w = direct(openai, tmp_path, engine=engine)
    assert w.get_info()["engine"] == f"dspy {engine} engine"
    assert_answers(w.create_module(SIGNATURE).predict(question="What is 2+2?"), "What is 2+2?")
    sent = openai.requests[-1]
    assert sent.headers.get("Authorization") == "Bearer sk-tidyq-test-key"
    assert sent.body["model"] == "gpt-4o-mini"


def test_auto_engine_prefers_lm15(openai, tmp_path):
    assert direct(openai, tmp_path).get_info()["engine"] == "dspy lm15 engine"


def test_bedrock_answers_through_boto3_converse(bedrock, tmp_path):
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                                         cache=CacheConfig(enabled=False)))
    assert "boto3" in w.get_info()["engine"]
    assert_answers(w.create_module(SIGNATURE).predict(question="Capital of France?"), "Capital of France?")
    assert bedrock.requests[-1].path.endswith("/converse")
    assert "AKIDTIDYQTEST" in bedrock.requests[-1].headers.get("Authorization", "")


def test_bedrock_throttling_is_retried_once_and_auth_is_not(bedrock):
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                                         cache=CacheConfig(enabled=False), retry=RetryConfig(base_delay=0.01)))
    qa = w.create_module(SIGNATURE)
    bedrock.fail_next(1, status=429)
    _, call = qa.predict_with_stats(question="throttled once")
    assert (call.attempts, call.retries) == (2, 1)
    bedrock.fail_next(1, status=403)
    before = bedrock.request_count
    with pytest.raises(LMAuthError) as err:
        qa.predict(question="denied")
    assert bedrock.request_count == before + 1
    assert "AWS credentials" in str(err.value)


def test_429_with_retry_after_is_retried_once_after_the_wait(openai, tmp_path):
    w = direct(openai, tmp_path, retry=RetryConfig(base_delay=5, jitter=0))
    openai.fail_next(1, status=429, retry_after=0.3)
    start = time.monotonic()
    pred, call = w.create_module(SIGNATURE).predict_with_stats(question="rate limited")
    elapsed = time.monotonic() - start
    assert_answers(pred, "rate limited")
    assert openai.status_counts == {429: 1, 200: 1}
    gap = openai.request_times[1] - openai.request_times[0]
    assert 0.3 <= gap < 2.0, "waited as Retry-After said, not the 5 s backoff"
    assert (call.attempts, call.retries) == (2, 1) and elapsed < 4


def test_400_is_not_retried(openai, tmp_path):
    w = direct(openai, tmp_path, retry=RetryConfig(base_delay=0.01))
    openai.fail_next(1, status=400)
    with pytest.raises(LMInvalidRequestError):
        w.create_module(SIGNATURE).predict(question="bad request")
    assert openai.request_count == 1


def test_5xx_retried_until_the_budget_then_the_error(openai, tmp_path):
    w = direct(openai, tmp_path, retry=RetryConfig(max_retries=2, base_delay=0.01, jitter=0))
    openai.fail_next(5, status=503)
    with pytest.raises(Exception) as err:
        w.create_module(SIGNATURE).predict(question="down")
    assert "503" in str(err.value) or "Server" in type(err.value).__name__
    assert openai.request_count == 3


CHILD = """
import json, sys
from shared import UnifiedConfig, UnifiedDSPyWrapper
w = UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/gpt-4o-mini", api_base=sys.argv[1],
                                     api_key="sk-tidyq-test-key"))
pred, call = w.create_module("question -> answer").predict_with_stats(question="cached across processes?")
w.close()
print(json.dumps({"answer": pred.answer, "cached": call.cached, "attempts": call.attempts}))
"""


def test_repeat_call_in_another_process_is_served_from_the_redis_cache(openai, redis_url, tmp_path):
    env = {**os.environ, "TIDYQ_REDIS_URL": redis_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, f"{openai.url}/v1"], env=env, check=True,
                                      capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1])
            for _ in range(2)]
    assert runs[0]["answer"] == runs[1]["answer"]
    assert (runs[0]["cached"], runs[1]["cached"]) == (False, True)
    assert runs[1]["attempts"] == 0
    assert openai.request_count == 1


def test_gateway_answers_through_a_real_mlflow_server(mlflow_gateway, tmp_path):
    mlflow_gateway.fake.reset()
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="gateway", model=mlflow_gateway.endpoint,
                                         gateway_url=mlflow_gateway.url, cache=CacheConfig(enabled=False)))
    assert w.get_info()["backend"] == "gateway"
    assert_answers(w.create_module(SIGNATURE).predict(question="via the gateway"), "via the gateway")
    assert mlflow_gateway.fake.request_count == 1


def test_auto_picks_the_gateway_then_direct(openai, mlflow_gateway, monkeypatch, tmp_path):
    monkeypatch.setenv("TIDYQ_GATEWAY_URL", mlflow_gateway.url)
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="auto", model=mlflow_gateway.endpoint,
                                         cache=CacheConfig(enabled=False)))
    assert w.get_info()["backend"] == "gateway"
    monkeypatch.delenv("TIDYQ_GATEWAY_URL")
    monkeypatch.setenv("TIDYQ_API_BASE", f"{openai.url}/v1")
    monkeypatch.setenv("TIDYQ_API_KEY", "sk-auto-test")
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="auto", model="openai/gpt-4o-mini", cache=CacheConfig(enabled=False)))
    assert w.get_info()["backend"] == "direct"
    assert_answers(w.create_module(SIGNATURE).predict(question="auto"), "auto")
