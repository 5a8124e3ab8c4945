"""Every setting tidyq reads, in one place.

Two layers:
- ``Settings``: the process environment (``TIDYQ_*`` variables), read once per call of
  :func:`get_settings` so tests and workers can change the environment before building things.
- The config objects users pass in code (``UnifiedConfig`` and its parts). Any field left as
  ``None`` is filled from ``Settings`` by :meth:`UnifiedConfig.resolved`: arguments first, then
  the environment, then the defaults written here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import ConfigDict, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.environ import EnvMemo
from shared.errors import BadTarget, ConfigurationError


class BackendType(str, Enum):
    """Where a call goes. AUTO picks one of the others from the environment, never MOCK."""

    AUTO = "auto"
    GATEWAY = "gateway"
    BEDROCK = "bedrock"
    DIRECT = "direct"
    MOCK = "mock"

    @classmethod
    def parse(cls, value: BackendType | str) -> BackendType:
        if isinstance(value, BackendType):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(b.value for b in cls)
            raise ConfigurationError(f"unknown backend {value!r}; expected one of: {names}") from None


@dataclass(frozen=True)
class RetryConfig:
    """Backoff policy of the one retry layer (shared.steps.retry).

    delay(n) = min(max_delay, base_delay * backoff_factor**n) +/- jitter (a fraction of it), for failures
    (5xx, timeouts, connection errors). A rate-limit answer that names no wait (no Retry-After, no
    x-ratelimit reset, no global limiter pacing the backend) waits "full jitter" uniform(0, ceiling),
    where the ceiling is the target's, not the item's: none while the target refuses at most half of its
    recent attempts (random refusals, retried at once), rate_limit_base_delay just above that, rising
    with the share up to rate_limit_max_delay (shared/steps/target_backoff.py; the ceiling itself when
    jitter is 0). Such a pause is sat out in the target's waiting room (shared/steps/waiting_room.py),
    which wakes it early when no call of the target is left running in the process; from its
    ``max_rate_limit_retries // 2 + 1``-th such retry a call is not woken early and waits at least its
    own doubling chain, uniform(0, rate_limit_base_delay * 2**k) capped at rate_limit_max_delay. A
    Retry-After or an
    x-ratelimit reset is honoured exactly.
    A wait longer than ``max_inline_wait`` (a large Retry-After) is not slept in the worker:
    the item is handed back to the queue with a countdown.
    """

    max_retries: int = 3
    base_delay: float = 1.0
    backoff_factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.1
    max_inline_wait: float = 10.0
    # rate-limit answers (429, 503 + Retry-After) are not failures: their own, larger budget; with a
    # global rate limit on the backend they wait for the limiter's next slot instead of backing off.
    # 20, not 10: the pause is the target's and grows only above a half refused, so at a real limit
    # an item meets 10 refusals in a row about once in 200 (0.6**10) and went to the queue for 5+ s
    max_rate_limit_retries: int = 20
    # a 429 says "slow down a little", not "down": no pause while at most half are refused, then a short
    # jittered one (from 50 ms) that grows while the target refuses most attempts (at most 5 s), not the
    # failure schedule's 1 s, 2 s ...
    rate_limit_base_delay: float = 0.05
    rate_limit_max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_rate_limit_retries < 0:
            raise ConfigurationError("RetryConfig.max_retries and max_rate_limit_retries must be >= 0")
        if self.rate_limit_base_delay < 0 or self.rate_limit_max_delay < 0:
            raise ConfigurationError("RetryConfig.rate_limit_base_delay and rate_limit_max_delay must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0 or self.backoff_factor < 1:
            raise ConfigurationError("RetryConfig delays must be >= 0 and backoff_factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("RetryConfig.jitter is a fraction between 0 and 1")


@dataclass(frozen=True)
class CacheConfig:
    """Response cache: per-process memory LRU, then Redis (shared) or a local disk directory."""

    enabled: bool = True
    ttl_seconds: int = 3600
    max_size_mb: int = 100
    memory_items: int = 2048
    # the shared tier (Redis or disk); None = on, except for the mock backend, whose answers cost
    # less than a shared-tier round trip (the shared tier exists to save paid provider calls)
    shared: bool | None = None

    def __post_init__(self) -> None:
        if self.ttl_seconds <= 0 or self.max_size_mb <= 0 or self.memory_items < 0:
            raise ConfigurationError("CacheConfig ttl_seconds and max_size_mb must be > 0")


Check = Callable[[dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class ValidationConfig:
    """Output checks. A failing output is re-generated through dspy.Refine or dspy.BestOfN.

    ``checks`` are callables taking the outputs dict and returning ``None`` when fine or a
    reason string. ``fields`` limits the length/keyword checks to some output fields (default:
    every string output).
    """

    min_length: int | None = None
    max_length: int | None = None
    required_keywords: tuple[str, ...] | list[str] | None = None
    checks: tuple[Check, ...] = ()
    fields: tuple[str, ...] | None = None
    max_attempts: int = 3
    strategy: str = "refine"

    def __post_init__(self) -> None:
        if self.strategy not in ("refine", "best_of_n"):
            raise ConfigurationError("ValidationConfig.strategy is 'refine' or 'best_of_n'")
        if self.max_attempts < 1:
            raise ConfigurationError("ValidationConfig.max_attempts must be >= 1")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ConfigurationError("ValidationConfig.min_length is larger than max_length")

    @property
    def active(self) -> bool:
        return bool(self.min_length or self.max_length or self.required_keywords or self.checks)


class Settings(BaseSettings):
    """The TIDYQ_* environment. Credentials stay here, in the worker's environment."""

    model_config = SettingsConfigDict(env_prefix="TIDYQ_", extra="ignore")

    redis_url: str | None = None
    backend: str = "auto"
    model: str | None = None
    api_base: str | None = None
    api_key: SecretStr | None = None
    gateway_url: str | None = None
    mlflow_tracking_uri: str | None = None
    cache_enabled: bool = True
    cache_dir: str | None = None
    # item-level result cache (shared/item_cache.py, workers/item_cache.py): a finished item's outputs per
    # (program version, inputs, target, generation settings), read before any DSPy work; off with
    # cache_enabled=false too. Not for the mock, whose answer costs less than the cache's round trip.
    item_cache_enabled: bool = True
    item_cache_ttl_seconds: int = 7 * 24 * 3600
    item_cache_backends: str = "direct,bedrock,gateway"
    request_timeout: float = 60.0
    # global per-backend limits shared by all workers, e.g. {"direct": {"rpm": 600, "tpm": 90000}}
    rate_limits: dict[str, dict[str, float]] = {}

    # queue
    result_ttl_seconds: int = 7 * 24 * 3600
    chunk_size: int = 50  # items per chunk task for the CPU-bound mock
    # I/O-bound backends run ``concurrency_<backend>`` items at once inside a chunk; a chunk of
    # several waves keeps that pool full (a 50-item chunk with 32 in flight idles half its tail)
    chunk_size_io: int = 128
    max_items_per_job: int = 1_000_000
    max_item_bytes: int = 256 * 1024
    task_time_limit: int = 600
    concurrency_mock: int = 1
    concurrency_direct: int = 32
    concurrency_bedrock: int = 16
    concurrency_gateway: int = 32
    # DSPy's async path (workers/async_items.py): a chunk's I/O-bound items run as coroutines on one
    # event loop per worker process; concurrency_<backend> is then the starting in-flight cap per
    # target, adapted up to async_max_inflight (shared/concurrency.py)
    async_items: bool = True
    async_max_inflight: int = 1024
    # a pool process's young-generation GC threshold (Python's default 700: with hundreds of calls
    # in flight it collected ~180 times per 1,000 items, ~15% of the async path's CPU); 0 leaves
    # Python's own (workers/gc_tuning.py)
    gc_gen0_threshold: int = 10_000
    default_redis_url: str = "redis://127.0.0.1:6379/0"  # when TIDYQ_REDIS_URL is unset
    visibility_timeout: float | None = None  # lease of an unacked chunk, renewed by its live worker; default 20 s
    worker_soft_shutdown_timeout: float = 30.0  # seconds a stopping worker lets running chunks finish
    max_requeues: int = 8  # trips back to the queue (RetryLater, time limit) before an item fails
    # chunk ledger (shared/ledger.py, workers/sweeper.py): a chunk nobody has seen alive (queued, held,
    # running) for ledger_lease_seconds, on two sweeps in a row, is sent again; one sweep per interval
    ledger_lease_seconds: float = 30.0
    sweep_interval: float = 10.0
    max_requeue_delay: float = 300.0  # cap of a RetryLater countdown (kept below the visibility timeout)
    requeue_backoff_seconds: float = 5.0  # first countdown of an item whose provider still fails; doubles per trip
    cancel_check_interval: float = 0.25  # how often a running chunk re-reads its job's state
    results_flush_interval: float = 0.2  # a chunk writes its results at least this often ...
    results_flush_items: int = 25  # ... or every this many results
    idempotency_ttl_seconds: int | None = None  # default: result_ttl_seconds
    # cost (shared/cost.py, producers/estimate.py): a job's default --max-cost (None: no ceiling) and the
    # output tokens an estimate assumes per output field (the answer itself, besides the adapter's markers)
    max_cost_usd: float | None = None
    estimate_output_tokens: int = 32
    # per-tenant daily budgets in USD per UTC day, e.g. {"acme": 50}; the default applies to tenants not listed
    tenant_budgets: dict[str, float] = {}
    tenant_daily_budget_usd: float | None = None
    budget_wait_seconds: float = 0.5  # countdown of items a --max-cost job holds back while others are in flight
    # economy mode (workers/economy_task.py): items per chunk (one provider batch each, split further at the
    # provider's limits), and how often a provider batch is polled (growing x1.5 per poll up to the max)
    economy_chunk_size: int = 1000
    economy_batch_max_requests: int = 50_000
    economy_poll_seconds: float = 5.0
    economy_poll_max_seconds: float = 60.0
    economy_bedrock_s3_uri: str | None = None  # s3://bucket/prefix for Bedrock batch input and output files
    economy_bedrock_role_arn: str | None = None  # the IAM role Bedrock assumes to read and write that bucket
    # operations (workers/metrics_publisher.py, producers/ops_*.py)
    metrics_interval: float = 2.0  # a worker process pushes its metric deltas to Redis this often
    heartbeat_interval: float = 5.0  # a worker node refreshes its liveness record this often
    metrics_port: int = 9808  # `tidyq metrics` listens here (127.0.0.1 unless --host)
    # submit-time target check (producers/target_check.py): "refuse" a job no live worker can run
    # (exit 2), "warn" only, or "off"; the producer warns, never refuses, when it cannot know
    submit_check: str = "refuse"

    # `tidyq serve` (producers/serve/): the jobs page; the REST API is mounted on it under /api/v1
    ui_auth: SecretStr | None = None  # "user:password" for the page (HTTP basic); unset: serve refuses to start
    # ... or behind an OAuth proxy (oauth2-proxy): the header carrying the signed-in user, trusted only
    # from these peers (comma-separated addresses or networks)
    ui_auth_proxy_header: str | None = None
    ui_auth_proxy_from: str = "127.0.0.1,::1"
    ui_port: int = 8780  # `tidyq serve` listens here (127.0.0.1 unless --host)
    ui_refresh_seconds: float = 2.0  # how often the page polls for live progress
    mlflow_ui_url: str | None = None  # MLflow UI for run links; default: the tracking URI when it is http(s)

    # `tidyq mcp` (producers/mcp_server.py). HTTP needs mcp_tokens or the mcp_oauth_* settings.
    mcp_tokens: SecretStr | None = None  # comma-separated bearer tokens accepted over HTTP
    mcp_root: str | None = None  # JSONL files given by path are read only under this directory
    mcp_max_wait_seconds: float = 50.0  # a tool call never blocks longer (MCP clients give up near 60 s)
    mcp_oauth_issuer_url: str | None = None  # authorization server that issues the tokens
    mcp_oauth_introspection_url: str | None = None  # its RFC 7662 token introspection endpoint
    mcp_oauth_client_id: str | None = None  # this resource server's credentials at that endpoint
    mcp_oauth_client_secret: SecretStr | None = None
    mcp_resource_url: str | None = None  # this server's public URL: tokens must be issued for it
    mcp_required_scopes: str | None = None  # comma-separated scopes every token must carry

    # MLflow: tracking, registry, optimize jobs, program versions (shared/tracking.py, registry.py, optimize.py)
    mlflow_experiment: str = "tidyq"
    mlflow_artifact_root: str | None = None  # default: next to a sqlite store, else the server's default
    mlflow_request_timeout: float = 5.0  # seconds; MLflow's own HTTP retries are turned off
    mlflow_down_backoff_seconds: float = 60.0  # after a failed call, skip tracking this long (one warning)
    mlflow_progress_interval: float = 5.0  # a running job's run gets progress metrics at most this often
    trace_sample_rate: float = 0.0  # fraction of DSPy calls traced through mlflow.dspy.autolog (0 = off)
    metric_allow_list: list[str] = []  # "package.module:function" user metrics optimize jobs may name
    program_cache_size: int = 16  # registered program versions a worker process keeps loaded
    # users' own programs (shared/user_code.py): top-level packages whose `pkg.module:Name` programs may be
    # imported (comma-separated), and whether code stored in the registry may run (it is code execution)
    program_packages: str = ""
    trust_registry_code: bool = False
    rollout_state_ttl_seconds: float = 0.0  # per-process cache of rollout state (0: read Redis per item)
    optimize_time_limit: int = 3600  # default and cap of an optimize job's search time (seconds)
    optimize_heartbeat_seconds: float = 10.0  # a running optimize job refreshes its claim this often

    # REST API (producers/api/) and completion webhooks (shared/webhooks.py, workers/webhooks.py)
    async_max_connections: int = 64  # AsyncClient: Redis connections per event loop (more callers wait for one)
    api_tokens: SecretStr | None = None  # comma-separated bearer tokens, each TOKEN or TENANT=TOKEN
    api_max_wait_seconds: float = 60.0  # cap of POST /jobs?wait=SECONDS
    api_upload_max_bytes: int = 1024 * 1024 * 1024  # a JSONL upload larger than this is refused (413)
    api_json_max_bytes: int = 32 * 1024 * 1024  # a JSON body (held in memory) larger than this is refused (413)
    webhook_secret: SecretStr | None = None  # HMAC-SHA256 key of Tidyq-Signature; webhooks need it
    webhook_url: str | None = None  # default webhook of jobs submitted without webhook_url
    webhook_allow_private: bool = False  # allow loopback/private/link-local receivers (tests, private nets)
    webhook_progress_percent: int = 0  # also send a progress event every N percent (0 = only the job end)
    webhook_timeout_seconds: float = 10.0  # one delivery attempt's HTTP timeout
    webhook_retry_base_seconds: float = 10.0  # first retry delay, doubling per failed attempt ...
    webhook_retry_max_delay_seconds: float = 3600.0  # ... capped at this ...
    webhook_retry_window_seconds: float = 24 * 3600.0  # ... and given up this long after the event

    # circuit breaker per (backend, model), state in Redis, shared by every worker (shared/breaker.py)
    breaker_enabled: bool = True
    breaker_backends: str = "direct,bedrock,gateway"  # the offline mock never needs one
    breaker_window_seconds: float = 20.0  # sliding window the failure rate is measured over
    breaker_buckets: int = 10  # the window is a ring of this many buckets
    breaker_min_calls: int = 10  # fewer calls than this in the window never open the breaker
    breaker_failure_rate: float = 0.5  # failed / all calls in the window that opens it
    breaker_consecutive_failures: int = 5  # ... or this many failures in a row (a hard outage; 0 = off)
    breaker_open_seconds: float = 15.0  # open -> half-open after this (doubles per failed probe ...)
    breaker_max_open_seconds: float = 300.0  # ... up to this
    breaker_half_open_probes: int = 2  # probe calls in flight at once across the whole fleet
    breaker_close_after: int = 1  # successful probes that close it again
    breaker_probe_lease_seconds: float = 90.0  # a probe slot of a dead worker frees after this
    backend_wait_deadline_seconds: float = 24 * 3600  # job deadline (from submit) when the job sets none
    # per-target endpoints and markers, keyed "backend:model", e.g.
    # {"direct:openai/b": {"api_base": "http://b:8000/v1", "api_key_env": "B_KEY", "larger_context": true}}
    target_options: dict[str, dict[str, Any]] = {}


_settings_cache: tuple[tuple, Settings] | None = None


def _current_settings() -> Settings:
    global _settings_cache
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("TIDYQ_")))
    cached = _settings_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    settings = Settings()
    _settings_cache = (key, settings)
    return settings


_settings_memo = EnvMemo(_current_settings)


def get_settings() -> Settings:
    """The current Settings, rebuilt only when a TIDYQ_* variable changed: building them costs
    ~10 ms (pydantic-settings reads and validates the environment), too much per chunk or item,
    while tests and workers still see an environment change at once. Read several times per
    chunk, so an unchanged environment is one comparison (shared/environ.py)."""
    return _settings_memo.get()


def _mask(value: str | None) -> str | None:
    return None if value is None else "***"


TARGET_OPTION_KEYS = ("api_base", "api_key_env", "region", "gateway_url", "larger_context")


@dataclass(frozen=True)
class Target:
    """One (backend, model) a call may go to: the config's own, or a fallback after it.

    The one target type end to end: parsed from the CLI's ``--fallback B:M``, carried in
    ``JobSpec.fallback`` (pydantic validates and dumps it as ``{"backend", "model",
    "larger_context"}``), and routed by the worker's engine (shared/engine.py).
    Text form ``backend:model``, split at the FIRST colon (Bedrock ids contain colons).
    ``larger_context`` marks a target worth trying after a context-window error.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    backend: str
    model: str | None = None
    larger_context: bool = False

    def __post_init__(self) -> None:
        try:
            backend = BackendType.parse(self.backend)
        except ConfigurationError as exc:
            raise BadTarget(str(exc)) from None
        if backend is BackendType.AUTO:
            raise BadTarget("a fallback target needs a concrete backend, not 'auto'")
        object.__setattr__(self, "backend", backend.value)
        object.__setattr__(self, "model", (self.model or "").strip() or None)

    @classmethod
    def parse(cls, value: Target | str | tuple | dict) -> Target:
        if isinstance(value, Target):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, tuple):
            return cls(*value)
        backend, _, model = str(value).strip().partition(":")
        if not backend:
            raise BadTarget(f"bad target {value!r}: expected backend:model, "
                            "e.g. bedrock:anthropic.claude-3-haiku-20240307-v1:0")
        return cls(backend=backend, model=model or None)

    @classmethod
    def parse_list(cls, values: str | Target | Iterable[str | Target | tuple | dict] | None) -> tuple[Target, ...]:
        """``"gateway:NAME,bedrock:MODEL:0"``, or an iterable of such strings or targets."""
        if values is None:
            return ()
        if isinstance(values, (str, Target)):
            values = [values]
        out: list[Target] = []
        for value in values:
            if isinstance(value, str):
                out.extend(cls.parse(part) for part in value.split(",") if part.strip())
            else:
                out.append(cls.parse(value))
        return tuple(out)

    @property
    def id(self) -> str:
        return f"{self.backend}:{self.model or ''}"

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class UnifiedConfig:
    """What one wrapper talks to and how. ``None`` fields come from the environment."""

    backend: BackendType = BackendType.AUTO  # a str ("mock") is parsed by __post_init__
    model: str | None = None
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    gateway_url: str | None = None
    region: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    engine: str = "auto"  # DIRECT only: "auto" (fastest correct), "lm15" or "litellm"
    retry: RetryConfig = field(default_factory=RetryConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    redis_url: str | None = None
    cache_dir: str | None = None
    # ordered targets tried after this one (shared/fallback.py): Target, "backend:model" or tuples
    fallbacks: tuple[Target, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", BackendType.parse(self.backend))
        object.__setattr__(self, "fallbacks", Target.parse_list(self.fallbacks))
        if self.retry is None:
            object.__setattr__(self, "retry", RetryConfig())
        if self.cache is None:
            object.__setattr__(self, "cache", CacheConfig())
        if self.validation is None:
            object.__setattr__(self, "validation", ValidationConfig())
        if self.engine not in ("auto", "lm15", "litellm"):
            raise ConfigurationError("UnifiedConfig.engine is 'auto', 'lm15' or 'litellm'")

    @classmethod
    def from_env(cls, **overrides: Any) -> UnifiedConfig:
        return cls(**overrides).resolved()

    def resolved(self, settings: Settings | None = None) -> UnifiedConfig:
        """Fill unset fields from TIDYQ_* settings. Arguments always win."""
        s = settings or get_settings()
        backend = self.backend
        if backend is BackendType.AUTO and s.backend:
            backend = BackendType.parse(s.backend)
        cache = self.cache
        if not s.cache_enabled and cache.enabled:
            cache = dataclasses.replace(cache, enabled=False)
        return dataclasses.replace(
            self,
            backend=backend,
            model=self.model or s.model,
            api_base=self.api_base or s.api_base,
            api_key=self.api_key or (s.api_key.get_secret_value() if s.api_key else None),
            gateway_url=self.gateway_url or s.gateway_url,
            timeout=self.timeout or s.request_timeout,
            redis_url=self.redis_url or s.redis_url,
            cache_dir=self.cache_dir or s.cache_dir,
            cache=cache,
        )

    def public(self) -> dict[str, Any]:
        """A loggable view: no secret values."""
        return {
            "backend": self.backend.value,
            "model": self.model,
            "api_base": self.api_base,
            "api_key": _mask(self.api_key),
            "gateway_url": self.gateway_url,
            "region": self.region,
            "engine": self.engine,
            "fallbacks": [t.id for t in self.fallbacks],
        }
