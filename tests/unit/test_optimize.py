"""Optimizer and metric catalogue, trainset checks, and optimization runs (mock backend for
speed; the in-context-learning stand-in provider where scores must move)."""

import json
import sys
import types

import dspy
import pytest

from shared import UnifiedConfig, UnifiedDSPyWrapper
from shared.errors import BadInput
from shared.optimize import (
    OPTIMIZERS,
    check_settings,
    read_examples_file,
    resolve_metric,
    run_optimization,
    to_examples,
)
from tests.optimize_support import icl_reply, sentiment_rows


def ex(**kw):
    return dspy.Example(question="q", **kw).with_inputs("question")


def test_builtin_metrics():
    gold = ex(answer="Paris")
    assert resolve_metric("exact_match")(gold, dspy.Prediction(answer="  paris ")) == 1.0
    assert resolve_metric("exact_match")(gold, dspy.Prediction(answer="Paris, France")) == 0.0
    assert resolve_metric("contains")(gold, dspy.Prediction(answer="It is Paris, France")) == 1.0
    numeric = resolve_metric("numeric", {"tolerance": 0.05})
    assert numeric(ex(answer="3.14"), dspy.Prediction(answer="about 3.1 units")) == 1.0
    assert numeric(ex(answer="3.14"), dspy.Prediction(answer="3.0")) == 0.0
    assert numeric(ex(answer="10"), dspy.Prediction(answer="n/a")) == 0.0
    f1 = resolve_metric("f1")(ex(answer="the cat sat"), dspy.Prediction(answer="cat sat down"))
    assert f1 == pytest.approx(0.6667, 1e-3)
    two = dspy.Example(question="q", a="x", b="y").with_inputs("question")
    assert resolve_metric("exact_match")(two, dspy.Prediction(a="x", b="z")) == 0.5


def test_metric_errors_name_the_option():
    with pytest.raises(BadInput, match="unknown metric 'bleu'"):
        resolve_metric("bleu")
    with pytest.raises(BadInput, match="no option 'tolerance'"):
        resolve_metric("exact_match", {"tolerance": 1})
    with pytest.raises(BadInput, match="must be a float"):
        resolve_metric("numeric", {"tolerance": "wide"})


def test_user_metrics_only_from_the_allow_list(monkeypatch):
    mod = types.ModuleType("tidyq_test_metrics")
    mod.starts_with_p = lambda example, pred, trace=None: float(str(pred.answer).startswith("P"))
    monkeypatch.setitem(sys.modules, "tidyq_test_metrics", mod)
    with pytest.raises(BadInput, match="not in the allow-list"):
        resolve_metric("tidyq_test_metrics:starts_with_p", allow_list=[])
    monkeypatch.setenv("TIDYQ_METRIC_ALLOW_LIST", json.dumps(["tidyq_test_metrics:starts_with_p"]))
    metric = resolve_metric("tidyq_test_metrics:starts_with_p")
    assert metric(ex(answer="x"), dspy.Prediction(answer="Paris")) == 1.0
    with pytest.raises(BadInput, match="cannot import"):
        resolve_metric("tidyq_test_metrics:nope", allow_list=["tidyq_test_metrics:nope"])


def test_optimizer_catalogue_and_settings():
    assert {"bootstrap-fewshot", "bootstrap-random-search", "mipro-v2", "gepa", "simba"} <= set(OPTIMIZERS)
    assert check_settings("bootstrap-fewshot", {"max_bootstrapped_demos": "2"}) == {"max_bootstrapped_demos": 2}
    assert check_settings("mipro-v2", {}) == {"auto": "light"}
    assert check_settings("mipro-v2", {"num_candidates": 3, "num_trials": 4}) == {"num_candidates": 3, "num_trials": 4}
    assert check_settings("gepa", {"max_metric_calls": 50}) == {"max_metric_calls": 50}
    with pytest.raises(BadInput, match="unknown optimizer 'adam'"):
        check_settings("adam", {})
    with pytest.raises(BadInput, match="no setting 'lr'") as info:
        check_settings("simba", {"lr": 1})
    assert info.value.where == "--set lr"
    with pytest.raises(BadInput, match="must be a int"):
        check_settings("simba", {"max_steps": "many"})
    with pytest.raises(BadInput, match="auto must be"):
        check_settings("gepa", {"auto": "max"})


def test_trainset_file_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "train.jsonl"
    good = json.dumps({"inputs": {"question": "q"}, "outputs": {"answer": "a"}})
    cases = [
        ("{not json", "train.jsonl:2", "not JSON"),
        (json.dumps({"inputs": {"quest": "q"}, "outputs": {"answer": "a"}}), "field 'inputs.quest'", "unknown input"),
        (json.dumps({"inputs": {}, "outputs": {"answer": "a"}}), "field 'inputs.question'", "missing input"),
        (json.dumps({"inputs": {"question": "q"}, "outputs": {"answr": "a"}}), "field 'outputs.answr'",
         "unknown output"),
        (json.dumps({"inputs": {"question": "q"}}), "field 'outputs'", "required"),
    ]
    for line, where, message in cases:
        path.write_text(good + "\n" + line + "\n")
        with pytest.raises(BadInput) as info:
            read_examples_file(path, ["question"], ["answer"])
        assert where in str(info.value) and message.lower() in str(info.value).lower(), str(info.value)
        assert ":2" in str(info.value)
    path.write_text(good + "\n\n" + good + "\n")
    assert len(read_examples_file(path, ["question"], ["answer"])) == 2


@pytest.fixture(scope="module")
def mock_wrapper():
    from shared import CacheConfig

    return UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False)))


def _rows(n, offset=0):
    return to_examples([{"inputs": {"question": f"q{i}"}, "outputs": {"answer": f"a{i}"}}
                        for i in range(offset, offset + n)], ["question"])


def _run(wrapper, optimizer, settings=None, **kw):
    return run_optimization(dspy.Predict("question -> answer"), trainset=_rows(10), valset=_rows(6, 100),
                            optimizer=optimizer, settings=settings or {}, metric=resolve_metric("exact_match"),
                            lm=wrapper.lm, backend=wrapper.backend_name, model=wrapper.model, **kw)


def test_bootstrap_fewshot_on_mock_reports_progress_and_usage(mock_wrapper):
    seen = []
    out = _run(mock_wrapper, "bootstrap-fewshot", progress=seen.append)
    assert out.stopped is None and out.program is not None
    assert out.lm_calls >= 16 and out.input_tokens > 0  # 6 baseline + bootstrap attempts + 6 final
    phases = [p["phase"] for p in seen]
    assert phases[0] == "baseline" and "search" in phases and phases[-1] == "done"
    assert seen[-1]["best_score"] == out.optimized_score


def test_time_limit_ends_the_search_with_the_best_program_so_far(mock_wrapper):
    out = _run(mock_wrapper, "bootstrap-random-search", {"num_candidate_programs": 500}, time_limit=0.5)
    assert out.stopped == "time_limit"
    assert out.program is not None  # the best evaluated candidate (or the start program)
    assert out.evaluations < 500


def test_cancel_stops_the_search_and_keeps_nothing(mock_wrapper):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    out = _run(mock_wrapper, "bootstrap-random-search", {"num_candidate_programs": 500}, should_stop=should_stop)
    assert out.stopped == "cancelled" and out.program is None


def test_fewshot_optimizers_raise_the_score_on_an_in_context_learner(openai_fake):
    openai_fake.set_responder(icl_reply)
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/gpt-4o-mini", api_base=openai_fake.base_url,
                                         api_key="sk-test"))
    train = to_examples(sentiment_rows(24), ["review"])
    val = to_examples(sentiment_rows(20, 100), ["review"])
    out = run_optimization(dspy.Predict("review -> sentiment"), trainset=train, valset=val,
                           optimizer="bootstrap-fewshot", settings={}, metric=resolve_metric("exact_match"),
                           lm=w.lm, backend=w.backend_name, model=w.model)
    assert out.baseline_score == 0.0  # no demos: the stand-in answers "unknown"
    assert out.optimized_score >= 0.7
    demos = out.program.demos
    assert demos and all(d["sentiment"] in ("positive", "negative") for d in demos)
    w.close()
