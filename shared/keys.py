"""Every Redis key name tidyq uses, in one place. All keys start with ``tidyq:``."""

PREFIX = "tidyq"


def cache_entry(digest: str) -> str:
    return f"{PREFIX}:cache:{digest}"


def rate_bucket(backend: str, kind: str) -> str:
    """Token bucket of one backend; kind is 'rpm' or 'tpm'."""
    return f"{PREFIX}:ratelimit:{backend}:{kind}"


# --- job queue (shared/store.py). The job id sits in a {hash tag} so every key of one job
# lands on the same Redis Cluster slot and one Lua script may touch them all.

def job(job_id: str) -> str:
    """Hash: spec (JSON), kind, status, total, succeeded, failed, timestamps, links."""
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


def idempotency(digest: str) -> str:
    """String -> job id of the first submit with this idempotency key (sha256 of it)."""
    return f"{PREFIX}:idempotency:{digest}"


def worker(hostname: str) -> str:
    """Hash describing a live worker (queues, pid); set at ready, removed at shutdown."""
    return f"{PREFIX}:worker:{hostname}"


def worker_pattern() -> str:
    return f"{PREFIX}:worker:*"
