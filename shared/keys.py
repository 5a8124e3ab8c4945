"""Every Redis key name tidyq uses, in one place. All keys start with ``tidyq:``."""

PREFIX = "tidyq"


def cache_entry(digest: str) -> str:
    return f"{PREFIX}:cache:{digest}"


def item_result(scope: str, inputs_digest: str) -> str:
    """String (JSON {outputs, backend, model}) with a TTL: one item's answer for one program version,
    target and generation settings (the scope digest) and one input (shared/item_cache.py). The scope
    sits in a {hash tag} so a chunk's keys share a Cluster slot and one MGET reads them all."""
    return f"{PREFIX}:item:{{{scope}}}:{inputs_digest}"


def rate_bucket(backend: str, kind: str) -> str:
    """Token bucket of one backend; kind is 'rpm' or 'tpm'."""
    return f"{PREFIX}:ratelimit:{backend}:{kind}"


# --- job queue (shared/store.py). The job id sits in a {hash tag} so every key of one job
# lands on the same Redis Cluster slot and one Lua script may touch them all.

def job(job_id: str) -> str:
    """Hash: spec (JSON), kind, status, total, succeeded, failed, timestamps, links; cost_usd (running
    total), max_cost_usd, economy_reserved_usd; economy mode: "pb:<provider batch id>" -> that batch's
    state JSON, "economy_chunk:<n>" -> the batch claim of chunk n (so a redelivery never submits twice),
    "economy_open:<n>" -> its batches still followed, "economy_done:<batch id>" (ended once), "economy_note"."""
    return f"{PREFIX}:job:{{{job_id}}}"


def job_results(job_id: str) -> str:
    """Hash custom_id -> result JSON; HSETNX makes a redelivered chunk a no-op."""
    return f"{PREFIX}:job:{{{job_id}}}:results"


def job_order(job_id: str) -> str:
    """List of custom_ids in arrival order: readers stream results by offset."""
    return f"{PREFIX}:job:{{{job_id}}}:order"


def job_failed_inputs(job_id: str) -> str:
    """Hash custom_id -> inputs JSON of failed items, for `tidyq retry`."""
    return f"{PREFIX}:job:{{{job_id}}}:failed-inputs"


def job_running_chunks(job_id: str) -> str:
    """Set of chunk ids a worker is executing now; cancel completes when it empties."""
    return f"{PREFIX}:job:{{{job_id}}}:running"


def job_budget_inflight(job_id: str) -> str:
    """Sorted set admission token -> lease expiry: items of a --max-cost job being run now
    (shared/budget.py admits the next one only while spent + in flight x average cost fits)."""
    return f"{PREFIX}:job:{{{job_id}}}:budget-inflight"


def tenant_spend(tenant: str, day: str) -> str:
    """Hash of one tenant's spend on one UTC day (YYYY-MM-DD): "total" and "job:<id>" -> USD.
    Expires after eight days (shared/budget.py)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:spend:{day}"


def tenants_index() -> str:
    """Set of every tenant that has spent anything (`tidyq budget` lists them)."""
    return f"{PREFIX}:tenants"


def jobs_index() -> str:
    """Sorted set job id -> created_at (unix seconds) of every job: `tidyq jobs`, the jobs page and
    the REST API list recent jobs from it. Jobs expire on their own TTL, so readers drop the entries
    whose job hash is gone (JobStore.list_jobs) and create_job trims entries past the longest TTL."""
    return f"{PREFIX}:jobs"


def idempotency(digest: str) -> str:
    """String -> job id of the first submit with this idempotency key (sha256 of it)."""
    return f"{PREFIX}:idempotency:{digest}"


def worker(hostname: str) -> str:
    """Hash describing a live worker (queues, pid); set at ready, removed at shutdown."""
    return f"{PREFIX}:worker:{hostname}"


def worker_pattern() -> str:
    return f"{PREFIX}:worker:*"


# --- circuit breakers (shared/breaker.py). The target id sits in a {hash tag} so a breaker's
# state and its probe leases share a Cluster slot and one Lua script updates both.

def breaker(target_id: str) -> str:
    """Hash: state, open_until, reopen count, window ring (e:i, s:i, f:i), counters."""
    return f"{PREFIX}:breaker:{{{target_id}}}"


def breaker_probes(target_id: str) -> str:
    """Sorted set probe id -> lease expiry: the fleet-wide half-open probe slots."""
    return f"{PREFIX}:breaker:{{{target_id}}}:probes"


def breaker_index() -> str:
    """Set of every target id that has a breaker (for status listings)."""
    return f"{PREFIX}:breakers"


# --- program versions, rollout and MLflow tracking (shared/registry.py, shared/tracking.py,
# workers/optimize_task.py)

def rollout(name: str) -> str:
    """Hash of a registered model's serving state: live, candidate, percent, updated_at."""
    return f"{PREFIX}:rollout:{{{name}}}"


def version_stats(name: str) -> str:
    """Hash of per-version serving counters: '<version>:<counter>' -> number."""
    return f"{PREFIX}:rollout:{{{name}}}:stats"


def job_tracking(job_id: str) -> str:
    """Hash of a job's aggregated call statistics for its MLflow run (latency histogram, tokens...)."""
    return f"{PREFIX}:job:{{{job_id}}}:tracking"


def job_mlflow_progress(job_id: str) -> str:
    """String with a TTL of TIDYQ_MLFLOW_PROGRESS_INTERVAL: whoever sets it (NX) logs the running
    job's progress metrics to its MLflow run, so the fleet logs at most once per interval."""
    return f"{PREFIX}:job:{{{job_id}}}:mlflow-progress"


def mlflow_deferred_ends() -> str:
    """Sorted set job id -> time: ended jobs whose MLflow run could not be ended (MLflow away);
    the next chunk on any worker that reaches MLflow ends them (shared.tracking)."""
    return f"{PREFIX}:mlflow:deferred-ends"


def optimize_claim(job_id: str) -> str:
    """String: the worker running an optimize job; expires unless its heartbeat refreshes it."""
    return f"{PREFIX}:job:{{{job_id}}}:claim"


# --- operations (workers/metrics_publisher.py writes, producers/ops_state.py reads) ----------

def metrics_counters() -> str:
    """Hash: every worker process's counters summed cluster-wide. Field = JSON list
    [metric, label values...], value = HINCRBY/HINCRBYFLOAT total (never reset by a restart)."""
    return f"{PREFIX}:ops:counters"


METRICS_WINDOW_SECONDS = 10  # width of one metrics_window bucket (bucket = int(time // this))


def metrics_window(bucket: int) -> str:
    """Hash of item counts in one 10-second bucket (field "queue|status"): `tidyq queues` and
    `tidyq doctor` read recent rates from these without sampling twice. Expires after 10 min."""
    return f"{PREFIX}:ops:window:{bucket}"


def workers_seen() -> str:
    """Sorted set hostname -> last heartbeat (unix seconds) of every worker node."""
    return f"{PREFIX}:ops:workers"


def worker_heartbeat(hostname: str) -> str:
    """Hash: queues, processes, pid, version of one worker node; expires unless refreshed."""
    return f"{PREFIX}:ops:worker:{hostname}"


def active_jobs() -> str:
    """Sorted set job id -> last time a worker started one of its chunks (the running-jobs view)."""
    return f"{PREFIX}:ops:active-jobs"


def job_events_pattern() -> str:
    """Pub/sub pattern of every job's wake-up channel (the record-results script PUBLISHes on the job
    key's name): an asyncio client holds one pattern subscription for all the jobs it waits on."""
    return f"{PREFIX}:job:{{*}}"


def webhook_event(event_id: str) -> str:
    """String: set once when a webhook event is first scheduled, so each event id is sent once."""
    return f"{PREFIX}:webhook-event:{event_id}"


# --- chunk ledger (shared/ledger.py, workers/sweeper.py): every chunk of a job from enqueue
# until its chunk_end, so a message the broker lost is sent again.

def job_ledger(job_id: str) -> str:
    """Hash: 'p:<chunk>' -> chunk payload JSON, 't:<chunk>' -> Celery task id of the live copy,
    'q:<chunk>' -> its queue. Expires with the job; emptied as chunks end."""
    return f"{PREFIX}:job:{{{job_id}}}:ledger"


def job_ledger_seen(job_id: str) -> str:
    """Sorted set chunk id -> last time the chunk was seen alive (sent, queued, held or running)."""
    return f"{PREFIX}:job:{{{job_id}}}:ledger:seen"


def ledger_jobs() -> str:
    """Sorted set job id -> time its ledger was written: the jobs the sweeper looks at."""
    return f"{PREFIX}:ledger:jobs"


def sweeper_lock() -> str:
    """String: the worker node sweeping ledgers now (one at a time across the fleet); expires."""
    return f"{PREFIX}:ledger:sweeper"
# --- adaptive concurrency (shared/concurrency.py)

def concurrency(target_id: str) -> str:
    """Hash worker (host:pid) -> JSON {limit, inflight, mode, latency_ms, throttles, ts}: each
    worker process's current in-flight cap for one target, refreshed about once a second."""
    return f"{PREFIX}:concurrency:{{{target_id}}}"


def concurrency_index() -> str:
    """Set of target ids that have a concurrency entry (for `tidyq queues` and the metrics)."""
    return f"{PREFIX}:concurrency-targets"


def refusals(target_id: str) -> str:
    """Hash "<slot>:a" -> attempts, "<slot>:r" -> refused (429s) of one target per 100 ms wall-clock
    slot, summed over every worker process; fields older than the window are deleted as it moves,
    the hash expires after seconds idle (shared/fleet_refusals.py: does the fleet's refused share
    rise with its attempt rate?)."""
    return f"{PREFIX}:concurrency:{{{target_id}}}:refusals"
