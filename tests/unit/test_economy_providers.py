"""Each provider's batch client against its loopback stand-in (real HTTP, real wire format): the
life cycle, results mapped back by request id, and vendor errors mapped at the boundary."""

import json
from types import SimpleNamespace

import boto3
import pytest

from shared.config import Settings
from shared.economy.anthropic_batch import AnthropicBatches
from shared.economy.bedrock_batch import BedrockBatches
from shared.economy.openai_batch import OpenAIBatches, ProviderBatchError
from shared.economy.providers import batch_custom_id, batch_provider
from shared.economy.requests import NotBatchable
from shared.redis_server import free_port
from tests.fakes.anthropic_batches import AnthropicBatchFake
from tests.fakes.bedrock_batch import BedrockBatchFake, MotoS3
from tests.fakes.openai_batches import OpenAIBatchFake
from tests.waiting import wait_for

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}]


def finished(client, state):
    return wait_for(lambda: (s := client.retrieve(state.id)) and not s.running and s, 10, "the batch to end")


def test_openai_batches_life_cycle_and_errors():
    fake = OpenAIBatchFake(batch_seconds=0.05).start()
    try:
        client = OpenAIBatches(api_base=fake.base_url, api_key="sk-x", timeout=5)
        lines = [client.line(batch_custom_id(i), MESSAGES, "openai/gpt-4o-mini", {}) for i in range(3)]
        fake.fail_texts = {"never matches"}
        state = finished(client, client.submit(lines, {"tidyq_job": "j"}))
        answers = client.results(state)
        assert sorted(answers) == ["item-0", "item-1", "item-2"] and all(a.content for a in answers.values())
        cancelled = client.submit(lines, {})
        assert client.cancel(cancelled.id).status == "cancelling"
        ended = client.retrieve(cancelled.id)
        assert ended.status == "cancelled" and client.results(ended) == {}
        with pytest.raises(ProviderBatchError) as err:
            client.retrieve("batch_nope")
        assert not err.value.retryable and "No batch found" in str(err.value)
    finally:
        fake.stop()
    dead = OpenAIBatches(api_base=f"http://127.0.0.1:{free_port()}/v1", api_key="sk-x", timeout=2)
    with pytest.raises(ProviderBatchError) as err:
        dead.submit(lines, {})
    assert err.value.retryable
    for call in (lambda: dead.cancel("b"), lambda: dead.results(state)):
        with pytest.raises(ProviderBatchError):
            call()


def test_anthropic_batches_life_cycle_and_errors():
    fake = AnthropicBatchFake(batch_seconds=0.05).start()
    try:
        fake.require_auth("sk-ant")
        client = AnthropicBatches(api_base=fake.base_url, api_key="sk-ant", timeout=5)
        lines = [client.line(batch_custom_id(i), MESSAGES, "anthropic/claude-haiku-4-5", {}) for i in range(4)]
        fake.expire_after = 3
        state = finished(client, client.submit(lines, {}))
        answers = client.results(state)
        assert state.status == "completed" and len(answers) == 4
        assert answers["item-3"].error == "the provider left this request expired"
        assert answers["item-0"].content and answers["item-0"].input_tokens > 0
        other = client.submit(lines, {})
        assert client.cancel(other.id).status == "cancelling"
        assert client.retrieve(other.id).status == "cancelled"
        assert client.results(SimpleNamespace(output_file_id=None)) == {}
        with pytest.raises(ProviderBatchError, match="HTTP 404"):
            client.retrieve("msgbatch_nope")
        with pytest.raises(ProviderBatchError, match="HTTP 401") as err:
            AnthropicBatches(api_base=fake.base_url, api_key="wrong", timeout=5).submit(lines, {})
        assert not err.value.retryable
        fake.expire_after = 0
        expired = finished(client, client.submit(lines, {}))
        assert expired.status == "expired"
    finally:
        fake.stop()
    with pytest.raises(ProviderBatchError) as err:
        AnthropicBatches(api_base=f"http://127.0.0.1:{free_port()}/v1", api_key="k", timeout=2).submit(lines, {})
    assert err.value.retryable


@pytest.fixture
def aws(monkeypatch):
    s3 = MotoS3().start()
    control = BedrockBatchFake(s3.url, batch_seconds=0.05).start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3.url,
                       "AWS_ENDPOINT_URL_BEDROCK": control.url}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="tidyq-b")
    yield control
    control.stop()
    s3.stop()


MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


def test_bedrock_batches_life_cycle_and_errors(aws):
    client = BedrockBatches(MODEL, s3_uri="s3://tidyq-b/p", role_arn="arn:aws:iam::1:role/r", region=None, timeout=5)
    lines = [client.line(batch_custom_id(i), MESSAGES, f"bedrock/{MODEL}", {"stop": ["X"]}) for i in range(100)]
    assert lines[0]["modelInput"]["anthropic_version"] == "bedrock-2023-05-31"
    assert lines[0]["modelInput"]["system"] == "Answer briefly." and lines[0]["modelInput"]["stop_sequences"] == ["X"]
    with pytest.raises(ProviderBatchError, match="at least 100 records") as err:
        client.submit(lines[:99], {})
    assert not err.value.retryable
    aws.fail_texts = {"2+2"}
    state = finished(client, client.submit(lines, {}))
    answers = client.results(state)
    assert state.status == "completed" and len(answers) == 100
    assert answers["item-7"].error == "provider error 500: Internal server error"
    key = json.loads(boto3.client("s3").get_object(Bucket="tidyq-b", Key=[
        o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="tidyq-b", Prefix="p/input/")["Contents"]][0])
        ["Body"].read().decode().splitlines()[0])
    assert key["recordId"] == "item-0"
    other = client.submit(lines, {})
    assert client.cancel(other.id).status == "cancelling"
    assert client.retrieve(other.id).status == "cancelled"
    assert client.results(SimpleNamespace(output_file_id=None)) == {}
    with pytest.raises(ProviderBatchError, match="ResourceNotFoundException"):
        client.retrieve("arn:aws:bedrock:us-east-1:1:model-invocation-job/nope")
    with pytest.raises(ProviderBatchError, match="ResourceNotFoundException"):
        client.cancel("arn:aws:bedrock:us-east-1:1:model-invocation-job/nope")
    with pytest.raises(ProviderBatchError, match="must be s3://bucket/prefix"):
        BedrockBatches(MODEL, s3_uri="https://b", role_arn="r", region=None, timeout=5)
    broken = BedrockBatches(MODEL, s3_uri="s3://no-such-bucket/p", role_arn="r", region=None, timeout=5)
    with pytest.raises(ProviderBatchError, match="NoSuchBucket"):
        broken.submit(lines, {})
    with pytest.raises(ProviderBatchError, match="NoSuchBucket"):
        broken.results(SimpleNamespace(output_file_id="s3://no-such-bucket/out/"))


def test_providers_are_chosen_per_target_and_refuse_what_they_cannot_batch():
    config = SimpleNamespace(api_base="http://127.0.0.1:9/v1", api_key="k", region="us-east-1")
    settings = Settings(economy_bedrock_s3_uri="s3://tidyq-b/p", economy_bedrock_role_arn="arn:aws:iam::1:role/r")
    assert isinstance(batch_provider("direct", "openai/gpt-4o-mini", config, settings), OpenAIBatches)
    assert isinstance(batch_provider("direct", "anthropic/claude-haiku-4-5", config, settings), AnthropicBatches)
    assert isinstance(batch_provider("bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0", config, settings),
                      BedrockBatches)
    with pytest.raises(NotBatchable, match="Anthropic models only"):
        batch_provider("bedrock", "amazon.nova-lite-v1:0", config, settings)
    with pytest.raises(NotBatchable, match="TIDYQ_ECONOMY_BEDROCK_S3_URI"):
        batch_provider("bedrock", MODEL, config, Settings())
