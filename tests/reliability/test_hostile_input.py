"""Bad and hostile input, generated with hypothesis: the JSONL reader, the job schema and the
signature parser never crash (every refusal is a BadInput naming where), oversized payloads are
refused before anything is enqueued, a signature string never executes code, and a program URI
can only name a model and version inside the registry (no path, no scheme, no traversal).

The number of cases hypothesis tried is recorded in the reliability figures."""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from producers import jsonl
from shared.errors import BadInput
from shared.jobs import ChunkPayload, JobSpec, signature_fields
from shared.programs import ProgramRef, parse_program_uri
from tests.reliability.conftest import FIGURES

CASES = {}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def counted(name):
    CASES[name] = CASES.get(name, 0) + 1
    FIGURES["hypothesis_cases"] = dict(CASES, total=sum(v for k, v in CASES.items() if k != "total"))


def assert_clear(err: BadInput) -> None:
    assert isinstance(err, BadInput)
    assert str(err).strip() and err.where, err


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
rowish = st.one_of(
    json_values,
    st.fixed_dictionaries({"custom_id": json_values, "inputs": json_values}),
    st.fixed_dictionaries({"inputs": st.dictionaries(st.text(max_size=10), json_values, max_size=3)},
                          optional={"custom_id": st.text(max_size=600) | st.integers() | st.booleans(),
                                    "extra": json_values}),
)


@SETTINGS
@given(line=st.one_of(st.text(max_size=200), rowish.map(json.dumps)))
def test_jsonl_line_parser_answers_an_item_or_a_clear_error(line):
    counted("jsonl_line")
    try:
        item = jsonl.parse_item(line, where="in.jsonl:7", line_no=7, input_fields=("question",),
                                signature="question -> answer", max_item_bytes=4096)
    except BadInput as err:
        assert_clear(err)
        assert "in.jsonl:7" in err.where
        return
    assert set(item.inputs) == {"question"} and 1 <= len(item.custom_id) <= 512


@SETTINGS
@given(blob=st.binary(max_size=400))
def test_jsonl_file_check_on_arbitrary_bytes(tmp_path_factory, blob):
    counted("jsonl_file")
    path = tmp_path_factory.mktemp("hyp") / "in.jsonl"
    path.write_bytes(blob)
    try:
        total = jsonl.FileCheck(path, input_fields=("question",), signature="question -> answer",
                                max_items=10, max_item_bytes=4096).run()
    except BadInput as err:
        assert_clear(err)
        assert str(path) in err.where
        return
    assert 1 <= total <= 10


@SETTINGS
@given(payload=st.one_of(json_values, st.fixed_dictionaries(
    {"job": st.fixed_dictionaries({"id": st.text(max_size=8), "kind": st.sampled_from(["batch", "predict", "x"]),
                                   "backend": st.sampled_from(["mock", "auto", "nope", ""]),
                                   "total": st.integers(-2, 5), "chunk_size": st.integers(-1, 3),
                                   "ttl_seconds": st.integers(-1, 3), "created_at": st.floats(allow_nan=False)},
                                  optional={"signature": st.text(max_size=30), "program": st.text(max_size=30),
                                            "api_key": st.text(max_size=10)}),
     "chunk": st.integers(-2, 3), "items": json_values})))
def test_job_schema_validates_or_refuses_with_field_names(payload):
    counted("job_schema")
    for model in (ChunkPayload, JobSpec):
        try:
            model.model_validate(payload)
        except ValidationError as err:
            assert err.errors() and all(e["loc"] is not None for e in err.errors())
        except BadInput as err:  # the backend validator speaks BadInput
            assert_clear(err)


def test_job_schema_has_no_place_for_credentials():
    spec = {"id": "j", "kind": "batch", "signature": "q -> a", "backend": "mock", "total": 1, "chunk_size": 1,
            "ttl_seconds": 5, "created_at": 0.0}
    JobSpec.model_validate(spec)
    for field in ("api_key", "aws_secret_access_key", "redis_url", "password"):
        with pytest.raises(ValidationError):
            JobSpec.model_validate(spec | {field: "sk-secret"})


identifier = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8)
hostile_types = st.sampled_from([
    "__import__('os').system('touch {marker}')", "eval('open(\"{marker}\", \"w\")')",
    "(lambda: open('{marker}', 'w'))()", "exec('open(\"{marker}\",\"w\")')", "list[open('{marker}', 'w')]",
    "str = open('{marker}', 'w')", "globals()['__builtins__']['open']('{marker}', 'w')",
    "getattr(__import__('pathlib').Path('{marker}'), 'touch')()", "int", "Literal['a', 'b']", "dict[str, int]",
])


@SETTINGS
@given(text=st.text(max_size=80) | st.builds(lambda a, b, t: f"{a} -> {b}: {t}", identifier, identifier,
                                                  hostile_types))
def test_signature_parser_never_crashes_and_never_runs_code(tmp_path_factory, text):
    counted("signature")
    marker = tmp_path_factory.mktemp("sig") / "executed"
    text = text.replace("{marker}", str(marker))
    try:
        ins, outs = signature_fields.__wrapped__(text)
        assert ins and outs
    except BadInput as err:
        assert_clear(err)
    assert not marker.exists(), f"signature {text!r} executed code"


@SETTINGS
@given(text=st.one_of(
    st.text(max_size=60),
    st.builds(lambda pre, body: pre + body, st.sampled_from(["models:/", "models:", "runs:/", "file://", "/", "../",
                                                              "s3://", "models:/../", "models:/a/../../"]),
              st.text(alphabet=string.ascii_letters + string.digits + "./@:-_%\\~", max_size=40))))
def test_program_uri_only_names_a_model_in_the_registry(text):
    counted("program_uri")
    try:
        ref = parse_program_uri(text)
    except BadInput as err:
        assert_clear(err)
        return
    assert isinstance(ref, ProgramRef)
    for bad in ("/", "\\", ":", "@", "%", "~"):
        assert bad not in ref.name, ref
    assert not ref.name.startswith("."), ref
    assert (ref.version is None) != (ref.alias is None)
    assert parse_program_uri(ref.uri) == ref  # round-trips: nothing was dropped on the way


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "runs:/abc/program", "models:/../secret/1",
                                 "models:/a/../../etc/1", "s3://bucket/key", "models:/%2e%2e/1",
                                 "/etc/passwd", "..", "models:/name/1/extra", "models:/name@../x"])
def test_program_uris_outside_the_registry_are_refused(uri):
    with pytest.raises(BadInput):
        parse_program_uri(uri)


# --- limits from settings: refused before anything is enqueued -------------------------------------

def queued_messages(redis_url):
    import redis

    r = redis.Redis.from_url(redis_url)
    return sum(r.llen(q) for q in ("predict.mock", "predict.direct"))


def test_oversized_items_and_batches_are_refused_before_enqueueing(redis_url, monkeypatch, tmp_path):
    from producers import Client

    monkeypatch.setenv("TIDYQ_MAX_ITEM_BYTES", "1024")
    monkeypatch.setenv("TIDYQ_MAX_ITEMS_PER_JOB", "5")
    client = Client()
    big = {"custom_id": "big", "inputs": {"question": "x" * 2000}}
    with pytest.raises(BadInput) as err:
        client.submit_batch([big], "question -> answer", backend="mock")
    assert "1024" in str(err.value)
    with pytest.raises(BadInput):
        client.submit_predict("question -> answer", big["inputs"], backend="mock")
    with pytest.raises(BadInput) as err:
        client.submit_batch([{"inputs": {"question": str(i)}} for i in range(6)], "question -> answer", backend="mock")
    assert "5" in str(err.value)
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(big) + "\n")
    with pytest.raises(BadInput) as err:
        client.submit_file(path, "question -> answer", backend="mock")
    assert f"{path}:1" in err.value.where
    path.write_text("".join(json.dumps({"inputs": {"question": str(i)}}) + "\n" for i in range(6)))
    with pytest.raises(BadInput):
        client.submit_file(path, "question -> answer", backend="mock")
    assert queued_messages(redis_url) == 0
    import redis

    assert redis.Redis.from_url(redis_url).keys("tidyq:job:*") == []  # nothing half-written


# --- the worker refuses anything that is not JSON --------------------------------------------------

class _Exploit:
    """Unpickling this object opens (creates) the marker file: proof that pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_worker_rejects_pickle_and_unknown_content_types(redis_url, start_worker, tmp_path):
    import pickle
    import time
    import uuid

    import redis
    from kombu import Connection

    from producers import Client

    worker = start_worker(queues=["predict.mock"], concurrency=1)
    marker = tmp_path / "unpickled"
    bodies = [
        (pickle.dumps(((_Exploit(str(marker)),), {}, {"callbacks": None, "errbacks": None, "chain": None,
                                                      "chord": None})), "application/x-python-serialize", "binary"),
        (b"!!python/object/apply:os.system ['true']", "application/x-yaml", "utf-8"),
        (b"\x00\x01garbage", "application/x-tidyq-unknown", "binary"),
    ]
    with Connection(redis_url) as conn:
        producer = conn.Producer()
        for body, content_type, encoding in bodies:
            task_id = uuid.uuid4().hex
            producer.publish(body, routing_key="predict.mock", exchange="", content_type=content_type,
                             content_encoding=encoding, serializer=None,
                             headers={"lang": "py", "task": "tidyq.predict.chunk", "id": task_id, "root_id": task_id,
                                      "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
                                      "argsrepr": "()", "kwargsrepr": "{}", "origin": "test"})
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (r.llen("predict.mock") or r.hlen("unacked")):
        time.sleep(0.1)
    assert r.llen("predict.mock") == 0 and r.hlen("unacked") == 0  # taken and dropped, not stuck
    assert not marker.exists(), "the worker unpickled a message"
    assert worker.alive()
    log = worker.log_path.read_text()
    assert "ContentDisallowed" in log or "Refusing to deserialize" in log
    # and it still serves real work
    job = Client().submit_batch([{"inputs": {"question": "still there?"}}], "question -> answer", backend="mock")
    assert job.wait(timeout=30)["counts"]["succeeded"] == 1
