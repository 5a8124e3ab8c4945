"""Which batch API serves a model: Anthropic Message Batches for ``anthropic/...`` models, OpenAI
Files + Batches (any OpenAI-compatible base URL) otherwise."""

from __future__ import annotations

from shared.economy.anthropic_batch import AnthropicBatches
from shared.economy.openai_batch import OpenAIBatches


def batch_provider(model: str, *, api_base: str | None, api_key: str | None,
                   timeout: float) -> AnthropicBatches | OpenAIBatches:
    if model.startswith("anthropic/"):
        return AnthropicBatches(api_base=api_base, api_key=api_key, timeout=timeout)
    return OpenAIBatches(api_base=api_base, api_key=api_key, timeout=timeout)


def batch_custom_id(index: int) -> str:
    """Our custom_ids may be any 512 characters; providers allow fewer (Anthropic: [A-Za-z0-9_-]{1,64}),
    so a batch names its requests by their place in the poll task's item list."""
    return f"item-{index}"
