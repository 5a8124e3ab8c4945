"""OpenAI Files + Batches (any OpenAI-compatible base URL) through the openai SDK.

One method per step of the provider's life cycle, vendor errors mapped at this boundary to
ProviderBatchError (the caller decides: finish live, or poll again). The SDK's own retries are
off: a failed poll is simply the next poll, a failed submit finishes its items live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from shared.economy.requests import Answer, answers_from_jsonl, generation_settings, provider_model

# the provider's limits on one batch (https://platform.openai.com/docs/guides/batch)
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
RUNNING_STATES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


class ProviderBatchError(Exception):
    """The batch API refused or failed a call; ``retryable`` for network errors, 429 and 5xx."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class BatchState:
    id: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    counts: dict[str, int]

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATES


def _mapped(exc: Exception) -> ProviderBatchError:
    import openai

    status = getattr(exc, "status_code", None)
    retryable = isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)) or (
        isinstance(status, int) and (status == 429 or status >= 500))
    return ProviderBatchError(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}", retryable=retryable)


class OpenAIBatches:
    name = "openai"
    max_requests, max_bytes = MAX_REQUESTS, MAX_BYTES

    def __init__(self, *, api_base: str | None, api_key: str | None, timeout: float):
        import openai

        self.client = openai.OpenAI(base_url=api_base, api_key=api_key or "unset", max_retries=0, timeout=timeout)

    @staticmethod
    def line(custom_id: str, messages: list[dict[str, Any]], model: str, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        """One line of a batch input file: the chat completion request a live call would make."""
        body = {"model": provider_model(model), "messages": messages, **generation_settings(lm_kwargs)}
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}

    def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str]) -> BatchState:
        """Upload ``lines`` ({custom_id, method, url, body}) as a batch input file and start the batch."""
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        try:
            uploaded = self.client.files.create(file=("tidyq-batch.jsonl", data, "application/jsonl"), purpose="batch")
            batch = self.client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                               completion_window="24h", metadata=metadata)
        except Exception as exc:
            raise _mapped(exc) from None
        return _state(batch)

    def retrieve(self, batch_id: str) -> BatchState:
        try:
            return _state(self.client.batches.retrieve(batch_id))
        except Exception as exc:
            raise _mapped(exc) from None

    def cancel(self, batch_id: str) -> BatchState:
        try:
            return _state(self.client.batches.cancel(batch_id))
        except Exception as exc:
            raise _mapped(exc) from None

    def results(self, state: BatchState) -> dict[str, Answer]:
        """custom_id -> Answer, from the output and the error file (lines come in any order)."""
        out: dict[str, Answer] = {}
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            try:
                text = self.client.files.content(file_id).text
            except Exception as exc:
                raise _mapped(exc) from None
            answers_from_jsonl(text, "custom_id", _answer, into=out)
        return out


def _answer(line: dict[str, Any]) -> Answer:
    error = line.get("error")
    if error:
        return Answer(error=f"provider error {error.get('code')}: {error.get('message')}")
    response = line.get("response") or {}
    body = response.get("body") or {}
    if response.get("status_code") != 200:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return Answer(error=f"provider answered HTTP {response.get('status_code')}: {message}")
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return Answer(error="the provider's answer has no message content")
    usage = body.get("usage") or {}
    return Answer(content, usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _state(batch: Any) -> BatchState:
    counts = batch.request_counts.model_dump() if batch.request_counts is not None else {}
    return BatchState(batch.id, batch.status, batch.output_file_id, batch.error_file_id, counts)


def split(lines: list[dict[str, Any]], *, max_requests: int = MAX_REQUESTS,
          max_bytes: int = MAX_BYTES) -> list[list[dict]]:
    """Lines in groups that each fit the provider's per-batch limits."""
    groups: list[list[dict]] = [[]]
    size = 0
    for line in lines:
        n = len(json.dumps(line, ensure_ascii=False).encode()) + 1
        if groups[-1] and (len(groups[-1]) >= max_requests or size + n > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(line)
        size += n
    return [g for g in groups if g]
