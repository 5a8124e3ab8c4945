"""Prices, item costs, the job's cost total and ceiling in a real redis-server, identical rows folded,
estimates, and the economy request/answer mapping through DSPy's real ChatAdapter."""

import json
import time

import dspy
import pytest
import redis

from shared.budget import Reservations
from shared.config import Settings, ValidationConfig
from shared.cost import FREE, Prices, item_cost, prices_for, pricing_key
from shared.dedupe import all_ids, copies_for, fold_duplicates, folds, inputs_digest
from shared.economy.anthropic_batch import AnthropicBatches
from shared.economy.anthropic_batch import _answer as anthropic_answer
from shared.economy.openai_batch import OpenAIBatches, split
from shared.economy.openai_batch import _answer as openai_answer
from shared.economy.requests import Answer, NotBatchable, Unanswered, parse_answer, provider_model, render, single_stage
from shared.jobs import Item, ItemResult, JobSpec, JobState
from shared.steps.stats import CallStats
from shared.store import JobStore

MODEL = "openai/gpt-4o-mini"


# --- prices and item costs ------------------------------------------------------------------------

def test_prices_come_from_the_price_map_with_its_batch_rates():
    p = prices_for("direct", MODEL)
    assert p.input == pytest.approx(1.5e-07) and p.output == pytest.approx(6e-07)
    assert p.batch_input == pytest.approx(p.input / 2) and p.batch_output == pytest.approx(p.output / 2)
    assert p.cost(1000, 100) == pytest.approx(1000 * p.input + 100 * p.output)
    assert p.cost(1000, 100, batch=True) == pytest.approx(p.cost(1000, 100) / 2)
    assert prices_for("mock", None) is FREE
    assert prices_for("direct", "openai/no-such-model-xyz") is None
    assert prices_for("gateway", "endpoint") is None and pricing_key("direct", None) is None
    assert pricing_key("bedrock", "bedrock/anthropic.claude-3-haiku-20240307-v1:0") == (
        "bedrock", "anthropic.claude-3-haiku-20240307-v1:0")


def test_a_model_without_batch_rates_gets_the_default_discount(monkeypatch):
    import dspy.clients.model_metadata as metadata

    monkeypatch.setattr(metadata, "model_info", lambda provider, model: {"input_cost_per_token": 2e-06,
                                                                       "output_cost_per_token": 8e-06})
    p = prices_for("direct", "someprovider/model")
    assert (p.batch_input, p.batch_output) == (pytest.approx(1e-06), pytest.approx(4e-06))


def test_item_cost_is_the_metrics_number_zero_when_cached_none_when_unknown():
    assert item_cost(None, "mock") == 0.0
    assert item_cost(None, "direct") is None
    assert item_cost(CallStats(calls=1, cache_hits=1), "direct") == 0.0
    assert item_cost(CallStats(calls=1, attempts=1), "direct") is None  # the price map had no entry
    assert item_cost(CallStats(calls=1, attempts=1, cost_usd=1.25e-05), "direct") == 1.25e-05


# --- the job's total and its ceiling, in Redis ----------------------------------------------------

@pytest.fixture
def store(redis_url):
    return JobStore(redis.Redis.from_url(redis_url))


def make_job(store, total=5, max_cost=None, job_id="j1"):
    spec = JobSpec(id=job_id, kind="batch", signature="question -> answer", backend="direct", model=MODEL,
                   total=total, chunk_size=2, ttl_seconds=60, created_at=time.time(), max_cost_usd=max_cost)
    store.create_job(spec)
    return spec


def paid(cid, cost):
    return ItemResult(custom_id=cid, status="succeeded", outputs={"answer": cid}, backend="direct",
                      attempts=1, cost_usd=cost), None


def test_status_sums_each_result_once_and_a_ceiling_ends_the_job(store):
    make_job(store, max_cost=0.03)
    assert store.chunk_start("j1", "0") == "run"
    store.record_results("j1", [paid("a", 0.01), paid("b", None)])
    store.record_results("j1", [paid("a", 0.01)])  # a redelivered result is not counted again
    st = store.status("j1")
    assert st.status is JobState.RUNNING and st.cost_usd == pytest.approx(0.01) and st.max_cost_usd == 0.03
    store.record_results("j1", [paid("c", 0.015), paid("d", 0.006)])
    st = store.status("j1")
    assert st.status is JobState.BUDGET_EXCEEDED and st.cost_usd == pytest.approx(0.031)
    assert st.timestamps["finished"] is not None
    assert store.chunk_start("j1", "1") == "budget_exceeded"  # no new chunk runs
    store.record_results("j1", [paid("e", 0.001)])  # an in-flight item still lands and is counted
    st = store.status("j1")
    assert st.counts.succeeded == 5 and st.status is JobState.BUDGET_EXCEEDED
    assert store.fail_job("j1", "late") == "budget_exceeded"


def test_a_job_that_finishes_at_its_ceiling_is_completed(store):
    make_job(store, total=2, max_cost=0.02)
    store.record_results("j1", [paid("a", 0.01), paid("b", 0.01)])
    assert store.status("j1").status is JobState.COMPLETED


def test_cost_in_a_string_output_is_not_summed(store):
    make_job(store, total=2)
    tricky = ItemResult(custom_id="x", status="succeeded", outputs={"answer": '"cost_usd":99'}, cost_usd=0.5)
    store.record_results("j1", [(tricky, None)])
    assert store.status("j1").cost_usd == pytest.approx(0.5)


def test_reservations_refuse_what_would_pass_the_ceiling(store):
    make_job(store, max_cost=0.05)
    reserve = Reservations(store.r)
    assert reserve.reserve("j1", 0.03)
    assert not reserve.reserve("j1", 0.03)
    assert store.state("j1") is JobState.BUDGET_EXCEEDED
    reserve.release("j1", 0.03)
    assert float(store.r.hget("tidyq:job:{j1}", "economy_reserved_usd")) == pytest.approx(0.0)
    make_job(store, job_id="free")
    assert reserve.reserve("free", 10.0)  # no ceiling: always fits
    assert Reservations(store.r)._reserve(keys=["tidyq:job:{nope}"], args=["1", "0"]) == -1


# --- identical rows -------------------------------------------------------------------------------

def test_identical_rows_fold_into_the_first_and_twins_are_filled_in():
    items = [Item(custom_id="a", inputs={"q": 1, "r": 2}), Item(custom_id="b", inputs={"r": 2, "q": 1}),
             Item(custom_id="c", inputs={"q": 2}), Item(custom_id="d", inputs={"q": 1, "r": 2})]
    unique, folded = fold_duplicates(lambda: iter(items))
    got = list(unique())
    assert folded == 2 and [i.custom_id for i in got] == ["a", "c"]
    assert got[0].duplicates == ["b", "d"] and all_ids(got[0]) == ["a", "b", "d"]
    assert inputs_digest({"q": 1, "r": 2}) == inputs_digest({"r": 2, "q": 1}) != inputs_digest({"q": 2})
    result = ItemResult(custom_id="a", status="succeeded", outputs={"x": 1}, latency_ms=5, attempts=2, cost_usd=0.1)
    copies = copies_for(got[0], result)
    assert [(c.custom_id, c.cached, c.cost_usd, c.attempts, c.outputs) for c in copies] == [
        ("b", True, 0.0, 0, {"x": 1}), ("d", True, 0.0, 0, {"x": 1})]
    assert "duplicates" not in json.loads(copies[0].to_json())


def test_rollout_programs_are_not_folded():
    assert folds(None) and folds("models:/qa/3") and folds("models:/qa@staging")
    assert not folds("models:/qa@live") and not folds("qa")


# --- economy requests and answers -----------------------------------------------------------------

def stage():
    return single_stage(dspy.Predict("question -> answer"))


def answer_line(content, status=200, usage=None):
    body = {"choices": [{"message": {"content": content}}], "usage": usage or {"prompt_tokens": 100,
                                                                            "completion_tokens": 10}}
    return {"custom_id": "x", "response": {"status_code": status, "body": body}, "error": None}


def test_openai_lines_hold_the_adapters_messages_and_the_lm_settings():
    s = stage()
    messages = render(s, {"question": "2+2?", "extra": 1})
    assert messages == dspy.ChatAdapter().format(s.signature, [], {"question": "2+2?"})
    line = OpenAIBatches.line("x", messages, MODEL, {"temperature": 0.0, "max_tokens": None})
    assert line["url"] == "/v1/chat/completions" and line["method"] == "POST" and line["custom_id"] == "x"
    body = line["body"]
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.0 and "max_tokens" not in body
    assert body["messages"] == messages and provider_model("plain") == "plain"


def test_anthropic_lines_put_the_system_prompt_apart_and_always_set_max_tokens():
    messages = render(stage(), {"question": "2+2?"})
    line = AnthropicBatches.line("item-0", messages, "anthropic/claude-haiku-4-5",
                                 {"temperature": 0.2, "stop": "END", "seed": 3, "n": 1, "max_tokens": None})
    params = line["params"]
    assert params["model"] == "claude-haiku-4-5" and params["max_tokens"] > 0 and params["temperature"] == 0.2
    assert params["system"] == messages[0]["content"] and params["messages"] == messages[1:]
    assert params["stop_sequences"] == ["END"] and "seed" not in params and "n" not in params
    assert AnthropicBatches.line("i", messages, "anthropic/x", {"max_tokens": 50})["params"]["max_tokens"] == 50


def test_answers_parse_through_the_adapter_at_the_batch_price():
    prices = prices_for("direct", MODEL)
    answer = openai_answer(answer_line("[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"))
    outputs, cost, tokens = parse_answer(answer, stage(), ValidationConfig(), prices)
    assert outputs == {"answer": "4"} and tokens == {"input_tokens": 100, "output_tokens": 10}
    assert cost == pytest.approx(prices.cost(100, 10, batch=True))
    assert parse_answer(Answer("[[ ## answer ## ]]\n4"), stage(), ValidationConfig(), prices)[1] is None


@pytest.mark.parametrize("line, why", [
    ({"custom_id": "x", "response": None, "error": {"code": "batch_expired", "message": "late"}}, "batch_expired"),
    ({"custom_id": "x", "response": {"status_code": 500, "body": {"error": {"message": "oops"}}}}, "HTTP 500: oops"),
    ({"custom_id": "x", "response": {"status_code": 200, "body": {"choices": []}}}, "no message content"),
])
def test_openai_error_lines_say_why(line, why):
    assert why in openai_answer(line).error


@pytest.mark.parametrize("result, why", [
    ({"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}},
     "overloaded_error: busy"),
    ({"type": "expired"}, "left this request expired"),
    ({"type": "canceled"}, "left this request canceled"),
])
def test_anthropic_error_results_say_why(result, why):
    assert why in anthropic_answer(result).error


def test_anthropic_success_joins_the_text_parts_with_usage():
    answer = anthropic_answer({"type": "succeeded", "message": {"content": [
        {"type": "text", "text": "[[ ## answer ## ]]\n"}, {"type": "text", "text": "4"}],
        "usage": {"input_tokens": 12, "output_tokens": 3}}})
    assert answer == Answer("[[ ## answer ## ]]\n4", 12, 3)


@pytest.mark.parametrize("answer, why", [
    (None, "no line"),
    (Answer(error="provider error x: y"), "provider error x: y"),
    (Answer("nothing to see"), "could not parse"),
])
def test_unusable_answers_are_unanswered_with_the_reason(answer, why):
    with pytest.raises(Unanswered, match=why):
        parse_answer(answer, stage(), ValidationConfig(), None)


def test_validation_failures_are_unanswered():
    with pytest.raises(Unanswered, match="output validation failed: .*min_length"):
        parse_answer(Answer("[[ ## answer ## ]]\n4"), stage(), ValidationConfig(min_length=5), None)


def test_multi_stage_programs_are_not_batchable():
    class TwoSteps(dspy.Module):
        def __init__(self):
            super().__init__()
            self.first = dspy.Predict("question -> draft")
            self.second = dspy.Predict("draft -> answer")

    with pytest.raises(NotBatchable, match="2 predictors \\(first, second\\)"):
        single_stage(TwoSteps())


def test_batches_split_at_the_providers_limits():
    lines = [{"custom_id": str(i), "body": "x" * 50} for i in range(10)]
    assert [len(g) for g in split(lines, max_requests=4)] == [4, 4, 2]
    size = len(json.dumps(lines[0])) + 1
    assert [len(g) for g in split(lines, max_bytes=size * 3)] == [3, 3, 3, 1]
    assert split([]) == []


# --- estimates ------------------------------------------------------------------------------------

def test_estimate_names_stages_it_cannot_render_and_unknown_prices(tmp_path, monkeypatch):
    from producers import estimate

    class TwoSteps(dspy.Module):
        def __init__(self):
            super().__init__()
            self.first = dspy.Predict("question -> draft")
            self.second = dspy.Predict("draft -> answer")

    monkeypatch.setattr(estimate, "_module", lambda signature, program: TwoSteps())
    path = tmp_path / "in.jsonl"
    path.write_text('{"inputs": {"question": "a"}}\n{"inputs": {"question": "a"}}\n{"inputs": {"question": "b"}}\n')
    report = estimate.estimate_file(path, signature=None, program="models:/two/1", backend="direct",
                                    model="openai/unknown-model-zz", settings=Settings())
    assert report["items"] == 3 and report["sent_items"] == 2 and report["input_tokens"] > 0
    assert report["stages_not_estimated"] == ["second"] and report["cost_usd"] is None
    assert any("no price" in n for n in report["notes"]) and any("between calls" in n for n in report["notes"])


def test_estimate_matches_the_price_of_its_tokens(tmp_path):
    from producers.estimate import estimate_file

    path = tmp_path / "in.jsonl"
    path.write_text('{"inputs": {"question": "What is 2+2?"}}\n')
    report = estimate_file(path, signature="question -> answer", program=None, backend="direct", model=MODEL,
                           settings=Settings(estimate_output_tokens=10))
    prices = prices_for("direct", MODEL)
    assert report["cost_usd"] == pytest.approx(prices.cost(report["input_tokens"], report["output_tokens"]), abs=1e-6)
    assert 10 < report["output_tokens"] < 40 and report["notes"] == []
    assert Prices(1, 1, 0.5, 0.5).cost(2, 2, batch=True) == 2


def test_admissions_hold_items_back_while_in_flight_items_would_pass_the_ceiling(store):
    from shared.budget import Admissions
    from workers.budget_gate import BudgetGate

    make_job(store, total=10, max_cost=0.035)
    store.record_results("j1", [paid("a", 0.01)])  # average item cost 0.01, 0.01 spent
    admissions = Admissions(store.r, lease_seconds=60)
    assert admissions.admit("j1", "t1") == "run"  # nothing in flight: always runs
    assert admissions.admit("j1", "t2") == "run"  # 0.01 + 2 x 0.01 fits under 0.035
    assert admissions.admit("j1", "t3") == "wait"  # 0.01 + 3 x 0.01 would not
    admissions.release("j1", ["t1"])
    assert admissions.admit("j1", "t3") == "run"
    admissions.release("j1", ["t2", "t3"])
    assert Admissions(store.r, lease_seconds=-1).admit("j1", "expired") == "run"
    assert admissions.admit("j1", "t4") == "run" and admissions.admit("j1", "t5") == "run"
    assert store.r.zrange("tidyq:job:{j1}:budget-inflight", 0, -1) == [b"t4", b"t5"]  # dead workers' leases lapse
    admissions.release("j1", ["t4"])
    admissions.admit("j1", "t3")

    class Watch:
        state = None

        def stopped(self):
            return False

    gate = BudgetGate(Watch(), admissions, "j1")
    assert gate.stopped() is True and gate.waiting  # t2, t3 in flight: wait
    admissions.release("j1", ["t3", "t5"])
    gate = BudgetGate(Watch(), admissions, "j1")
    assert gate.stopped() is False and store.r.zcard("tidyq:job:{j1}:budget-inflight") == 1
    gate.item_done()
    assert store.r.zcard("tidyq:job:{j1}:budget-inflight") == 0
    store.record_results("j1", [paid("b", 0.03)])  # the ceiling is reached: the job ends
    assert gate.stopped() is True and gate.state == "budget_exceeded" and not gate.waiting
    gate.close()
    assert admissions.admit("nope", "x") == "missing"
