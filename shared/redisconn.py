"""One Redis connection pool per URL per process (pools are not shared across fork)."""

from __future__ import annotations

import os
import threading

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

_pools: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


_ride_out_outages = False


def ride_out_outages(enabled: bool = True) -> None:
    """Workers call this at boot: their clients then wait out a Redis restart (see
    :func:`outage_retry`). Producers and CLIs keep redis-py's short retries and fail fast."""
    global _ride_out_outages
    _ride_out_outages = enabled


def outage_retry() -> Retry:
    """Ride out a Redis restart (AOF reload takes seconds): connection errors and timeouts are
    retried with backoff for about 15 s before they reach the caller. A command whose reply was
    lost may run twice: results (HSETNX) and chunk bookkeeping (sets) are idempotent; a metrics
    increment or a rate-limit reservation may count twice."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20,
                 supported_errors=(redis.ConnectionError, redis.TimeoutError, ConnectionResetError))


def get_redis(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    client = _pools.get(key)
    if client is None:
        with _lock:
            client = _pools.get(key)
            if client is None:
                extra = {"retry": outage_retry()} if _ride_out_outages else {"retry_on_timeout": True}
                client = redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True, **extra)
                _pools[key] = client
    return client
