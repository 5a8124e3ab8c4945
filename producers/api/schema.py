"""The OpenAPI 3.1 document of the API, generated from the pydantic models in producers/api/models.py.

Paths are relative to the mount point (``servers: [{url: "/api/v1"}]``), so the same document is right
wherever `tidyq serve` or producers/api/standalone.py mounts the app.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from producers.api import models, problems
from shared.jobs import ItemResult, JobStatus

JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _problems(*codes: int, **described: str) -> dict:
    what = {400: "malformed request", 401: "no valid bearer token", 403: "this token may not do this (`field` says "
            "why: `tenant`, or `Authorization` for a tenant's token changing the registry)",
            404: "no such job (or not this tenant's)", 409: "the job is in the wrong state for this",
            413: "upload too large", 415: "unsupported content type", 422: "bad input: `field` names it",
            503: "the queue's Redis or a server setting (e.g. TIDYQ_MLFLOW_TRACKING_URI) is missing"}
    what.update({int(k[1:]): v for k, v in described.items()})
    return {str(c): {"description": what[c], "content": {problems.MEDIA_TYPE: {"schema": _ref("Problem")}}}
            for c in codes}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
        "description": "registered model name"}
NO_MODEL = "no registered model of this name"
SUBMIT_QUERY = [
    _query("wait", {"type": "number", "exclusiveMinimum": 0}, "answer once the job ended (at most this many "
           "seconds; capped by TIDYQ_API_MAX_WAIT_SECONDS); a predict's answer then carries `outputs`"),
    *[_query(name, {"type": "string"}, f"JSONL uploads only: the job's {name}")
      for name in ("signature", "program", "backend", "model", "webhook_url", "idempotency_key")],
    _query("fallback", {"type": "array", "items": {"type": "string"}}, "JSONL uploads only: BACKEND[:MODEL], "
           "repeatable"),
    _query("chunk_size", {"type": "integer", "minimum": 1}, "JSONL uploads only"),
    _query("deadline_seconds", {"type": "number", "exclusiveMinimum": 0}, "JSONL uploads only"),
    _query("mode", {"type": "string", "enum": ["live", "economy"]}, "JSONL uploads only: the batch's mode"),
    _query("max_cost_usd", {"type": "number", "exclusiveMinimum": 0}, "JSONL uploads only: the batch's max cost"),
    _query("tenant", {"type": "string"}, "JSONL uploads only: the tenant charged (a tenant token: only its own)"),
    _query("item_cache", {"type": "boolean"}, "JSONL uploads only: false runs every item (no item-level cache)"),
]
ESTIMATE_QUERY = [_query(name, {"type": "string"}, f"JSONL uploads only: the batch's {name}")
                  for name in ("signature", "program", "backend", "model")]


TARGET = {"name": "target", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
          "description": "backend:model, e.g. direct:openai/gpt-4o-mini"}
OPERATOR_403 = "a tenant's token (`field`: `Authorization`): the view is fleet-wide, operator tokens only"
_OBJ = {"type": "object"}
OPS_SCHEMAS: dict[str, dict] = {
    "Breaker": {"type": "object", "description": "one target's circuit breaker (shared/breaker.py breaker_status)",
                "required": ["target", "state", "window", "probes_in_flight", "transitions", "skipped",
                             "served_as_fallback"],
                "properties": {"target": {"type": "string"},
                               "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                               "state_value": {"type": "integer"}, "since": {"type": ["number", "null"]},
                               "retry_at": {"type": ["number", "null"]},
                               "window": {"type": "object", "required": ["calls", "failures", "failure_rate"]},
                               "probes_in_flight": {"type": "integer"}, "probes_total": {"type": "integer"},
                               "transitions": _OBJ, "skipped": _OBJ, "served_as_fallback": {"type": "integer"}}},
    "BreakerReset": {"type": "object", "required": ["target", "was", "now"],
                     "properties": {"target": {"type": "string"}, "was": {"type": "string"},
                                    "now": {"type": "string", "const": "closed"}}},
    "QueuesSnapshot": {"type": "object", "description": "what `tidyq queues --json` prints",
                       "required": ["at", "window_seconds", "queues", "workers", "jobs", "breakers"],
                       "properties": {"at": {"type": "number"}, "window_seconds": {"type": "integer"},
                                      "queues": {"type": "array", "items": _OBJ},
                                      "workers": {"type": "array", "items": _OBJ},
                                      "jobs": {"type": "array", "items": _OBJ},
                                      "breakers": {"type": "array", "items": _ref("Breaker")}}},
    "Budget": {"type": "object", "description": "what `tidyq budget` prints", "required": ["tenants"],
               "properties": {"tenants": {"type": "array", "items": {
                   "type": "object", "required": ["tenant", "day", "spent_usd", "budget_usd", "jobs"],
                   "properties": {"tenant": {"type": "string"}, "day": {"type": "string"},
                                  "spent_usd": {"type": "number"}, "budget_usd": {"type": ["number", "null"]},
                                  "jobs": {"type": "object", "additionalProperties": {"type": "number"}}}}}}},
}


def _change(op: str, summary: str, body: dict | None = None) -> dict:
    return {"post": {"operationId": op, "summary": summary, "parameters": [NAME], **(body or {}),
                     "responses": {"200": _json("RolloutState", "the rollout state after the change"),
                                   **_problems(401, 403, 404, 422, 503, p404=NO_MODEL)}}}


@lru_cache(maxsize=1)
def openapi() -> dict[str, Any]:
    _, defs = models_json_schema([(models.JobRequest, "validation"), (models.Row, "validation"),
                                  (models.JobView, "serialization"), (models.JobList, "serialization"),
                                  (models.ResultsPage, "serialization"), (models.Cancelled, "serialization"),
                                  (JobStatus, "serialization"), (ItemResult, "serialization"),
                                  (models.RolloutRequest, "validation"), (models.RegisterRequest, "validation"),
                                  (models.Registered, "serialization"), (models.RolloutState, "serialization"),
                                  (models.RolloutStatus, "serialization"), (models.Estimate, "serialization")],
                                 ref_template="#/components/schemas/{model}")
    schemas = defs["$defs"]
    schemas["JobRequest"]["properties"]["rows"] = {
        "anyOf": [{"type": "array", "items": _ref("Row"), "minItems": 1}, {"type": "null"}],
        "description": "a batch: {custom_id, inputs} objects"}
    schemas["Problem"] = problems.SCHEMA
    schemas.update(OPS_SCHEMAS)
    from producers.mcp_server import ProgramList  # the MCP server's list_programs answer, same shape

    schemas.update(ProgramList.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {}))
    schemas["ProgramList"] = {k: v for k, v in ProgramList.model_json_schema(
        ref_template="#/components/schemas/{model}").items() if k != "$defs"}
    jsonl_body = {"schema": {"type": "string", "description": "one {custom_id, inputs} JSON object per line"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidyq", "version": "1", "description": "Jobs of DSPy programs: submit predicts and "
                 "batches, follow them, read their results, estimate a batch's cost; register programs and roll "
                 "versions out. Every call but this document needs "
                 "`Authorization: Bearer <token>` (TIDYQ_API_TOKENS). Errors are RFC 9457 problem details."},
        "servers": [{"url": "/api/v1"}],
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/jobs": {
                "post": {"operationId": "submitJob", "summary": "Submit a predict (inputs) or a batch (rows, or "
                         "a JSONL upload streamed to disk, never held in memory)",
                         "parameters": SUBMIT_QUERY,
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": _ref("JobRequest"),
                                                  "example": models.PREDICT_EXAMPLE},
                             **{t: jsonl_body for t in JSONL_TYPES}}},
                         "responses": {"201": _json("JobView", "the new job's status"),
                                       "200": _json("JobView", "the idempotency key matched an existing job"),
                                       **_problems(400, 401, 413, 415, 422, 503)}},
                "get": {"operationId": "listJobs", "summary": "The newest jobs first",
                        "parameters": [
                            _query("status", {"type": "string"}, "comma-separated states, e.g. queued,running"),
                            _query("kind", {"type": "string", "enum": ["predict", "batch", "optimize"]}, ""),
                            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, "")],
                        "responses": {"200": _json("JobList", "statuses, newest first"), **_problems(401, 422, 503)}},
            },
            "/jobs/{job_id}": {"get": {"operationId": "getJob", "summary": "A job's status (as `tidyq status`)",
                                       "parameters": [JOB_ID],
                                       "responses": {"200": _json("JobStatus", "the status"),
                                                     **_problems(401, 404, 503)}}},
            "/jobs/{job_id}/results": {"get": {
                "operationId": "getResults", "summary": "Results in arrival order: a JSON page, or with "
                "`Accept: application/x-ndjson` (or format=jsonl) JSONL streamed until the job ends",
                "parameters": [JOB_ID,
                               _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "JSON pages"),
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                                      "JSON pages"),
                               _query("format", {"type": "string", "enum": ["json", "jsonl"]}, ""),
                               _query("follow", {"type": "boolean", "default": True},
                                      "JSONL: keep the stream open until the job ends")],
                "responses": {"200": {"description": "a page, or the JSONL stream",
                                      "content": {"application/json": {"schema": _ref("ResultsPage")},
                                                  "application/x-ndjson": jsonl_body}},
                              **_problems(401, 404, 422, 503)}}},
            "/jobs/{job_id}/cancel": {"post": {"operationId": "cancelJob", "summary": "Stop pending chunks; "
                                               "finished results are kept", "parameters": [JOB_ID],
                                               "responses": {"200": _json("Cancelled", "the job's new state"),
                                                             **_problems(401, 404, 503)}}},
            "/jobs/{job_id}/retry": {"post": {"operationId": "retryJob", "summary": "A new job with only the "
                                              "failed items, linked both ways", "parameters": [JOB_ID],
                                              "responses": {"201": _json("JobStatus", "the new job's status"),
                                                            "204": {"description": "no failed items: no job"},
                                                            **_problems(401, 404, 409, 503)}}},
            "/jobs/estimate": {"post": {
                "operationId": "estimateBatch", "summary": "The expected tokens and cost of a batch (rows, or a "
                "JSONL upload), as `tidyq batch --estimate`; enqueues nothing", "parameters": ESTIMATE_QUERY,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("JobRequest"), "example": models.BATCH_EXAMPLE},
                    **{t: jsonl_body for t in JSONL_TYPES}}},
                "responses": {"200": _json("Estimate", "the estimate"), **_problems(400, 401, 413, 415, 422, 503)}}},
            "/programs": {"get": {"operationId": "listPrograms", "summary": "Registered programs usable as "
                                  "`program`", "responses": {"200": _json("ProgramList", "programs"),
                                                             **_problems(401, 503)}},
                          "post": {"operationId": "registerProgram", "summary": "Register an import path "
                                   "pkg.module:Name (allowed by TIDYQ_PROGRAM_PACKAGES) as a new version, as "
                                   "`tidyq register`; no code upload. Operator tokens only",
                                   "requestBody": {"required": True, "content": {"application/json": {
                                       "schema": _ref("RegisterRequest"),
                                       "example": {"program": "mypkg.rag:RAG", "name": "rag"}}}},
                                   "responses": {"201": _json("Registered", "the new version"),
                                                 **_problems(400, 401, 403, 422, 503)}}},
            "/programs/{name}/rollout": {
                "get": {"operationId": "getRollout", "summary": "The rollout state and per-version counters (as "
                        "`tidyq rollout NAME`)", "parameters": [NAME],
                        "responses": {"200": _json("RolloutStatus", "state and counters"),
                                      **_problems(401, 404, 422, 503, p404=NO_MODEL)}},
                **_change("startRollout", "Send `percent` % of items asking for NAME to `candidate` (as `tidyq "
                          "rollout NAME --candidate V --percent P`). Operator tokens only",
                          {"requestBody": {"required": True, "content": {"application/json": {
                              "schema": _ref("RolloutRequest"), "example": {"candidate": 2, "percent": 10}}}}})},
            "/programs/{name}/rollback": _change("rollback", "Every item back to the live version, from the next "
                                                 "item on (as `tidyq rollback NAME`). Operator tokens only"),
            "/programs/{name}/promote": _change("promote", "The candidate becomes live (as `tidyq promote NAME`). "
                                                "Operator tokens only"),
            "/queues": {"get": {"operationId": "getQueues", "summary": "Depth, oldest item, workers, rates and "
                                "errors per queue, the running jobs and the breakers (as `tidyq queues --json`). "
                                "Operator tokens only",
                                "parameters": [_query("window", {"type": "integer", "minimum": 10, "maximum": 600,
                                                                 "default": 60}, "seconds the rates are computed "
                                                      "over")],
                                "responses": {"200": _json("QueuesSnapshot", "one snapshot"),
                                              **_problems(401, 403, 422, 503, p403=OPERATOR_403)}}},
            "/breakers": {"get": {"operationId": "getBreakers", "summary": "Every known target's circuit breaker "
                                  "(as `tidyq breaker status --json`). Operator tokens only",
                                  "responses": {"200": {"description": "one per target", "content": {
                                      "application/json": {"schema": {"type": "array",
                                                                      "items": _ref("Breaker")}}}},
                                                **_problems(401, 403, 503, p403=OPERATOR_403)}}},
            "/breakers/{target}/reset": {"post": {
                "operationId": "resetBreaker", "summary": "Close a known target's breaker now (as `tidyq breaker "
                "reset TARGET`). Operator tokens only", "parameters": [TARGET],
                "responses": {"200": _json("BreakerReset", "the breaker's state before and now"),
                              **_problems(401, 403, 422, 503, p403=OPERATOR_403,
                                          p422="`target` is no backend:model, or no breaker has seen it")}}},
            "/budget": {"get": {"operationId": "getBudget", "summary": "Spend per tenant and job for one UTC day, "
                                "with each tenant's daily budget (as `tidyq budget`); a tenant's token sees only "
                                "its own tenant",
                                "parameters": [_query("tenant", {"type": "string"}, "only this tenant"),
                                               _query("day", {"type": "string", "format": "date"},
                                                      "YYYY-MM-DD (UTC); default today")],
                                "responses": {"200": _json("Budget", "one row per tenant"),
                                              **_problems(401, 403, 422, 503,
                                                          p403="a tenant's token asking for another tenant "
                                                          "(`field`: `tenant`)")}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": {"application/json": {}}}}}},
        },
    }
