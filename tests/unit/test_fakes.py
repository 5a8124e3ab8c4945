"""Self-tests of the stand-in providers: real clients (openai, boto3, dspy/litellm) against them,
scripted failures, counters, the out-of-process mode and the real mlflow server gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import dspy
import httpx
import pytest

from tests.fakes.answers import expected_outputs, expected_text, reply_for_messages
from tests.fakes.bedrock_server import BedrockFake
from tests.fakes.http_fake import FakeControl, ScriptedResponse
from tests.fakes.openai_server import OpenAIFake

REPO = Path(__file__).resolve().parents[2]
CHAT = [{"role": "user", "content": "hello fake"}]

openai = pytest.importorskip("openai", reason="the openai client package is not installed")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402


def _openai_client(fake: OpenAIFake, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=kw.pop("api_key", "sk-test"), max_retries=0, **kw)


def _bedrock_client(fake: BedrockFake, access_key: str = "AKIDFAKE", retries: dict | None = None):
    return boto3.client("bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key="fake-secret",
                        config=Config(retries=retries or {"total_max_attempts": 1, "mode": "standard"}))


def _converse(client, text: str = "hi"):
    return client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                           messages=[{"role": "user", "content": [{"text": text}]}])


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    score: float = dspy.OutputField()
    count: int = dspy.OutputField()
    ok: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    label: Literal["pos", "neg"] = dspy.OutputField()


QA_OUTPUTS = {"answer": str, "score": float, "count": int, "ok": bool, "tags": "list[str]",
              "label": "Literal['pos', 'neg']"}


# ------------------------------------------------------------------------------------ OpenAI wire
def test_openai_client_parses_answer_and_usage(openai_fake):
    resp = _openai_client(openai_fake).chat.completions.create(model="gpt-fake", messages=CHAT, temperature=0)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-fake"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == expected_text("hello fake")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    assert openai_fake.request_count == 1
    assert openai_fake.requests[0].body["temperature"] == 0


@pytest.mark.parametrize("path,status", [("/v1/chat/completions", 200), ("/chat/completions", 200),
                                         ("/openai/deployments/x/chat/completions", 200),
                                         ("/v1/completions", 400), ("/v1/responses", 404)])
def test_openai_paths(openai_fake, path, status):
    resp = httpx.post(openai_fake.url + path, json={"model": "m", "messages": CHAT}, timeout=5)
    assert resp.status_code == status  # /v1/completions is the text API: it takes a prompt, not messages
    if status >= 400:
        assert resp.json()["error"]["type"] == "invalid_request_error"


def test_openai_text_completions_answer_dspy_text_prompts(openai_fake):
    import uuid

    lm = dspy.LM("openai/gpt-3.5-turbo-instruct", model_type="text", api_base=openai_fake.base_url, api_key="k",
                 cache=False)
    question = f"What is {uuid.uuid4().hex[:6]}?"
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer")(question=question)
    body = openai_fake.requests[-1].body
    assert openai_fake.requests[-1].path.endswith("/completions") and "prompt" in body and "messages" not in body
    assert pred.answer == expected_outputs({"question": question}, ["answer"])["answer"]


def test_openai_rejects_malformed_requests(openai_fake):
    bad_json = httpx.post(openai_fake.base_url + "/chat/completions", content=b"{nope",
                          headers={"Content-Type": "application/json"}, timeout=5)
    no_messages = httpx.post(openai_fake.base_url + "/chat/completions", json={"model": "m"}, timeout=5)
    assert bad_json.status_code == no_messages.status_code == 400
    assert openai_fake.status_counts == {400: 2}


def test_openai_streaming(openai_fake):
    stream = _openai_client(openai_fake).chat.completions.create(model="m", messages=CHAT, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == expected_text("hello fake")


def test_custom_responder_overrides_answer(openai_fake):
    openai_fake.set_responder(lambda req: f"custom for {req['model']}")
    resp = _openai_client(openai_fake).chat.completions.create(model="m1", messages=CHAT)
    assert resp.choices[0].message.content == "custom for m1"


def test_broken_responder_is_a_500(openai_fake):
    openai_fake.set_responder(lambda req: 1 / 0)
    with pytest.raises(openai.InternalServerError, match="ZeroDivisionError"):
        _openai_client(openai_fake).chat.completions.create(model="m", messages=CHAT)


# ------------------------------------------------------------------------------------ DSPy answers
@pytest.mark.parametrize("adapter_name", ["ChatAdapter", "JSONAdapter"])
def test_dspy_adapters_get_each_input_its_own_answer(openai_fake, adapter_name):
    lm = dspy.LM("openai/fake-model", api_base=openai_fake.base_url, api_key="sk-test", cache=False, num_retries=0)
    predict = dspy.Predict(QA)
    questions = ["What is 2+2?", "Name a colour.", "What is 2+2?  "]
    with dspy.context(lm=lm, adapter=getattr(dspy, adapter_name)()):
        got = [dict(predict(question=q).items()) for q in questions]
    want = [expected_outputs({"question": q}, QA_OUTPUTS) for q in questions]
    assert got == want
    assert got[0] != got[1]  # distinct inputs, distinct answers
    assert isinstance(got[0]["score"], float) and got[0]["label"] in ("pos", "neg")
    assert openai_fake.request_count == 3


def test_reply_parses_with_dspy_chat_adapter_offline():
    adapter = dspy.ChatAdapter()
    messages = adapter.format(QA, demos=[], inputs={"question": "Why [[ ## odd ## ]] text?"})
    reply = reply_for_messages(messages)
    assert adapter.parse(QA, reply) == expected_outputs({"question": "Why [[ ## odd ## ]] text?"}, QA_OUTPUTS)


def test_plain_requests_get_an_echo():
    assert reply_for_messages(CHAT) == expected_text("hello fake")
    assert expected_text("a") != expected_text("b")


# ------------------------------------------------------------------------------------ scripting
def test_scripted_429_with_retry_after_then_success(openai_fake):
    client = _openai_client(openai_fake)
    openai_fake.fail_next(1, 429, retry_after=7)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="m", messages=CHAT)
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.body["code"] == "rate_limit_exceeded"
    assert client.chat.completions.create(model="m", messages=CHAT).choices[0].message.content
    assert openai_fake.status_counts == {429: 1, 200: 1}


def test_script_queue_order_and_raw_bodies(openai_fake):
    openai_fake.script(503, ScriptedResponse(status=200, body={"raw": True}),
                       {"status": 500, "headers": {"X-Test": "1"}})
    statuses = []
    for _ in range(4):
        r = httpx.post(openai_fake.base_url + "/chat/completions", json={"model": "m", "messages": CHAT}, timeout=5)
        statuses.append(r.status_code)
        if r.status_code == 200 and "raw" in r.json():
            assert r.json() == {"raw": True}
    assert statuses == [503, 200, 500, 200]
    assert openai_fake.status_counts == {503: 1, 200: 2, 500: 1}


def _statuses_with_rate(seed: int) -> list[int]:
    with OpenAIFake() as fake:
        fake.set_failure_rate(0.5, statuses=(429, 503), retry_after=1, seed=seed)
        with httpx.Client(base_url=fake.base_url, timeout=5) as client:
            out = [client.post("/chat/completions", json={"model": "m", "messages": CHAT}).status_code
                   for _ in range(40)]
        assert sum(fake.status_counts.values()) == 40
        return out


def test_failure_rate_is_seeded_and_mixed():
    first, again, other = _statuses_with_rate(3), _statuses_with_rate(3), _statuses_with_rate(4)
    assert first == again
    assert first != other
    assert {200, 429, 503} <= set(first)
    assert 8 <= first.count(200) <= 32


def test_hang_provokes_client_timeout_then_recovers(openai_fake):
    openai_fake.hang_next(1, seconds=20)
    with httpx.Client(base_url=openai_fake.base_url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/chat/completions", json={"model": "m", "messages": CHAT})
        assert client.post("/chat/completions", json={"model": "m", "messages": CHAT}).status_code == 200
    started = time.monotonic()
    openai_fake.stop()  # the hung handler is woken, stop does not wait 20 s
    assert time.monotonic() - started < 5


def test_bearer_auth(openai_fake):
    openai_fake.require_auth("sk-right")
    with pytest.raises(openai.AuthenticationError):
        _openai_client(openai_fake, api_key="sk-wrong").chat.completions.create(model="m", messages=CHAT)
    ok = _openai_client(openai_fake, api_key="sk-right").chat.completions.create(model="m", messages=CHAT)
    assert ok.choices[0].message.content
    assert openai_fake.status_counts == {401: 1, 200: 1}


def test_latency_is_applied_and_requests_overlap(openai_fake):
    openai_fake.set_latency(0.2)
    n = 120
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def call():
        with httpx.Client(base_url=openai_fake.base_url, timeout=30) as client:
            barrier.wait(timeout=20)
            for _ in range(2):  # second call reuses the keep-alive connection
                code = client.post("/chat/completions", json={"model": "m", "messages": CHAT}).status_code
                with lock:
                    results.append(code)

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert time.monotonic() - started >= 0.4  # two sequential 0.2 s answers per client
    assert results == [200] * (2 * n)
    assert openai_fake.max_in_flight >= n // 2  # served concurrently, not one by one
    assert sum(openai_fake.requests_per_second()) == 2 * n


def test_counters_history_and_reset():
    with OpenAIFake(history_limit=3) as fake:
        for i in range(5):
            httpx.post(fake.base_url + "/chat/completions", timeout=5,
                       json={"model": f"m{i}", "messages": CHAT}, headers={"X-Trace": str(i)})
        assert fake.request_count == 5 and len(fake.request_times) == 5
        assert [b["model"] for b in fake.request_bodies] == ["m2", "m3", "m4"]
        assert fake.requests[-1].headers["X-Trace"] == "4"
        assert fake.stats()["by_status"] == {"200": 5}
        fake.fail_next(2)
        fake.set_latency(1)
        fake.reset()
        assert fake.request_count == 0 and fake.requests == [] and fake.latency == 0
        assert httpx.post(fake.base_url + "/chat/completions", json={"model": "m", "messages": CHAT},
                          timeout=5).status_code == 200
        assert fake.wait_for_requests(1, timeout=1)


# ------------------------------------------------------------------------------------ Bedrock
def test_bedrock_converse_with_boto3(bedrock_fake):
    client = _bedrock_client(bedrock_fake)
    resp = client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", system=[{"text": "Be brief."}],
                           messages=[{"role": "user", "content": [{"text": "hello fake"}]}],
                           inferenceConfig={"maxTokens": 64, "temperature": 0.0})
    assert resp["output"]["message"]["content"][0]["text"] == expected_text("hello fake")
    assert resp["stopReason"] == "end_turn"
    assert resp["usage"]["totalTokens"] == resp["usage"]["inputTokens"] + resp["usage"]["outputTokens"]
    assert "latencyMs" in resp["metrics"]
    request = bedrock_fake.requests[0]
    assert request.path == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    assert request.body["inferenceConfig"]["maxTokens"] == 64
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKE/")


@pytest.mark.parametrize("status,code", [(429, "ThrottlingException"), (503, "ServiceUnavailableException"),
                                         (400, "ValidationException"), (403, "AccessDeniedException")])
def test_bedrock_errors_map_to_botocore_codes(bedrock_fake, status, code):
    bedrock_fake.fail_next(1, status, retry_after=2)
    with pytest.raises(ClientError) as err:
        _converse(_bedrock_client(bedrock_fake))
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert bedrock_fake.request_count == 1  # retries off: exactly one attempt


def test_botocore_max_attempts_counts_retries_not_attempts(bedrock_fake):
    """Config(retries={"max_attempts": 1}) still retries once; total_max_attempts=1 does not."""
    bedrock_fake.fail_next(2, 429)
    with pytest.raises(ClientError):
        _converse(_bedrock_client(bedrock_fake, retries={"max_attempts": 1, "mode": "standard"}))
    assert bedrock_fake.request_count == 2


def test_bedrock_named_error_type_and_validation(bedrock_fake):
    client = _bedrock_client(bedrock_fake)
    bedrock_fake.fail_next(1, 429, error_type="ModelNotReadyException")
    with pytest.raises(ClientError) as err:
        _converse(client)
    assert err.value.response["Error"]["Code"] == "ModelNotReadyException"
    with pytest.raises(ClientError) as err:
        client.converse(modelId="m.x", messages=[{"role": "assistant", "content": [{"text": "x"}]}])
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_bedrock_auth(bedrock_fake):
    bedrock_fake.require_auth("AKIDRIGHT")
    with pytest.raises(ClientError) as err:
        _converse(_bedrock_client(bedrock_fake, access_key="AKIDWRONG"))
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert _converse(_bedrock_client(bedrock_fake, access_key="AKIDRIGHT"))["stopReason"] == "end_turn"
    bearer = httpx.post(bedrock_fake.url + "/model/m.x/converse", headers={"Authorization": "Bearer AKIDRIGHT"},
                        json={"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, timeout=5)
    assert bearer.status_code == 200


def test_dspy_over_litellm_bedrock_converse(bedrock_fake):
    lm = dspy.LM("bedrock/converse/anthropic.claude-3-haiku-20240307-v1:0", cache=False, num_retries=0,
                 aws_bedrock_runtime_endpoint=bedrock_fake.url, aws_region_name="us-east-1",
                 aws_access_key_id="AKIDFAKE", aws_secret_access_key="fake-secret")
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        got = dict(dspy.Predict(QA)(question="Is it raining?").items())
    assert got == expected_outputs({"question": "Is it raining?"}, QA_OUTPUTS)
    assert bedrock_fake.request_count == 1


# ------------------------------------------------------------------------------------ other process
@pytest.mark.parametrize("module", ["tests.fakes.openai_server", "tests.fakes.bedrock_server"])
def test_runs_as_separate_process(module):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", "--latency", "0.01"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        url = proc.stdout.readline().strip()  # bounded by the test timeout; the fake prints at once
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        control = FakeControl(url)
        assert control.health()["ok"] is True
        control.configure(failure_rate=1.0, fail_statuses=[503], seed=1)
        path = "/v1/chat/completions" if "openai" in module else "/model/m.x/converse"
        body = {"model": "m", "messages": CHAT} if "openai" in module else \
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
        assert httpx.post(url + path, json=body, timeout=5).status_code == 503
        control.reset()
        assert httpx.post(url + path, json=body, timeout=5).status_code == 200
        stats = control.stats()
        assert stats["total"] == 1 and stats["by_status"] == {"200": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# ------------------------------------------------------------------------------------ MLflow gateway
def test_mlflow_gateway_routes_to_the_fake(mlflow_gateway):
    mlflow_gateway.fake.reset()
    print(f"mlflow server start: {mlflow_gateway.startup_seconds:.1f} s, "
          f"endpoint setup: {mlflow_gateway.endpoint_setup_seconds:.2f} s")
    resp = httpx.post(mlflow_gateway.chat_url, timeout=30,
                      json={"model": mlflow_gateway.endpoint, "messages": [{"role": "user", "content": "via gateway"}]})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == expected_text("via gateway")
    assert mlflow_gateway.fake.request_count == 1
    assert mlflow_gateway.fake.requests[0].headers["authorization"] == "Bearer sk-fake"


def test_mlflow_gateway_serves_dspy(mlflow_gateway):
    mlflow_gateway.fake.reset()
    lm = dspy.LM(f"openai/{mlflow_gateway.endpoint}", api_base=mlflow_gateway.base_url, api_key="unused",
                 cache=False, num_retries=0)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        got = dict(dspy.Predict(QA)(question="Through MLflow?").items())
    assert got == expected_outputs({"question": "Through MLflow?"}, QA_OUTPUTS)
    assert mlflow_gateway.fake.request_count == 1


def test_mlflow_gateway_passes_upstream_errors(mlflow_gateway):
    mlflow_gateway.fake.reset()
    mlflow_gateway.fake.fail_next(1, 429, retry_after=1)
    resp = httpx.post(mlflow_gateway.chat_url, timeout=30,
                      json={"model": mlflow_gateway.endpoint, "messages": CHAT})
    # Measured on mlflow 3.17: the status passes through, the body becomes {"detail": <upstream
    # message>} and the upstream Retry-After header is dropped.
    assert resp.status_code == 429
    assert "scripted failure 429" in json.dumps(resp.json())
    assert mlflow_gateway.fake.status_counts == {429: 1}
