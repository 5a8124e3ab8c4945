"""The five legacy entry points as shims over UnifiedDSPyWrapper: they warn, naming the
replacement, map old settings onto UnifiedConfig, and predict exactly what the new call predicts
on the mock backend (the seed's compatibility test)."""

import dspy
import pytest

from shared import BackendType, ConfigurationError, UnifiedConfig, UnifiedDSPyWrapper
from shared.compat import (
    DSPyBedrockEnhancedWrapper,
    DSPyEnhancedWrapper,
    DSPyWrapper,
    DynamicModule,
    configure_dspy_with_gateway,
)

QUESTION = {"question": "What is 2+2?"}


@pytest.fixture(autouse=True)
def mock_backend(monkeypatch):
    for name in ("TIDYQ_MODEL", "TIDYQ_GATEWAY_URL", "TIDYQ_API_KEY", "TIDYQ_API_BASE", "TIDYQ_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TIDYQ_BACKEND", "mock")
    monkeypatch.setenv("TIDYQ_CACHE_ENABLED", "false")


def new_prediction(signature="question -> answer", **inputs):
    return UnifiedDSPyWrapper(UnifiedConfig.from_env()).create_module(signature).predict(**(inputs or QUESTION))


@pytest.mark.parametrize("cls", [DSPyEnhancedWrapper, DSPyBedrockEnhancedWrapper, DSPyWrapper])
def test_old_wrapper_and_new_wrapper_give_the_same_prediction(cls):
    with pytest.warns(DeprecationWarning, match=r"use shared\.UnifiedDSPyWrapper"):
        old = cls()
    expected = new_prediction()
    assert old.create_module("question -> answer").predict(**QUESTION) == expected
    assert old.predict("question -> answer", **QUESTION) == expected
    assert old.get_info()["backend"] == "mock"


def test_old_settings_map_onto_unified_config():
    with pytest.warns(DeprecationWarning):
        old = DSPyEnhancedWrapper("mock-model", max_retries=5, retry_delay=0.5, enable_caching=False, cache_ttl=60,
                                  min_length=2, required_keywords=["x"], temperature=0.2)
    config = old.config
    assert (config.model, config.temperature) == ("mock-model", 0.2)
    assert (config.retry.max_retries, config.retry.base_delay) == (5, 0.5)
    assert (config.cache.enabled, config.cache.ttl_seconds) == (False, 60)
    assert (config.validation.min_length, tuple(config.validation.required_keywords)) == (2, ("x",))


def test_legacy_backend_default_applies_when_the_environment_names_none(monkeypatch):
    monkeypatch.delenv("TIDYQ_BACKEND")
    from shared.compat.legacy_config import ENTRY_POINTS, build_config

    assert build_config(ENTRY_POINTS["DSPyBedrockEnhancedWrapper"], ("anthropic.claude-3-haiku",),
                        {"region_name": "eu-west-1"}).backend is BackendType.BEDROCK
    assert build_config(ENTRY_POINTS["configure_dspy_with_gateway"], ("claude-3-sonnet",), {}).backend \
        is BackendType.GATEWAY
    assert build_config(ENTRY_POINTS["DSPyWrapper"], (), {"backend": "mock"}).backend is BackendType.MOCK


def test_unknown_old_setting_is_a_clear_error():
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigurationError, match="unknown argument 'colour'"):
        DSPyEnhancedWrapper(colour="blue")


def test_configure_dspy_with_gateway_configures_dspy_like_the_new_call():
    with pytest.warns(DeprecationWarning, match="dspy.configure"):
        lm = configure_dspy_with_gateway("claude-3-sonnet")
    try:
        assert dspy.settings.lm is lm
        old = dspy.Predict("question -> answer")(**QUESTION)
    finally:
        dspy.configure(lm=None)
    assert old.answer == new_prediction().answer


def test_dynamic_module_is_the_plain_dspy_module_it_built():
    with pytest.warns(DeprecationWarning, match="dspy.ChainOfThought"):
        module = DynamicModule("question -> answer", module_type="chain_of_thought")
    assert isinstance(module, dspy.Module)
    expected = UnifiedDSPyWrapper(UnifiedConfig.from_env()).create_module(
        dspy.ChainOfThought("question -> answer")).predict(**QUESTION)
    assert module(**QUESTION).answer == expected.answer  # no LM configured: a wrapper from the environment
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigurationError, match="module_type"):
        DynamicModule("question -> answer", module_type="react")
