"""AUTO: pick a concrete backend from what the environment provides. Never MOCK.

Order: the MLflow gateway when TIDYQ_GATEWAY_URL is set; Bedrock for a Bedrock model id when AWS
credentials resolve; DIRECT when the provider's API key (or TIDYQ_API_KEY / TIDYQ_API_BASE) is
present. Otherwise a ConfigurationError that lists everything it looked for.
"""

from __future__ import annotations

import dataclasses
import os
import re

from shared.config import BackendType, UnifiedConfig
from shared.errors import ConfigurationError

BEDROCK_ID = re.compile(
    r"^(bedrock/)?((us|eu|apac|global)\.)?(anthropic|amazon|meta|mistral|cohere|ai21|deepseek|qwen|writer|openai)\.[\w.-]+(:\d+)?(:\w+)?$")


def is_bedrock_model(model: str | None) -> bool:
    if not model:
        return False
    return model.startswith("bedrock/") or bool(BEDROCK_ID.match(model))


def aws_credentials_resolve() -> bool:
    try:
        import boto3

        return boto3.session.Session().get_credentials() is not None
    except Exception:
        return False


def provider_key_env(model: str | None) -> str | None:
    if not model or "/" not in model:
        return "OPENAI_API_KEY" if model else None
    return f"{model.split('/', 1)[0].upper().replace('-', '_')}_API_KEY"


def choose_backend(config: UnifiedConfig) -> BackendType:
    looked_for = []
    if config.gateway_url:
        return BackendType.GATEWAY
    looked_for.append("TIDYQ_GATEWAY_URL (MLflow AI Gateway)")
    if is_bedrock_model(config.model):
        if aws_credentials_resolve():
            return BackendType.BEDROCK
        looked_for.append(f"AWS credentials for Bedrock model {config.model!r} (AWS_ACCESS_KEY_ID, AWS_PROFILE, role)")
    else:
        looked_for.append("a Bedrock model id (e.g. anthropic.claude-3-haiku-20240307-v1:0) with AWS credentials")
    key_env = provider_key_env(config.model)
    if config.model and not is_bedrock_model(config.model):
        if config.api_key or config.api_base or (key_env and os.environ.get(key_env)):
            return BackendType.DIRECT
        looked_for.append(f"{key_env or 'a provider API key'}, TIDYQ_API_KEY or TIDYQ_API_BASE "
                          f"for model {config.model!r}")
    else:
        looked_for.append("TIDYQ_MODEL (a provider model string such as openai/gpt-4o-mini) "
                          "with its API key or TIDYQ_API_BASE")
    raise ConfigurationError("backend AUTO found no usable backend; looked for: " + "; ".join(looked_for)
                             + ". Set one of them, or choose backend='mock' explicitly for offline runs.")


def resolve_auto(config: UnifiedConfig) -> UnifiedConfig:
    if config.backend is not BackendType.AUTO:
        return config
    return dataclasses.replace(config, backend=choose_backend(config))
