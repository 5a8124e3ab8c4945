"""The shared producer checks (producers/submission.py): each refusal names its field."""

import pytest

from producers import submission
from shared.config import Settings
from shared.errors import BadInput
from shared.jobs import Item, JobKind, JobState

SIG = "question -> answer"
S = Settings(max_items_per_job=3, max_item_bytes=200)


def target(**kw):
    return submission.build_target(S, kw.pop("signature", SIG), kw.pop("program", None), "mock", None,
                                   kw.pop("fallbacks", None))


@pytest.mark.parametrize("call, where", [
    (lambda: submission.build_target(S, SIG, "models:/x/1", "mock", None, None), "signature"),
    (lambda: submission.build_target(S, None, None, "mock", None, None), "signature"),
    (lambda: target(fallbacks=["nope:m"]), "fallback 'nope:m'"),
    (lambda: target(fallbacks=["auto"]), "fallback 'auto'"),
    (lambda: submission.deadline_seconds(-1), "deadline_seconds"),
    (lambda: submission.deadline_seconds(True), "deadline_seconds"),
    (lambda: submission.predict_item(target(), ["x"], S), "inputs"),
    (lambda: submission.predict_item(target(), {"question": "x" * 500}, S), "inputs"),
    (lambda: submission.batch_items("not rows", target(), S), "rows"),
    (lambda: submission.batch_items([], target(), S), "rows"),
    (lambda: submission.batch_items([{"inputs": {"question": str(i)}} for i in range(4)], target(), S), "rows"),
    (lambda: submission.batch_items([{"custom_id": "a", "inputs": {"question": "x"}}, 3], target(), S), "rows[1]"),
    (lambda: submission.new_spec(JobKind.BATCH, target(), 1, S, None, chunk_size=-1), "chunk_size"),
    (lambda: submission.item_cache_flag("no"), "item_cache"),
])
def test_refusals_name_the_field(call, where):
    with pytest.raises(BadInput) as err:
        call()
    assert err.value.where == where


def test_rows_become_items_and_chunk_messages_in_order():
    t = target()
    items = submission.batch_items([Item(custom_id="x", inputs={"question": "1"}), {"inputs": {"question": "2"}}],
                                   t, S)
    assert [i.custom_id for i in items] == ["x", "2"]  # a row without custom_id gets its position
    spec = submission.new_spec(JobKind.BATCH, {**t, "deadline_seconds": 30.0}, 2, S, "key", chunk_size=1)
    assert spec.deadline and spec.deadline - spec.created_at == pytest.approx(30.0)
    payloads = list(submission.chunk_payloads(spec, iter(items)))
    assert [(p["chunk"], [i["custom_id"] for i in p["items"]]) for p in payloads] == [(0, ["x"]), (1, ["2"])]
    assert submission.idempotency_ttl(spec, S) == S.result_ttl_seconds
    assert submission.retry_target(spec)["backend"] == "mock"


def test_outputs_of_a_predict_or_why_not():
    ok = [{"status": "succeeded", "outputs": {"answer": "4"}}]
    assert submission.predict_outputs("j", ok, None) == {"answer": "4"}
    with pytest.raises(submission.JobFailed) as err:
        submission.predict_outputs("j", [{"status": "failed", "error": {"type": "T", "message": "m"}}],
                                   JobState.FAILED)
    assert err.value.error == {"type": "T", "message": "m"} and "T: m" in str(err.value)
    with pytest.raises(submission.JobFailed, match="cancelled"):
        submission.predict_outputs("j", [], JobState.CANCELLED)


def test_auto_backend_without_any_provider_is_bad_input(monkeypatch):
    for name in ("TIDYQ_API_BASE", "TIDYQ_GATEWAY_URL", "TIDYQ_API_KEY", "OPENAI_API_KEY", "AWS_DEFAULT_REGION",
                 "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "TIDYQ_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BadInput) as err:
        submission.resolve_backend(Settings(), "auto", None)
    assert err.value.where == "backend" and "--backend" in str(err.value)


def test_the_item_cache_opt_out_travels_in_the_spec_and_to_a_retry():
    assert submission.new_spec(JobKind.BATCH, target(), 1, S, None).item_cache is True
    off = submission.new_spec(JobKind.BATCH, {**target(), "item_cache": submission.item_cache_flag(False)}, 1, S, None)
    assert off.item_cache is False and '"item_cache":false' in off.model_dump_json()
    assert submission.retry_target(off)["item_cache"] is False
