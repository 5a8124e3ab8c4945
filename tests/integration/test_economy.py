"""Economy mode end to end: real redis-server, real `celery -A workers worker` processes, and the
OpenAI Files + Batches stand-in (tests/fakes/openai_batches.py) speaking the real wire format.

Answers are recomputed from each item's own inputs (tests/fakes/answers.py), so an answer mapped
back to the wrong custom_id (the stand-in shuffles its output lines) fails here.
"""

import json

import pytest

from producers import Client
from shared import keys
from shared.cost import prices_for
from tests.fakes.answers import expected_outputs
from tests.fakes.anthropic_batches import AnthropicBatchFake
from tests.fakes.openai_batches import OpenAIBatchFake
from tests.integration.question_rows import question_rows
from tests.waiting import wait_for

SIG = "question -> answer"
MODEL = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-haiku-4-5"


@pytest.fixture
def batch_fake():
    fake = OpenAIBatchFake(batch_seconds=0.3).start()
    try:
        yield fake
    finally:
        fake.stop()


def economy_env(fake, **extra):
    env = {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-test-economy-4242", "TIDYQ_MODEL": MODEL,
           "TIDYQ_CACHE_ENABLED": "false", "TIDYQ_ECONOMY_POLL_SECONDS": "0.2",
           "TIDYQ_ECONOMY_POLL_MAX_SECONDS": "0.5"}
    return env | {k: str(v) for k, v in extra.items()}


def rows(n, distinct=None, prefix="q"):
    return question_rows(n, distinct, prefix, op='times')


def live_price_of(fake) -> float:
    """What the batch lines the stand-in executed would have cost at the live price."""
    prices = prices_for("direct", MODEL)
    total = 0.0
    for data in fake.files.values():
        for raw in data.decode().splitlines():
            line = json.loads(raw)
            usage = ((line.get("response") or {}).get("body") or {}).get("usage")
            if usage:
                total += prices.cost(usage["prompt_tokens"], usage["completion_tokens"])
    return total


def test_economy_batch_every_item_correct_twins_folded_failures_finished_live(redis_url, start_worker, batch_fake):
    start_worker(queues=["predict.direct"], concurrency=2, env=economy_env(batch_fake))
    inputs = rows(250, distinct=200)  # 20% of the rows repeat an earlier one
    batch_fake.fail_texts = {"What is 3 times 3?", "What is 77 times 77?"}
    batch_fake.garble_texts = {"What is 5 times 5?"}
    job = Client().submit_batch(inputs, SIG, backend="direct", model=MODEL, mode="economy", chunk_size=60)
    results = {r["custom_id"]: r for r in job.results(timeout=180)}
    assert sorted(results) == sorted(r["custom_id"] for r in inputs)
    for row in inputs:
        r = results[row["custom_id"]]
        assert r["status"] == "succeeded", r
        assert r["outputs"] == expected_outputs(row["inputs"], ["answer"])
    for cid in ("q3", "q77", "q5"):
        assert "finished_live" in results[cid]["economy"], results[cid]
    assert "HTTP 500" in results["q3"]["economy"]["finished_live"]
    assert "could not parse" in results["q5"]["economy"]["finished_live"]
    assert results["q10"]["economy"]["batch_id"].startswith("batch_") and results["q10"]["cached"] is False
    assert results["q210"]["cached"] is True and results["q210"]["cost_usd"] == 0.0  # twin of q10
    # provider requests: 200 distinct rows in batches, plus the 3 finished live
    assert batch_fake.batch_lines == 200
    live_calls = [r for r in batch_fake.requests if r.path.endswith("/chat/completions")]
    assert len(live_calls) == 3
    st = job.wait(timeout=30)
    assert st["status"] == "completed" and st["counts"] == {"total": 250, "succeeded": 250, "failed": 0}
    assert st["mode"] == "economy"
    assert [b["status"] for b in st["provider_batches"]] == ["completed"] * len(st["provider_batches"])
    assert sum(b["items"] for b in st["provider_batches"]) == 200
    assert st["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in results.values()), rel=1e-6)
    live_price = live_price_of(batch_fake)
    assert st["cost_usd"] < live_price * 0.6  # the batch price, plus three items at the live price

    def published_cost():  # what the workers pushed for Prometheus (tidyq_cost_usd_total), batch and live
        counters = Client().store.r.hgetall(keys.metrics_counters())
        return sum(float(v) for k, v in counters.items() if json.loads(k)[0] == "cost_usd")

    wait_for(lambda: published_cost() == pytest.approx(st["cost_usd"], rel=1e-6), 30, "the cost metrics")


def test_expired_batch_finishes_the_rest_live(redis_url, start_worker, batch_fake):
    start_worker(queues=["predict.direct"], concurrency=1, env=economy_env(batch_fake))
    batch_fake.expire_after = 30
    inputs = rows(50)
    job = Client().submit_batch(inputs, SIG, backend="direct", model=MODEL, mode="economy")
    results = {r["custom_id"]: r for r in job.results(timeout=120)}
    assert len(results) == 50 and all(r["status"] == "succeeded" for r in results.values())
    live = [r for r in results.values() if "finished_live" in r["economy"]]
    assert len(live) == 20 and all("expired" in r["economy"]["finished_live"] for r in live)
    for row in inputs:
        assert results[row["custom_id"]]["outputs"] == expected_outputs(row["inputs"], ["answer"])
    assert job.wait(timeout=30)["provider_batches"][0]["status"] == "expired"


def test_cancel_cancels_the_provider_batch(redis_url, start_worker, batch_fake):
    batch_fake.batch_seconds = 600
    start_worker(queues=["predict.direct"], concurrency=1, env=economy_env(batch_fake))
    job = Client().submit_batch(rows(20), SIG, backend="direct", model=MODEL, mode="economy")
    wait_for(lambda: job.status()["provider_batches"], 60, "the provider batch to be submitted")
    assert job.cancel() == "cancelling"
    st = wait_for(lambda: (s := job.status())["status"] == "cancelled" and s, 60, "the job to be cancelled")
    assert batch_fake.cancelled_batches() == [st["provider_batches"][0]["id"]]
    assert st["provider_batches"][0]["status"] in ("cancelling", "cancelled")
    assert st["counts"]["succeeded"] == 0


def test_economy_refuses_a_batch_over_max_cost(redis_url, start_worker, batch_fake):
    start_worker(queues=["predict.direct"], concurrency=1, env=economy_env(batch_fake))
    job = Client().submit_batch(rows(40), SIG, backend="direct", model=MODEL, mode="economy",
                                max_cost_usd=0.000001)
    st = wait_for(lambda: (s := job.status())["status"] == "budget_exceeded" and s, 60, "budget_exceeded")
    assert st["provider_batches"] is None and batch_fake.files == {}  # nothing was uploaded or paid
    assert st["counts"]["succeeded"] == 0


def test_economy_is_refused_where_it_cannot_run(redis_url):
    from shared.errors import BadInput

    with pytest.raises(BadInput, match="economy mode needs --backend direct or bedrock"):
        Client().submit_batch(rows(2), SIG, backend="mock", mode="economy")
    with pytest.raises(BadInput, match="unknown mode"):
        Client().submit_batch(rows(2), SIG, backend="mock", mode="cheap")


def test_anthropic_message_batches_out_of_order_and_partly_failed(redis_url, start_worker):
    fake = AnthropicBatchFake(batch_seconds=0.3).start()
    try:
        fake.require_auth("sk-ant-test-4242")
        env = economy_env(fake) | {"TIDYQ_API_KEY": "sk-ant-test-4242", "TIDYQ_MODEL": CLAUDE}
        start_worker(queues=["predict.direct"], concurrency=1, env=env)
        inputs = rows(80, distinct=70)
        fake.fail_texts = {"What is 4 times 4?", "What is 9 times 9?"}
        job = Client().submit_batch(inputs, SIG, backend="direct", model=CLAUDE, mode="economy", chunk_size=40)
        results = {r["custom_id"]: r for r in job.results(timeout=180)}
        assert sorted(results) == sorted(r["custom_id"] for r in inputs)
        for row in inputs:
            r = results[row["custom_id"]]
            assert r["status"] == "succeeded" and r["outputs"] == expected_outputs(row["inputs"], ["answer"]), r
        for cid in ("q4", "q9", "q74", "q79"):  # q74 and q79 are twins of q4 and q9
            assert "api_error: Internal server error" in results[cid]["economy"]["finished_live"]
        assert fake.batch_lines == 70
        assert sum(1 for r in fake.requests if r.path.rstrip("/").endswith("/v1/messages")) == 2  # the live finish
        st = job.wait(timeout=30)
        assert st["status"] == "completed" and {b["provider"] for b in st["provider_batches"]} == {"anthropic"}
        prices = prices_for("direct", CLAUDE)
        batch_priced = [r for r in results.values() if r["cost_usd"] and "finished_live" not in r["economy"]]
        assert batch_priced and prices.batch_input < prices.input
        assert st["cost_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in results.values()), rel=1e-6)
    finally:
        fake.stop()


BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


def test_bedrock_batch_inference_through_s3(redis_url, start_worker, bedrock_fake):
    """Bedrock's control plane stand-in + moto's S3 server; the records it fails are finished live
    on the Converse stand-in; a group under Bedrock's 100-record minimum goes live at once."""
    import boto3

    from tests.fakes.bedrock_batch import BedrockBatchFake, MotoS3

    s3_server = MotoS3().start()
    control = None
    try:
        aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=s3_server.url, **{k.lower(): v for k, v in aws.items()
                                                           if k != "AWS_DEFAULT_REGION"},
                     region_name="us-east-1").create_bucket(Bucket="tidyq-batches")
        control = BedrockBatchFake(s3_server.url, batch_seconds=0.3).start()
        control.fail_texts = {"What is 6 times 6?"}
        env = aws | {"AWS_ENDPOINT_URL_S3": s3_server.url, "AWS_ENDPOINT_URL_BEDROCK": control.url,
                     "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock_fake.url, "TIDYQ_CACHE_ENABLED": "false",
                     "TIDYQ_ECONOMY_BEDROCK_S3_URI": "s3://tidyq-batches/tidyq",
                     "TIDYQ_ECONOMY_BEDROCK_ROLE_ARN": "arn:aws:iam::123456789012:role/tidyq-batch",
                     "TIDYQ_ECONOMY_POLL_SECONDS": "0.2", "TIDYQ_ECONOMY_POLL_MAX_SECONDS": "0.5"}
        start_worker(queues=["predict.bedrock"], concurrency=1, env=env)
        inputs = rows(160)
        job = Client().submit_batch(inputs, SIG, backend="bedrock", model=BEDROCK_MODEL, mode="economy",
                                    chunk_size=120)  # 120 records in a batch, then a group of 40 that goes live
        results = {r["custom_id"]: r for r in job.results(timeout=180)}
        assert sorted(results) == sorted(r["custom_id"] for r in inputs)
        for row in inputs:
            r = results[row["custom_id"]]
            assert r["status"] == "succeeded" and r["outputs"] == expected_outputs(row["inputs"], ["answer"]), r
        assert control.records_run == 120
        assert "Internal server error" in results["q6"]["economy"]["finished_live"]
        batched = [r for r in results.values() if "economy" in r and "finished_live" not in r["economy"]]
        assert len(batched) == 119 and all(r["economy"]["batch_id"].startswith("arn:aws:bedrock:") for r in batched)
        assert all("economy" not in results[f"q{i}"] for i in range(120, 160))  # under 100 records: ran live
        st = job.wait(timeout=30)
        assert st["status"] == "completed" and [b["provider"] for b in st["provider_batches"]] == ["bedrock"]
        assert st["provider_batches"][0]["status"] == "completed"
        prices = prices_for("bedrock", BEDROCK_MODEL)
        assert all(r["cost_usd"] > 0 for r in batched) and prices.batch_input < prices.input
    finally:
        if control is not None:
            control.stop()
        s3_server.stop()


def test_a_target_without_a_batch_api_runs_live_and_says_why(redis_url, start_worker, bedrock_fake):
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock_fake.url, "TIDYQ_CACHE_ENABLED": "false"}
    start_worker(queues=["predict.bedrock"], concurrency=1, env=env)
    inputs = rows(12)
    job = Client().submit_batch(inputs, SIG, backend="bedrock", model="amazon.nova-lite-v1:0", mode="economy")
    results = {r["custom_id"]: r for r in job.results(timeout=120)}
    for row in inputs:
        r = results[row["custom_id"]]
        assert r["status"] == "succeeded" and r["outputs"] == expected_outputs(row["inputs"], ["answer"]), r
    st = job.wait(timeout=30)
    assert st["status"] == "completed" and st["provider_batches"] is None
    assert "Anthropic models only" in st["economy_note"] and "amazon.nova-lite-v1:0" in st["economy_note"]


@pytest.mark.parametrize("item_cache", [True, False], ids=["item-cache", "lm-call-cache"])
def test_items_in_the_shared_cache_are_not_sent(redis_url, start_worker, batch_fake, item_cache):
    """Answered by the item cache (read first), or with it opted out by the LM-call cache's entries."""
    env = economy_env(batch_fake) | {"TIDYQ_CACHE_ENABLED": "true"}
    start_worker(queues=["predict.direct"], concurrency=1, env=env)
    warm = Client().submit_batch(rows(20, prefix="w"), SIG, backend="direct", model=MODEL)  # live: fills the cache
    assert warm.wait(timeout=60)["counts"]["succeeded"] == 20
    cache_keys = lambda: len(list(Client().store.r.scan_iter("tidyq:cache:*")))  # noqa: E731
    wait_for(lambda: cache_keys() >= 20, 30, "the shared cache to hold the live answers")
    inputs = rows(30, prefix="e")  # the same 20 questions, and 10 new ones
    job = Client().submit_batch(inputs, SIG, backend="direct", model=MODEL, mode="economy", item_cache=item_cache)
    results = {r["custom_id"]: r for r in job.results(timeout=120)}
    assert batch_fake.batch_lines == 10
    # the batch's ten answers join the live job's twenty in the item cache, unless the job opted out
    assert len(list(Client().store.r.scan_iter("tidyq:item:*"))) == (30 if item_cache else 20)
    for row in inputs:
        r = results[row["custom_id"]]
        assert r["status"] == "succeeded" and r["outputs"] == expected_outputs(row["inputs"], ["answer"])
        i = int(row["custom_id"][1:])
        assert (r["economy"] == {"from_cache": True} and r["cached"] and r["cost_usd"] == 0.0) is (i < 20), r
