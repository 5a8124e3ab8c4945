"""Job models: what producers and workers both validate."""

import json

import pytest
from pydantic import ValidationError

from shared.config import Target
from shared.errors import BadInput, ConfigurationError
from shared.jobs import (
    ChunkPayload,
    ItemResult,
    JobKind,
    JobSpec,
    JobState,
    check_inputs,
    parse_backend,
    signature_fields,
)

CONTRACT_RESULT_KEYS = {"custom_id", "status", "outputs", "error", "backend", "model", "latency_ms", "cached",
                        "attempts", "cost_usd"}  # cost_usd: the contract's cost section (shared/cost.py)


def spec(**kw):
    base = dict(id="j1", kind="batch", signature="question -> answer", backend="mock", total=3, chunk_size=2,
                ttl_seconds=60, created_at=1.0)
    return JobSpec(**(base | kw))


def test_signature_fields_reads_inputs_and_outputs():
    assert signature_fields("question, context: list[str] -> answer, score: float") == (
        ("question", "context"), ("answer", "score"))


@pytest.mark.parametrize("bad", ["question answer", "question -> answer: notatype", "-> answer", ""])
def test_bad_signature_is_bad_input_naming_the_signature(bad):
    with pytest.raises(BadInput) as info:
        signature_fields(bad)
    assert info.value.where == "signature"
    assert "bad signature" in str(info.value)


def test_unknown_and_missing_input_fields_are_named():
    fields = ("question",)
    with pytest.raises(BadInput, match=r"f.jsonl:3: field 'inputs.qestion': unknown input field 'qestion'"):
        check_inputs({"qestion": "x"}, fields, "question -> answer", "f.jsonl:3")
    with pytest.raises(BadInput, match=r"field 'inputs.question': missing input field"):
        check_inputs({}, fields, "question -> answer", "f.jsonl:4")
    check_inputs({"question": "ok"}, fields, "question -> answer", "f.jsonl:5")


def test_backend_parsing():
    assert parse_backend("MOCK") == "mock"
    assert parse_backend("auto") == "auto"
    with pytest.raises(BadInput, match="unknown backend 'openai'"):
        parse_backend("openai")
    with pytest.raises(BadInput, match="auto"):
        parse_backend("auto", allow_auto=False)


def test_target_parse_keeps_colons_in_model_ids():
    t = Target.parse("bedrock:anthropic.claude-3-haiku-20240307-v1:0")
    assert (t.backend, t.model) == ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0")
    assert Target.parse("mock") == Target(backend="mock", model=None)
    with pytest.raises(ConfigurationError, match="unknown backend 'nope'"):
        Target.parse("nope:model")


def test_job_spec_requires_a_program_and_a_concrete_backend():
    assert spec().targets == [Target(backend="mock")]
    with pytest.raises(ValidationError):
        spec(signature=None)
    with pytest.raises(BadInput):
        spec(backend="auto")
    with pytest.raises(ValidationError):
        spec(unexpected=1)
    roundtrip = JobSpec.model_validate_json(spec(fallback=[Target.parse("direct:openai/x")]).model_dump_json())
    assert roundtrip.targets[1].model == "openai/x"
    assert roundtrip.kind is JobKind.BATCH


def test_one_target_type_travels_in_the_job_and_a_bad_one_is_a_validation_error():
    """The CLI's string, the job's JSON and the worker's config all carry the same frozen Target."""
    sent = spec(fallback=list(Target.parse_list("bedrock:anthropic.claude-3-haiku-20240307-v1:0,mock")))
    wire = json.loads(sent.model_dump_json())
    assert wire["fallback"][0] == {"backend": "bedrock", "model": "anthropic.claude-3-haiku-20240307-v1:0",
                                   "larger_context": False}
    received = JobSpec.model_validate(wire)
    assert received.fallback == [Target("bedrock", "anthropic.claude-3-haiku-20240307-v1:0"), Target("mock")]
    assert hash(received.fallback[1]) == hash(Target("mock"))  # frozen: usable as a per-process cache key
    for bad in ({"backend": "nope"}, {"backend": "auto"}, {"backend": "mock", "extra": 1}):
        with pytest.raises(ValidationError):  # a poison message, never a crash of the chunk task
            JobSpec.model_validate(wire | {"fallback": [bad]})


def test_result_json_has_exactly_the_contract_keys():
    ok = ItemResult(custom_id="a", status="succeeded", outputs={"answer": "x"}, backend="mock", model="m",
                    latency_ms=1.5, cached=False, attempts=1)
    bad = ItemResult.failure("b", "BadInput", "nope")
    for r in (ok, bad):
        assert set(json.loads(r.to_json())) == CONTRACT_RESULT_KEYS
    assert json.loads(bad.to_json())["error"] == {"type": "BadInput", "message": "nope"}
    with pytest.raises(ValidationError):
        ItemResult(custom_id="c", status="maybe")


def test_chunk_payload_rejects_poison():
    good = {"job": spec().model_dump(mode="json"), "chunk": 0,
            "items": [{"custom_id": "1", "inputs": {"question": "q"}}]}
    assert ChunkPayload.model_validate(good).items[0].custom_id == "1"
    for broken in ({**good, "items": [{"inputs": {}}]}, {**good, "chunk": -1}, {**good, "job": {"id": "x"}}, "text"):
        with pytest.raises(ValidationError):
            ChunkPayload.model_validate(broken)


def test_terminal_states():
    assert {s for s in JobState if s.terminal} == {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED,
                                                   JobState.BUDGET_EXCEEDED}
