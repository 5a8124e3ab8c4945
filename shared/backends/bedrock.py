"""BEDROCK: AWS Bedrock Runtime's Converse API through boto3.

Credentials, region and endpoint come from AWS's own chain (AWS_* variables, profiles, instance
roles; AWS_DEFAULT_REGION; AWS_ENDPOINT_URL_BEDROCK_RUNTIME). botocore's retries are off
(total_max_attempts=1: botocore counts max_attempts as retries): the retry step is the only retry
layer. botocore errors are mapped to dspy.lm15 errors here, at the boundary.
"""

from __future__ import annotations

import threading

from dspy import lm15
from dspy.lm15 import Message, Request, Response, TextPart, Usage

from shared.errors import ConfigurationError

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                "tool_use": "tool_call", "content_filtered": "content_filter", "guardrail_intervened": "content_filter"}
RATE = {"ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"}
SERVER = {"ServiceUnavailableException", "InternalServerException", "ModelNotReadyException",
          "ModelErrorException", "ServiceException"}
AUTH = {"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException",
        "InvalidSignatureException", "IncompleteSignature", "MissingAuthenticationTokenException"}
TIMEOUT = {"ModelTimeoutException", "RequestTimeout", "RequestTimeoutException"}
AUTH_HINT = "check the worker's AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or role)"


def bedrock_model_id(model: str) -> str:
    return model.split("/", 1)[1] if model.startswith("bedrock/") else model


def to_converse(request: Request, model_id: str) -> dict:
    body: dict = {"modelId": model_id, "messages": []}
    system = request.system if isinstance(request.system, str) else "".join(
        getattr(p, "text", "") for p in (request.system or ()))
    if system:
        body["system"] = [{"text": system}]
    for m in request.messages:
        role = "assistant" if m.role == "assistant" else "user"
        body["messages"].append({"role": role, "content": [{"text": m.text or ""}]})
    cfg = request.config
    inference = {k: v for k, v in {"maxTokens": cfg.max_tokens, "temperature": cfg.temperature,
                                   "topP": cfg.top_p, "stopSequences": list(cfg.stop) or None}.items()
                 if v is not None}
    if inference:
        body["inferenceConfig"] = inference
    return body


def from_converse(data: dict, model: str) -> Response:
    content = data.get("output", {}).get("message", {}).get("content", [])
    text = "".join(block.get("text", "") for block in content if isinstance(block, dict))
    usage = data.get("usage", {}) or {}
    return Response(id=data.get("ResponseMetadata", {}).get("RequestId"), model=model,
                    message=Message.assistant([TextPart(text)]),
                    finish_reason=STOP_REASONS.get(data.get("stopReason") or "", "stop"),
                    usage=Usage(input_tokens=usage.get("inputTokens"), output_tokens=usage.get("outputTokens"),
                                total_tokens=usage.get("totalTokens")))


def map_error(exc: Exception, model: str) -> lm15.LM15Error:
    """botocore failure -> canonical lm15 error (retry_after from a Retry-After header if any)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        message = err.get("Message") or str(exc)
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        headers = {k.lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
        retry_after = None
        try:
            retry_after = float(headers["retry-after"]) if "retry-after" in headers else None
        except ValueError:
            retry_after = None
        kw = dict(provider="bedrock", provider_code=code, status=status, request_id=meta.get("RequestId"))
        if code in RATE or status == 429:
            return lm15.RateLimitError(message, retry_after=retry_after, **kw)
        if code in AUTH or status in (401, 403):
            return lm15.AuthError(message, credential_hint=AUTH_HINT, **kw)
        if code in TIMEOUT or status == 408:
            return lm15.TimeoutError(message, **kw)
        if code in SERVER or (status or 0) >= 500:
            return lm15.ServerError(message, retry_after=retry_after, **kw)
        if code == "ValidationException" and ("too long" in message.lower() or "context" in message.lower()):
            return lm15.ContextLengthError(message, **kw)
        return lm15.InvalidRequestError(message, **kw)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return lm15.AuthError(str(exc), provider="bedrock", credential_hint=AUTH_HINT)
    if isinstance(exc, (bx.ReadTimeoutError, bx.ConnectTimeoutError)):
        return lm15.TimeoutError(str(exc), provider="bedrock")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.HTTPClientError)):
        return lm15.TransportError(str(exc), provider="bedrock")
    return lm15.ProviderError(f"{type(exc).__name__}: {exc}", provider="bedrock")


class BedrockBackend:
    name = "bedrock"
    client = "boto3 bedrock-runtime converse"

    def __init__(self, config):
        if not config.model:
            raise ConfigurationError("backend 'bedrock' needs a model id, e.g. anthropic.claude-3-haiku-20240307-v1:0")
        self.model_id = bedrock_model_id(config.model)
        self.region = config.region
        self.timeout = config.timeout
        self._local = threading.local()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore.config import Config

            cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=self.timeout or 60,
                         connect_timeout=10, max_pool_connections=64)
            try:
                client = boto3.session.Session().client("bedrock-runtime", region_name=self.region, config=cfg)
            except Exception as exc:  # NoRegionError and friends are configuration, not provider, errors
                raise ConfigurationError(f"cannot create a Bedrock client: {exc} (set AWS_DEFAULT_REGION)") from exc
            self._local.client = client
        return client

    def complete(self, request: Request) -> Response:
        client = self._client()
        try:
            data = client.converse(**to_converse(request, self.model_id))
        except Exception as exc:
            raise map_error(exc, self.model_id) from exc
        return from_converse(data, request.model)

    def close(self) -> None:
        self._local = threading.local()
