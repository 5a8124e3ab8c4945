"""Function-scoped stand-in providers: a fresh server (fresh counters, no script) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.bedrock_server import BedrockFake
from tests.fakes.openai_server import OpenAIFake


@pytest.fixture
def openai_fake() -> Iterator[OpenAIFake]:
    """An OpenAI chat-completions fake on 127.0.0.1: ``.url`` (root), ``.base_url`` (root + /v1)."""
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def bedrock_fake() -> Iterator[BedrockFake]:
    """A Bedrock Runtime Converse fake on 127.0.0.1: boto3 ``endpoint_url=bedrock_fake.url``."""
    with BedrockFake() as fake:
        yield fake
