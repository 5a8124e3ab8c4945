"""AUTO's choices and its error: gateway, then Bedrock (with AWS credentials), then direct; never mock."""

import pytest

from shared import BackendType, ConfigurationError, UnifiedConfig
from shared.backends.auto import choose_backend, is_bedrock_model

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in AWS_VARS + ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TIDYQ_GATEWAY_URL", "TIDYQ_API_KEY",
                            "TIDYQ_API_BASE", "TIDYQ_BACKEND", "TIDYQ_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def auto(**kw):
    return choose_backend(UnifiedConfig(backend="auto", **kw).resolved())


def test_gateway_url_wins(monkeypatch):
    monkeypatch.setenv("TIDYQ_GATEWAY_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert auto(model="chat") is BackendType.GATEWAY


def test_bedrock_model_with_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    assert auto(model="anthropic.claude-3-haiku-20240307-v1:0") is BackendType.BEDROCK
    assert auto(model="us.anthropic.claude-3-5-sonnet-20241022-v2:0") is BackendType.BEDROCK


def test_bedrock_model_without_credentials_is_an_error_naming_aws():
    with pytest.raises(ConfigurationError) as err:
        auto(model="anthropic.claude-3-haiku-20240307-v1:0")
    assert "AWS credentials" in str(err.value)


def test_direct_when_the_provider_key_or_api_base_is_present(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert auto(model="openai/gpt-4o-mini") is BackendType.DIRECT
    monkeypatch.delenv("OPENAI_API_KEY")
    assert auto(model="ollama/llama3", api_base="http://127.0.0.1:11434") is BackendType.DIRECT


def test_nothing_found_lists_what_it_looked_for_and_never_picks_mock():
    with pytest.raises(ConfigurationError) as err:
        auto(model="openai/gpt-4o-mini")
    text = str(err.value)
    for looked in ("TIDYQ_GATEWAY_URL", "Bedrock", "OPENAI_API_KEY", "TIDYQ_API_BASE"):
        assert looked in text
    with pytest.raises(ConfigurationError):
        auto()


def test_bedrock_id_recognition():
    assert is_bedrock_model("bedrock/anything")
    assert is_bedrock_model("amazon.titan-text-express-v1")
    assert not is_bedrock_model("openai/gpt-4o")
    assert not is_bedrock_model("gpt-4o")
