"""Program specs, JSON state, models:/ URIs, the bounded version cache, registration and loading
through a real sqlite MLflow store."""

import json
import threading

import dspy
import pytest

from shared import programs
from shared.errors import BadInput
from shared.programs import ProgramRef, ProgramSpec, VersionCache, parse_program_uri
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)


@pytest.mark.parametrize("text,expected", [
    ("models:/qa/3", ProgramRef("qa", version=3)),
    ("models:/my.model-v2/12", ProgramRef("my.model-v2", version=12)),
    ("models:/qa@live", ProgramRef("qa", alias="live")),
    ("models:/qa@staging", ProgramRef("qa", alias="staging")),
    ("qa", ProgramRef("qa", alias="live")),
])
def test_parse_program_uri(text, expected):
    assert parse_program_uri(text) == expected
    assert parse_program_uri(expected.uri) == expected


@pytest.mark.parametrize("text", ["", "models:/qa", "models:/qa/0", "models:/qa/x", "models:/qa/-1", "models:/qa@",
                                  "models:/qa@1bad", "runs:/abc/model", "a/b", "models://3", "models:/bad name/1"])
def test_bad_program_uris_are_refused_with_where(text):
    with pytest.raises(BadInput) as info:
        parse_program_uri(text)
    assert info.value.where == "program"


def _compiled_program():
    p = dspy.Predict("question -> answer")
    p.signature = p.signature.with_instructions("Answer in one word.")
    p.demos = [dspy.Example(question="2+2?", answer="4").with_inputs("question"),
               dspy.Example(question="capital of France?", answer="Paris").with_inputs("question")]
    return p


def test_json_state_roundtrip_keeps_demos_and_instructions(tmp_path):
    p = _compiled_program()
    spec = programs.spec_for(p)
    assert spec == ProgramSpec("predict", "question -> answer")
    programs.save_program(p, spec, tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["program.json", "spec.json"]
    state = json.loads((tmp_path / "program.json").read_text())
    assert state["lm"] is None
    loaded = programs.load_program_dir(tmp_path)
    assert isinstance(loaded, dspy.Predict)
    assert loaded.signature.instructions == "Answer in one word."
    assert [d["answer"] for d in loaded.demos] == ["4", "Paris"]


def test_chain_of_thought_roundtrip(tmp_path):
    cot = dspy.ChainOfThought("context, question -> answer")
    cot.predict.demos = [dspy.Example(context="c", question="q", reasoning="r", answer="a")]
    spec = programs.spec_for(cot)
    assert spec == ProgramSpec("chain_of_thought", "context, question -> answer")
    programs.save_program(cot, spec, tmp_path)
    loaded = programs.load_program_dir(tmp_path)
    assert isinstance(loaded, dspy.ChainOfThought)
    assert programs.demos_of(loaded)[0]["reasoning"] == "r"


def test_custom_module_classes_are_refused():
    class Custom(dspy.Module):
        def forward(self, question):
            return question

    with pytest.raises(BadInput, match="cannot store a Custom"):
        programs.spec_for(Custom())


def test_loading_refuses_non_json_and_unknown_kinds(tmp_path):
    programs.save_program(_compiled_program(), ProgramSpec("predict", "question -> answer"), tmp_path)
    (tmp_path / "program.json").write_bytes(b"\x80\x04\x95pickle")
    with pytest.raises(BadInput, match="not JSON"):
        programs.load_program_dir(tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps({"kind": "pickle", "signature": "a -> b"}))
    with pytest.raises(BadInput, match="unknown program kind"):
        programs.load_program_dir(tmp_path)


def test_version_cache_is_bounded_lru_and_loads_once():
    cache = VersionCache(2)
    loads = []

    def loader(key):
        def load():
            loads.append(key)
            return object()
        return load

    a = cache.get(("m", 1), loader(1))
    cache.get(("m", 2), loader(2))
    assert cache.get(("m", 1), loader(1)) is a  # hit; 1 is now most recent
    cache.get(("m", 3), loader(3))  # evicts 2
    assert sorted(cache.keys()) == [("m", 1), ("m", 3)]
    cache.get(("m", 2), loader(2))
    assert loads == [1, 2, 3, 2]


def test_version_cache_single_flight_under_threads():
    cache = VersionCache(4)
    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        gate.wait(2)
        return "module"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(("m", 1), slow))) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert results == ["module"] * 8 and len(calls) == 1


def _register(tmp_path, name, program, tag):
    """Log the program JSON as a run artifact and register it (what the optimize task does)."""
    from shared import tracking
    from shared.registry import get_registry

    run = tracking.start_job_run(f"job-{tag}", "optimize", {"optimizer": "test"})
    assert run.active
    d = tmp_path / f"prog-{tag}"
    programs.save_program(program, programs.spec_for(program), d)
    assert run.log_artifacts(str(d), "program")
    run.finish()
    return get_registry().register(name, run.run_id, "program")


def test_register_load_and_resolve_through_sqlite_mlflow(tmp_path, redis_url, mlflow_uri):
    from mlflow import MlflowClient

    from shared.registry import get_registry

    v1 = _register(tmp_path, "qa", _compiled_program(), 1)
    plain = dspy.Predict("question -> answer")
    v2 = _register(tmp_path, "qa", plain, 2)
    assert (v1, v2) == (1, 2)
    reg = get_registry()
    assert reg.rollout_state("qa").live == 1  # the first version goes live
    assert MlflowClient(mlflow_uri).get_registered_model("qa").aliases == {"live": 1}

    loaded = programs.load_program("models:/qa/1")
    assert [d["answer"] for d in loaded.demos] == ["4", "Paris"]
    assert programs.load_program("models:/qa/1") is loaded  # cached per process
    assert programs.load_program("qa").demos == loaded.demos  # bare name = live
    assert programs.load_program("models:/qa/2").demos == []

    MlflowClient(mlflow_uri).set_registered_model_alias("qa", "staging", "2")
    assert programs.resolve_program("models:/qa@staging").version == 2
    with pytest.raises(BadInput, match="no version 9"):
        programs.load_program("models:/qa/9")
    with pytest.raises(BadInput, match="no alias"):
        programs.resolve_program("models:/qa@nope")
