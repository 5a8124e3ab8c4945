"""The unified wrapper on the offline MOCK backend: contract names, determinism, module kinds."""

import dspy
import pytest

from shared import (
    BackendType,
    BadInput,
    CacheConfig,
    ConfigurationError,
    RetryConfig,
    UnifiedConfig,
    UnifiedDSPyWrapper,
    ValidationConfig,
    ValidationFailed,
)


@pytest.fixture
def mock_wrapper(tmp_path):
    with UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache_dir=str(tmp_path))) as w:
        yield w


def test_seed_defaults_are_kept():
    assert RetryConfig() == RetryConfig(max_retries=3, base_delay=1.0, backoff_factor=2.0, max_delay=30.0,
                                        jitter=0.1, max_inline_wait=10.0)
    c = CacheConfig()
    assert (c.enabled, c.ttl_seconds, c.max_size_mb) == (True, 3600, 100)
    v = ValidationConfig()
    assert (v.min_length, v.max_length, v.required_keywords) == (None, None, None)
    assert [b.value for b in BackendType] == ["auto", "gateway", "bedrock", "direct", "mock"]


def test_two_output_signature_is_answered_with_typed_values(mock_wrapper):
    qa = mock_wrapper.create_module("question -> answer, confidence: float")
    pred = qa.predict(question="What is 2+2?")
    assert isinstance(pred, dspy.Prediction)
    assert isinstance(pred.answer, str) and "What is 2+2?" in pred.answer
    assert isinstance(pred.confidence, float)


def test_same_inputs_same_outputs_different_inputs_differ(mock_wrapper):
    qa = mock_wrapper.create_module("question -> answer")
    a1 = qa.predict(question="alpha?").answer
    a2 = qa.predict(question="alpha?").answer
    b = qa.predict(question="beta?").answer
    assert a1 == a2
    assert a1 != b


def test_literal_int_bool_list_outputs(mock_wrapper):
    class Classify(dspy.Signature):
        """Classify the text."""
        text: str = dspy.InputField()
        label: str = dspy.OutputField()
        sentiment: "Literal['positive', 'negative']" = dspy.OutputField()  # noqa: F821
        stars: int = dspy.OutputField()
        spam: bool = dspy.OutputField()
        tags: list[str] = dspy.OutputField()

    from typing import Literal
    Classify.model_fields["sentiment"].annotation = Literal["positive", "negative"]
    pred = mock_wrapper.create_module(Classify).predict(text="great product")
    assert pred.sentiment in ("positive", "negative")
    assert isinstance(pred.stars, int) and isinstance(pred.spam, bool)
    assert isinstance(pred.tags, list) and all(isinstance(t, str) for t in pred.tags)


def test_a_user_module_with_two_steps_runs_through_the_wrapper(mock_wrapper):
    class TwoStep(dspy.Module):
        def __init__(self):
            super().__init__()
            self.draft = dspy.Predict("question -> draft")
            self.final = dspy.ChainOfThought("question, draft -> answer")

        def forward(self, question):
            d = self.draft(question=question).draft
            return self.final(question=question, draft=d)

    m = mock_wrapper.create_module(TwoStep())
    pred, call = m.predict_with_stats(question="why is the sky blue?")
    assert pred.answer and pred.reasoning
    assert call.calls == 2


def test_unknown_and_missing_inputs_are_bad_input(mock_wrapper):
    qa = mock_wrapper.create_module("question, context -> answer")
    with pytest.raises(BadInput) as err:
        qa.predict(question="x", context="y", extra="z")
    assert "extra" in str(err.value)
    with pytest.raises(BadInput) as err:
        qa.predict(question="x")
    assert "context" in str(err.value)


def test_bad_signature_and_bad_program_are_bad_input(mock_wrapper):
    with pytest.raises(BadInput):
        mock_wrapper.create_module("question -> ")
    with pytest.raises(BadInput):
        mock_wrapper.create_module(42)


def test_unknown_backend_is_a_configuration_error():
    with pytest.raises(ConfigurationError) as err:
        UnifiedConfig(backend="openai")
    assert "mock" in str(err.value)


def test_get_info_names_backend_model_engine_and_features(mock_wrapper):
    info = mock_wrapper.get_info()
    assert info["backend"] == "mock" and info["model"] == "mock/mock"
    assert "mock" in info["engine"]
    assert info["steps"] == ["metrics", "cache", "retry"]
    # the mock answers faster than a shared-tier round trip: memory only unless asked for
    assert info["features"]["cache"]["shared_tier"] is None


def test_shared_cache_tier_can_be_asked_for_on_the_mock(tmp_path):
    w = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache_dir=str(tmp_path), cache=CacheConfig(shared=True)))
    assert w.get_info()["features"]["cache"]["shared_tier"] == "disk"
    w.create_module("question -> answer").predict(question="kept on disk")
    w.close()
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_a_memory_only_cache_hands_nothing_to_the_background_writer():
    from shared.steps.cache import CacheStep

    w = UnifiedDSPyWrapper(UnifiedConfig(backend="mock"))
    step = next(s for s in w.engine.steps if isinstance(s, CacheStep))
    step.writer.interval = 3600.0  # an entry handed over would stay pending for the whole test
    w.create_module("question -> answer").predict(question="memory only")
    assert step.shared_kind is None and len(step.memory._data) == 1
    assert not step.writer.pending and step.writer.dropped == 0  # nothing serialized for a tier that keeps nothing


def test_environment_fills_unset_fields_and_arguments_win(monkeypatch, tmp_path):
    monkeypatch.setenv("TIDYQ_BACKEND", "mock")
    monkeypatch.setenv("TIDYQ_MODEL", "from-env")
    monkeypatch.setenv("TIDYQ_CACHE_DIR", str(tmp_path))
    w = UnifiedDSPyWrapper()
    assert w.get_info()["backend"] == "mock" and w.model == "mock/from-env"
    w2 = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", model="from-arg"))
    assert w2.model == "mock/from-arg"
    monkeypatch.setenv("TIDYQ_CACHE_ENABLED", "false")
    assert "cache" not in UnifiedDSPyWrapper(UnifiedConfig(backend="mock")).get_info()["steps"]


def test_api_key_never_appears_in_info_or_repr(tmp_path):
    cfg = UnifiedConfig(backend="mock", api_key="sk-very-secret-value", cache_dir=str(tmp_path))
    w = UnifiedDSPyWrapper(cfg)
    assert "sk-very-secret-value" not in repr(w.get_info())
    assert "sk-very-secret-value" not in repr(cfg)


def test_validation_failure_raises_validation_failed_with_reasons(mock_wrapper):
    cfg = UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False),
                        validation=ValidationConfig(required_keywords=["zebra-that-never-appears"], max_attempts=2,
                                                    strategy="best_of_n"))
    qa = UnifiedDSPyWrapper(cfg).create_module("question -> answer")
    with pytest.raises(ValidationFailed) as err:
        qa.predict(question="anything")
    assert "zebra-that-never-appears" in str(err.value)
    assert err.value.attempts == 2


def test_validation_regenerates_until_a_check_passes():
    """The mock varies with the per-attempt seed, so BestOfN finds an answer that passes."""
    seen = []

    def mentions_bravo(outputs):
        seen.append(outputs["answer"])
        return None if "bravo" in outputs["answer"] else "answer must mention bravo"

    cfg = UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False),
                        validation=ValidationConfig(checks=(mentions_bravo,), max_attempts=8, strategy="best_of_n"))
    qa = UnifiedDSPyWrapper(cfg).create_module("question -> answer")
    uncached = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False)))
    question = next(q for q in (f"q{i}" for i in range(200))
                    if "bravo" not in uncached.create_module("question -> answer").predict(question=q).answer)
    pred = qa.predict(question=question)
    assert "bravo" in pred.answer
    assert len(seen) >= 2 and "bravo" not in seen[0]


def test_a_module_without_history_answers_the_same_and_leaves_dspy_history_alone(mock_wrapper):
    kept = mock_wrapper.create_module("question -> answer")
    bare = mock_wrapper.create_module("question -> answer", keep_history=False)
    before = len(mock_wrapper.lm.history)
    with_history = kept.predict(question="first")
    assert len(mock_wrapper.lm.history) == before + 1
    assert bare.predict(question="second").answer != with_history.answer
    assert len(mock_wrapper.lm.history) == before + 1  # nothing recorded for the worker's module
    assert bare.predict(question="first").toDict() == with_history.toDict()


def test_workers_keep_no_history_for_a_signature_but_do_for_a_users_program(monkeypatch):
    from workers import runtime

    monkeypatch.setenv("TIDYQ_PROGRAM_PACKAGES", "tests")
    runtime.reset()
    try:
        assert runtime.get_module("mock", None, "question -> answer", None).keep_history is False
        program = runtime.get_module("mock", None, None, "tests.unit.test_wrapper_mock:TwoStep")
        assert program.keep_history is True  # a user's forward() may read it
    finally:
        runtime.reset()


class TwoStep(dspy.Module):
    def __init__(self):
        super().__init__()
        self.first = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.first(question=question)
