"""The API's request and response bodies (pydantic): they validate requests and generate the schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.jobs import ItemResult, JobStatus

PREDICT_EXAMPLE: dict[str, Any] = {"signature": "question -> answer", "backend": "mock",
                                   "inputs": {"question": "What is 2+2?"}}
BATCH_EXAMPLE: dict[str, Any] = {"signature": "question -> answer", "backend": "mock",
                                 "rows": [{"custom_id": "a", "inputs": {"question": "What is 1+1?"}}]}


class Row(BaseModel):
    """One batch row, as a JSONL input line (custom_id optional: then its position, from 1)."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str | int | None = None
    inputs: dict[str, Any]


class OptimizeOptions(BaseModel):
    """An optimize job (as `tidyq optimize`): the program to tune comes from the request's signature/program."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="registered model name the optimized program is saved under")
    trainset: list[Any] = Field(description="{inputs, outputs} examples")
    valset: list[Any] | None = None
    optimizer: str = "bootstrap-fewshot"
    settings: dict[str, Any] | None = None
    metric: str = "exact_match"
    metric_options: dict[str, Any] | None = None
    kind: Literal["predict", "chain_of_thought"] = "predict"
    time_limit: float | None = Field(None, gt=0)
    num_threads: int = Field(1, ge=1)


class JobRequest(BaseModel):
    """A predict (``inputs``) or a batch (``rows``); or, for a JSONL upload, the query parameters."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [PREDICT_EXAMPLE, BATCH_EXAMPLE]})
    signature: str | None = Field(None, description="DSPy signature, e.g. 'question -> answer'")
    program: str | None = Field(None, description="models:/NAME/N, models:/NAME@alias or pkg.module:Name")
    backend: str | None = Field(None, description="mock, direct, bedrock, gateway or auto (the server's default)")
    model: str | None = None
    fallbacks: list[str] = Field(default_factory=list, description="BACKEND[:MODEL] targets tried after the job's")
    inputs: dict[str, Any] | None = Field(None, description="a predict: input field -> value")
    rows: list[Any] | None = Field(None, description="a batch: {custom_id, inputs} objects")
    optimize: OptimizeOptions | None = Field(None, description="an optimize job (`tidyq optimize`)")
    webhook_url: str | None = Field(None, description="POSTed the signed job status when the job ends")
    idempotency_key: str | None = Field(None, description="a second submit with the same key returns the first job")
    chunk_size: int | None = Field(None, ge=1)
    deadline_seconds: float | None = Field(None, gt=0, description="how long items may wait for a backend whose "
                                                                    "circuit breakers are all open")
    mode: str | None = Field(None, description="a batch: live (default) or economy (the provider's batch API at its "
                                               "batch price; `tidyq batch --mode`)")
    max_cost_usd: float | None = Field(None, description="a batch: the job ends as budget_exceeded at this spend, "
                                                         "its results kept (default TIDYQ_MAX_COST_USD)")
    item_cache: bool | None = Field(None, description="false: every item runs, none answered from (or written to) "
                                                      "the item-level result cache (`--no-item-cache`)")
    tenant: str | None = Field(None, description="a batch: the tenant whose daily budget it is charged to "
                                                 "(TIDYQ_TENANT_BUDGETS). A tenant token's jobs are always its "
                                                 "own tenant's: it may omit this or name itself, nothing else")


class RolloutRequest(BaseModel):
    """`tidyq rollout NAME --candidate V --percent P`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"candidate": 2, "percent": 10}]})
    candidate: int = Field(ge=1, description="the version to send traffic to")
    percent: float = Field(ge=0, le=100, description="share of items asking for NAME (or models:/NAME@live)")


class RegisterRequest(BaseModel):
    """`tidyq register pkg.module:Name --name NAME [--state FILE]`: an import path only, never code."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"program": "mypkg.rag:RAG", "name": "rag"}]})
    program: str = Field(description="pkg.module:Name, its package listed in TIDYQ_PROGRAM_PACKAGES and installed "
                                     "on the server and the workers")
    name: str = Field(description="registered model name")
    state: Any = Field(None, description="JSON state to apply (what module.save('x.json') wrote)")


class Registered(BaseModel):
    uri: str = Field(description="models:/NAME/VERSION")
    name: str
    version: int


class RolloutState(BaseModel):
    """The rollout after a change (as `tidyq rollout/rollback/promote` print it)."""

    live: int | None
    candidate: int | None
    percent: float
    warning: str | None = Field(None, description="routing changed, but MLflow's aliases were not updated")


class RolloutStatus(BaseModel):
    """`tidyq rollout NAME`: the state and per-version counters."""

    name: str
    live: int | None
    candidate: int | None
    percent: float
    versions: dict[str, dict[str, float]] = Field(description="version -> items, failed, error_rate, "
                                                              "validation_failures, latency_mean_ms, ...")


class Estimate(BaseModel):
    """`tidyq batch --estimate`: the expected tokens and cost; nothing is enqueued."""

    model_config = ConfigDict(extra="allow")
    file: str = Field(description="'rows' or 'body' (the upload)")
    backend: str
    model: str | None
    items: int
    sent_items: int = Field(description="items after identical rows are folded")
    duplicates_folded: int
    input_tokens: int
    output_tokens: int
    output_tokens_per_field: int
    cost_usd: float | None = Field(description="None when the price map has no price for the model")
    economy_cost_usd: float | None
    price_source: str
    notes: list[str]
    stages_not_estimated: list[str] | None = None


class JobView(JobStatus):
    """A job's status (as `tidyq status`); after ``?wait`` on a predict also its outputs or item error."""

    outputs: dict[str, Any] | None = None
    output_error: dict[str, Any] | None = None


class JobList(BaseModel):
    jobs: list[JobStatus]


class ResultsPage(BaseModel):
    results: list[ItemResult]
    next_offset: int = Field(description="pass as offset to read the next page")
    status: str
    done: bool = Field(description="the job has ended and no result is left after this page")


class Cancelled(BaseModel):
    id: str
    status: str
