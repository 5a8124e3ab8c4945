"""Bedrock batch inference (``create_model_invocation_job``) with its input and output in S3, via boto3.

The input is JSONL ``{"recordId", "modelInput"}`` uploaded under ``TIDYQ_ECONOMY_BEDROCK_S3_URI``;
the job (role ``TIDYQ_ECONOMY_BEDROCK_ROLE_ARN``) writes ``<output>/<job id>/<input>.out`` lines
``{"recordId", "modelInput", "modelOutput"}`` or ``{"recordId", ..., "error": {"errorCode",
"errorMessage"}}``. ``modelInput`` is the model's InvokeModel body, which differs per model family:
Anthropic models on Bedrock (the Messages body with ``anthropic_version``) are supported; others are
NotBatchable and run live. Bedrock refuses jobs under 100 records: smaller groups finish live.
botocore's retries are off (one retry layer); AWS's credential chain and region as for the
bedrock backend (``AWS_ENDPOINT_URL_BEDROCK`` / ``AWS_ENDPOINT_URL_S3`` reach stand-ins).
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlsplit

from shared.economy.anthropic_batch import message_answer, messages_body
from shared.economy.openai_batch import BatchState, ProviderBatchError
from shared.economy.requests import Answer, NotBatchable, answers_from_jsonl

MIN_RECORDS = 100
MAX_REQUESTS = 50_000
MAX_BYTES = 1024 * 1024 * 1024
ANTHROPIC_VERSION = "bedrock-2023-05-31"
_STATES = {"Submitted": "validating", "Validating": "validating", "Scheduled": "validating",
           "InProgress": "in_progress", "Stopping": "cancelling", "Completed": "completed",
           "PartiallyCompleted": "completed", "Failed": "failed", "Stopped": "cancelled", "Expired": "expired"}


def _s3_parts(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ProviderBatchError(f"TIDYQ_ECONOMY_BEDROCK_S3_URI must be s3://bucket/prefix, got {uri!r}",
                                 retryable=False)
    return parts.netloc, parts.path.strip("/")


def _mapped(exc: Exception) -> ProviderBatchError:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or type(exc).__name__)
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    message = (response.get("Error") or {}).get("Message") or str(exc)
    retryable = not response or status >= 500 or code in ("ThrottlingException", "ServiceUnavailableException")
    return ProviderBatchError(f"{code}: {message}", retryable=retryable)


def is_anthropic(model: str) -> bool:
    return model.split(".", 1)[-1].startswith("anthropic.") or model.startswith("anthropic.")


class BedrockBatches:
    name = "bedrock"
    max_requests, max_bytes = MAX_REQUESTS, MAX_BYTES

    def __init__(self, model: str, *, s3_uri: str | None, role_arn: str | None, region: str | None, timeout: float):
        if not is_anthropic(model):
            raise NotBatchable(f"Bedrock batch input is the model's own InvokeModel body; tidyq writes it for "
                               f"Anthropic models only, not {model!r}: its items run live")
        if not s3_uri or not role_arn:
            raise NotBatchable("economy mode on Bedrock needs TIDYQ_ECONOMY_BEDROCK_S3_URI and "
                               "TIDYQ_ECONOMY_BEDROCK_ROLE_ARN in the worker's environment: items run live")
        import boto3
        from botocore.config import Config

        config = Config(retries={"total_max_attempts": 1}, connect_timeout=timeout, read_timeout=timeout)
        self.model, self.role_arn = model, role_arn
        self.bucket, self.prefix = _s3_parts(s3_uri)
        self.s3 = boto3.client("s3", region_name=region, config=config)
        self.bedrock = boto3.client("bedrock", region_name=region, config=config)

    @staticmethod
    def line(custom_id: str, messages: list[dict[str, Any]], model: str, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"recordId": custom_id,
                "modelInput": {"anthropic_version": ANTHROPIC_VERSION, **messages_body(messages, model, lm_kwargs)}}

    def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str]) -> BatchState:
        if len(lines) < MIN_RECORDS:
            raise ProviderBatchError(f"Bedrock batch inference needs at least {MIN_RECORDS} records, this group "
                                     f"has {len(lines)}", retryable=False)
        name = f"tidyq-{uuid.uuid4().hex[:24]}"
        key = "/".join(p for p in (self.prefix, "input", f"{name}.jsonl") if p)
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        output = "/".join(p for p in (self.prefix, "output") if p)
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
            arn = self.bedrock.create_model_invocation_job(
                jobName=name, roleArn=self.role_arn, modelId=self.model,
                inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{self.bucket}/{key}", "s3InputFormat": "JSONL"}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{self.bucket}/{output}/"}})["jobArn"]
        except Exception as exc:
            raise _mapped(exc) from None
        return BatchState(arn, "validating", None, None, {"total": len(lines)})

    def retrieve(self, batch_id: str) -> BatchState:
        try:
            job = self.bedrock.get_model_invocation_job(jobIdentifier=batch_id)
        except Exception as exc:
            raise _mapped(exc) from None
        out_uri = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"].rstrip("/")
        counts = {k: job[f"{k}RecordCount"] for k in ("total", "processed", "success", "error")
                  if f"{k}RecordCount" in job}
        return BatchState(batch_id, _STATES.get(job["status"], job["status"]),
                          f"{out_uri}/{batch_id.rsplit('/', 1)[-1]}/", None, counts)

    def cancel(self, batch_id: str) -> BatchState:
        try:
            self.bedrock.stop_model_invocation_job(jobIdentifier=batch_id)
        except Exception as exc:
            raise _mapped(exc) from None
        return BatchState(batch_id, "cancelling", None, None, {})

    def results(self, state: BatchState) -> dict[str, Answer]:
        if not state.output_file_id:
            return {}
        bucket, prefix = _s3_parts(state.output_file_id)
        out: dict[str, Answer] = {}
        try:
            listing = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            keys = [o["Key"] for page in listing for o in page.get("Contents", []) if o["Key"].endswith(".out")]
            for key in keys:
                text = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
                answers_from_jsonl(text, "recordId", _answer, into=out)
        except ProviderBatchError:
            raise
        except Exception as exc:
            raise _mapped(exc) from None
        return out


def _answer(record: dict[str, Any]) -> Answer:
    error = record.get("error")
    if error:
        return Answer(error=f"provider error {error.get('errorCode')}: {error.get('errorMessage')}")
    return message_answer(record.get("modelOutput") or {})
