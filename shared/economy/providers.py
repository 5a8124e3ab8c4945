"""Which batch API serves a job: Bedrock batch inference on the bedrock backend, Anthropic Message
Batches for ``anthropic/...`` models, OpenAI Files + Batches (any OpenAI-compatible base URL) otherwise."""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.economy.anthropic_batch import AnthropicBatches
from shared.economy.bedrock_batch import BedrockBatches
from shared.economy.openai_batch import OpenAIBatches


def batch_provider(backend: str, model: str, config: Any,
                   settings: Settings) -> AnthropicBatches | OpenAIBatches | BedrockBatches:
    """``config``: the job's resolved UnifiedConfig (the endpoint and key its live calls use).
    NotBatchable when the target cannot take a batch (the items then run live)."""
    api_base, api_key, timeout = config.api_base, config.api_key, settings.request_timeout
    if backend == "bedrock":
        return BedrockBatches(model, s3_uri=settings.economy_bedrock_s3_uri, role_arn=settings.economy_bedrock_role_arn,
                              region=config.region, timeout=timeout)
    if model.startswith("anthropic/"):
        return AnthropicBatches(api_base=api_base, api_key=api_key, timeout=timeout)
    return OpenAIBatches(api_base=api_base, api_key=api_key, timeout=timeout)


def batch_custom_id(index: int) -> str:
    """Our custom_ids may be any 512 characters; providers allow fewer (Anthropic: [A-Za-z0-9_-]{1,64}),
    so a batch names its requests by their place in the poll task's item list."""
    return f"item-{index}"
