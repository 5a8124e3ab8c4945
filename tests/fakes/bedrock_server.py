"""A stand-in for AWS Bedrock Runtime Converse on 127.0.0.1.

POST /model/{modelId}/converse with the Converse JSON of botocore's service model
(bedrock-runtime 2023-09-30): answer in output.message.content[0].text, stopReason, usage
{inputTokens, outputTokens, totalTokens}, metrics{latencyMs}. Errors are what botocore's
rest-json parser reads: the status of the error shape, an ``x-amzn-ErrorType`` header and
``{"message": ...}``, so boto3 raises ClientError with the real code. Point boto3 at it with
``endpoint_url=fake.url`` (or AWS_ENDPOINT_URL_BEDROCK_RUNTIME). Scripting and counters:
http_fake.FakeProvider.

    python -m tests.fakes.bedrock_server --port 0 --latency 0.1     # prints the URL
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import unquote

from tests.fakes.answers import expected_outputs, expected_text, reply_for_messages
from tests.fakes.http_fake import FakeProvider, _json_reply, _Reply, estimate_tokens, run_cli

__all__ = ["BedrockFake", "ERROR_TYPES", "converse_messages", "converse_reply", "expected_outputs", "expected_text"]

_CONVERSE_PATH = re.compile(r"^/model/(?P<model>[^/]+)/converse/?$")

# Status -> error shape of the Converse operation (service-2.json "errors" of Converse).
ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ValidationException": "Malformed input request, please reformat your input and try again.",
}


def converse_messages(request: dict) -> list[dict[str, str]]:
    """[{role, content: str}] from a Converse request: system blocks first, then the messages."""
    out = []
    system = "\n".join(b.get("text", "") for b in request.get("system") or [] if isinstance(b, dict))
    if system:
        out.append({"role": "system", "content": system})
    for message in request.get("messages") or []:
        blocks = message.get("content") or []
        text = "\n".join(b.get("text", "") for b in blocks if isinstance(b, dict))
        out.append({"role": str(message.get("role", "")), "content": text})
    return out


def converse_reply(request: dict) -> str:
    """The fake's default answer text for a Converse request (what a test can recompute)."""
    return reply_for_messages(converse_messages(request))


def model_id(path: str) -> str | None:
    match = _CONVERSE_PATH.match(path)
    return unquote(match.group("model")) if match else None


class BedrockFake(FakeProvider):
    """Bedrock Runtime fake. ``require_auth(key)`` accepts a SigV4 Authorization header whose
    Credential is access key id ``key``, or ``Authorization: Bearer key`` (Bedrock API keys);
    anything else gets 403 UnrecognizedClientException, as AWS answers an unknown key."""

    name = "bedrock"

    def route(self, method: str, path: str) -> bool:
        return method == "POST" and model_id(path) is not None

    def validate(self, path: str, request: Any) -> _Reply | None:
        if not isinstance(request, dict):
            return self.error(400, "Malformed input request: request body must be a JSON object")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "A conversation must start with a user message. Try again with a "
                                   "conversation that starts with a user message.")
        if messages[0].get("role") != "user":
            return self.error(400, "A conversation must start with a user message.")
        return None

    def default_reply(self, path: str, request: dict) -> str:
        return converse_reply(request)

    def authorized(self, headers: dict[str, str], expected: str) -> bool:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if value == f"Bearer {expected}":
            return True
        match = re.search(r"Credential=([^/,\s]+)/", value)
        return bool(match) and match.group(1) == expected

    def unauthorized(self) -> _Reply:
        return self.error(403, "The security token included in the request is invalid.",
                          error_type="UnrecognizedClientException")

    def error(self, status: int, message: str, *, error_type: str | None = None,
              headers: dict[str, str] | None = None) -> _Reply:
        if status == 404 and error_type is None and message.startswith("no route"):
            error_type = "UnknownOperationException"
        default = "InternalServerException" if status >= 500 else "ValidationException"
        kind = error_type or ERROR_TYPES.get(status, default)
        if message.startswith(("injected failure", "scripted failure")):
            message = f"{_MESSAGES.get(kind, kind)} ({message})"
        reply_headers = {"x-amzn-RequestId": str(uuid.uuid4()),
                         "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                         **(headers or {})}
        return _json_reply(status, {"message": message}, reply_headers)

    def success(self, path: str, request: dict, content: str, latency_ms: int) -> _Reply:
        input_tokens = estimate_tokens("".join(m["content"] for m in converse_messages(request)))
        output_tokens = estimate_tokens(content)
        payload = {
            "output": {"message": {"role": "assistant", "content": [{"text": content}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                      "totalTokens": input_tokens + output_tokens},
            "metrics": {"latencyMs": latency_ms},
        }
        return _json_reply(200, payload, {"x-amzn-RequestId": str(uuid.uuid4())})


def main(argv: list[str] | None = None) -> int:
    return run_cli(BedrockFake, argv, description="AWS Bedrock Runtime Converse stand-in on 127.0.0.1")


if __name__ == "__main__":
    raise SystemExit(main())
