"""A stand-in for the OpenAI chat completions API on 127.0.0.1.

Serves POST /v1/chat/completions, /chat/completions and any path ending in /chat/completions
(so a root URL works as litellm ``api_base`` and as the openai client's ``base_url``),
``.../embeddings`` (a deterministic vector per input text, see ``fake_embedding``), and the legacy
text completions ``.../completions`` (``{"prompt": ...}`` in, ``choices[].text`` out: what
``dspy.LM(..., model_type="text")`` calls, e.g. DSPy 2.x's ``dspy.OpenAI()`` migrated to
``gpt-3.5-turbo-instruct``). Answers
are real OpenAI JSON whose content DSPy's ChatAdapter/JSONAdapter parses (see answers.py);
errors are OpenAI error JSON. Scripting and counters: http_fake.FakeProvider.

    python -m tests.fakes.openai_server --port 0 --latency 0.1     # prints the URL
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.fakes.answers import expected_outputs, expected_text, parse_field_list, reply_for_messages
from tests.fakes.http_fake import FakeProvider, _json_reply, _Reply, estimate_tokens, run_cli

__all__ = ["OpenAIFake", "openai_messages", "openai_reply", "expected_outputs", "expected_text", "fake_embedding"]

_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", None),
}


def openai_messages(request: dict) -> list[dict[str, str]]:
    """[{role, content: str}] from an OpenAI request (content may be a list of text parts)."""
    out = []
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": str(message.get("role", "")), "content": content or ""})
    return out


def _embeddings(path: str) -> bool:
    return path.rstrip("/").endswith("/embeddings")


def _text_completion(path: str) -> bool:
    path = path.rstrip("/")
    return path.endswith("/completions") and not path.endswith("/chat/completions")


def text_prompt_messages(prompt: str) -> list[dict[str, str]]:
    """The chat messages a text-completion prompt was built from, as far as the answers need them.

    DSPy's text mode joins its messages' contents with blank lines and ends with "BEGIN RESPONSE:";
    the last request starts at the last header of the first input field named in the system part."""
    prompt = prompt.removesuffix("BEGIN RESPONSE:").rstrip()
    inputs = list(parse_field_list(prompt, "Your input fields are:"))
    start = prompt.rfind(f"[[ ## {inputs[0]} ## ]]") if inputs else -1
    if start <= 0:
        return [{"role": "user", "content": prompt}]
    return [{"role": "system", "content": prompt[:start]}, {"role": "user", "content": prompt[start:]}]


def fake_embedding(text: str, size: int = 8) -> list[float]:
    """The stand-in's embedding of ``text``: letter counts folded into ``size`` slots, normalised
    (texts sharing words point the same way, so a nearest-neighbour search behaves)."""
    slots = [0.0] * size
    for char in text.lower():
        if char.isalnum():
            slots[ord(char) % size] += 1.0
    norm = sum(x * x for x in slots) ** 0.5 or 1.0
    return [x / norm for x in slots]


def openai_reply(request: dict) -> str:
    """The fake's default answer text for an OpenAI chat (or text completion) request (what a test can
    recompute)."""
    if "messages" not in request and isinstance(request.get("prompt"), str):
        return reply_for_messages(text_prompt_messages(request["prompt"]))
    response_format = request.get("response_format") or {}
    json_mode = True if response_format.get("type") in ("json_object", "json_schema") else None
    return reply_for_messages(openai_messages(request), json_mode=json_mode)


class OpenAIFake(FakeProvider):
    """OpenAI-compatible fake. ``base_url`` is ``url + "/v1"``; ``require_auth(token)`` checks
    ``Authorization: Bearer <token>`` and answers 401 otherwise."""

    name = "openai"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def route(self, method: str, path: str) -> bool:
        return method == "POST" and path.rstrip("/").endswith(("/completions", "/embeddings"))

    def validate(self, path: str, request: Any) -> _Reply | None:
        if not isinstance(request, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        if not request.get("model"):
            return self.error(400, "you must provide a model parameter")
        if _embeddings(path):
            return None if isinstance(request.get("input"), (str, list)) else self.error(400, "'input' is required")
        if _text_completion(path):
            prompt = request.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = request["prompt"] = prompt[0]
            return None if isinstance(prompt, str) else self.error(400, "'prompt' must be a string")
        if not isinstance(request.get("messages"), list) or not request["messages"]:
            return self.error(400, "'messages' must be a non-empty array")
        return None

    def default_reply(self, path: str, request: dict) -> str:
        return "" if _embeddings(path) else openai_reply(request)

    def authorized(self, headers: dict[str, str], expected: str) -> bool:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        return value == f"Bearer {expected}"

    def unauthorized(self) -> _Reply:
        return self.error(401, "Incorrect API key provided.")

    def error(self, status: int, message: str, *, error_type: str | None = None,
              headers: dict[str, str] | None = None) -> _Reply:
        kind, code = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        payload = {"error": {"message": message, "type": error_type or kind, "param": None, "code": code}}
        return _json_reply(status, payload, {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", **(headers or {})})

    def success(self, path: str, request: dict, content: str, latency_ms: int) -> _Reply:
        if _embeddings(path):
            texts = [request["input"]] if isinstance(request["input"], str) else request["input"]
            return _json_reply(200, {"object": "list", "model": request["model"],
                                     "data": [{"object": "embedding", "index": i, "embedding": fake_embedding(str(t))}
                                              for i, t in enumerate(texts)],
                                     "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}})
        prompt_tokens = estimate_tokens(str(request.get("prompt") or "") +
                                        "".join(m["content"] for m in openai_messages(request)))
        completion_tokens = estimate_tokens(content)
        model = str(request.get("model") or "fake-model")
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        n = max(1, int(request.get("n") or 1))
        headers = {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", "openai-processing-ms": str(latency_ms)}
        if _text_completion(path):
            return _json_reply(200, {
                "id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": i, "text": content, "logprobs": None, "finish_reason": "stop"} for i in range(n)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens * n,
                          "total_tokens": prompt_tokens + completion_tokens * n}}, headers)
        if request.get("stream"):
            return self._stream(ident, created, model, content, n, prompt_tokens, completion_tokens, headers)
        payload = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"} for i in range(n)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens * n,
                      "total_tokens": prompt_tokens + completion_tokens * n},
            "system_fingerprint": "fp_tidyq_fake",
        }
        return _json_reply(200, payload, headers)

    @staticmethod
    def _stream(ident: str, created: int, model: str, content: str, n: int, prompt_tokens: int,
                completion_tokens: int, headers: dict[str, str]) -> _Reply:
        """Server-sent events, the whole stream sent at once (Content-Length framed)."""
        def chunk(choices: list, usage: dict | None = None) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": choices}
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body)}\n\n"

        events = [chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                         for i in range(n)])]
        for start in range(0, len(content), 24):
            piece = content[start:start + 24]
            events.append(chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None} for i in range(n)]))
        events.append(chunk([{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(n)]))
        events.append(chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens * n,
                                 "total_tokens": prompt_tokens + completion_tokens * n}))
        events.append("data: [DONE]\n\n")
        return _Reply(200, {"Content-Type": "text/event-stream", **headers}, "".join(events).encode())


def main(argv: list[str] | None = None) -> int:
    return run_cli(OpenAIFake, argv, description="OpenAI chat completions stand-in on 127.0.0.1")


if __name__ == "__main__":
    raise SystemExit(main())
