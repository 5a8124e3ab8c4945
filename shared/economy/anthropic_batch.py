"""Anthropic Message Batches over plain HTTP (httpx): create, retrieve, cancel, results.

The wire format of https://docs.anthropic.com/en/api/creating-message-batches: ``POST
{base}/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}``; the batch's
``processing_status`` is in_progress, canceling or ended; its ``results_url`` serves JSONL lines
``{"custom_id", "result": {"type": succeeded|errored|canceled|expired, ...}}`` in any order.
``base`` is the API's /v1 root (``https://api.anthropic.com/v1``, or TIDYQ_API_BASE), as for
DSPy's own Anthropic engine. No retries here: the caller polls again or finishes items live.
"""

from __future__ import annotations

from typing import Any

import httpx

from shared.economy.openai_batch import BatchState, ProviderBatchError
from shared.economy.requests import Answer, answers_from_jsonl, generation_settings, provider_model

DEFAULT_BASE = "https://api.anthropic.com/v1"
API_VERSION = "2023-06-01"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
# processing_status -> the state names shared with the other providers
_STATES = {"in_progress": "in_progress", "canceling": "cancelling", "ended": "ended"}


def default_max_tokens(model: str) -> int:
    """The max_tokens a live call through DSPy's Anthropic engine sends when none is set."""
    try:
        from dspy._vendor.lm15.providers.anthropic import _default_max_tokens

        return int(_default_max_tokens(model))
    except Exception:  # the engine's table moved: its documented default
        return 16384


def messages_params(messages: list[dict[str, Any]]) -> dict[str, Any]:
    system = "\n\n".join(str(m["content"]) for m in messages if m.get("role") == "system")
    turns = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    return {"messages": turns, **({"system": system} if system else {})}


def messages_body(messages: list[dict[str, Any]], model: str, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A Messages API body (also Bedrock's InvokeModel body for Anthropic models): the system prompt
    apart, max_tokens always set, the LM's settings in the API's names (it has no seed or n)."""
    settings = generation_settings(lm_kwargs)
    for unsupported in ("n", "seed"):
        settings.pop(unsupported, None)
    if "stop" in settings:
        stop = settings.pop("stop")
        settings["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    return {"max_tokens": settings.pop("max_tokens", None) or default_max_tokens(model),
            **messages_params(messages), **settings}


class AnthropicBatches:
    name = "anthropic"
    max_requests, max_bytes = MAX_REQUESTS, MAX_BYTES

    def __init__(self, *, api_base: str | None, api_key: str | None, timeout: float):
        self.base = (api_base or DEFAULT_BASE).rstrip("/")
        self.http = httpx.Client(timeout=timeout, headers={"x-api-key": api_key or "", "anthropic-version": API_VERSION,
                                                           "content-type": "application/json"})

    @staticmethod
    def line(custom_id: str, messages: list[dict[str, Any]], model: str, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        name = provider_model(model)
        return {"custom_id": custom_id, "params": {"model": name, **messages_body(messages, name, lm_kwargs)}}

    def _call(self, method: str, url: str, body: dict | None = None) -> httpx.Response:
        try:
            response = self.http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise ProviderBatchError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error", {}).get("message")
            except ValueError:
                message = response.text[:300]
            code = response.status_code
            raise ProviderBatchError(f"HTTP {code}: {message}", retryable=code == 429 or code >= 500 or code == 529)
        return response

    def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str]) -> BatchState:
        return _state(self._call("POST", f"{self.base}/messages/batches", {"requests": lines}).json())

    def retrieve(self, batch_id: str) -> BatchState:
        return _state(self._call("GET", f"{self.base}/messages/batches/{batch_id}").json())

    def cancel(self, batch_id: str) -> BatchState:
        return _state(self._call("POST", f"{self.base}/messages/batches/{batch_id}/cancel").json())

    def results(self, state: BatchState) -> dict[str, Answer]:
        if not state.output_file_id:
            return {}
        return answers_from_jsonl(self._call("GET", state.output_file_id).text, "custom_id",
                                  lambda line: _answer(line.get("result") or {}))


def message_answer(message: dict[str, Any]) -> Answer:
    """An Anthropic Messages response body (also Bedrock's modelOutput for Anthropic models) -> Answer."""
    text = "".join(part.get("text", "") for part in message.get("content") or [] if part.get("type") == "text")
    usage = message.get("usage") or {}
    return Answer(text, usage.get("input_tokens"), usage.get("output_tokens"))


def _answer(result: dict[str, Any]) -> Answer:
    kind = result.get("type")
    if kind == "succeeded":
        return message_answer(result.get("message") or {})
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or result.get("error") or {}
        return Answer(error=f"provider error {error.get('type')}: {error.get('message')}")
    return Answer(error=f"the provider left this request {kind}")


def _state(data: dict[str, Any]) -> BatchState:
    status = _STATES.get(str(data.get("processing_status")), str(data.get("processing_status")))
    if status == "ended":  # the shared names: completed, or expired/cancelled when nothing succeeded
        counts = data.get("request_counts") or {}
        status = ("expired" if counts.get("expired") and not counts.get("succeeded") else
                  "cancelled" if data.get("cancel_initiated_at") else "completed")
    # the results URL stands where an OpenAI batch has its output file
    return BatchState(str(data["id"]), status, data.get("results_url"), None, dict(data.get("request_counts") or {}))
