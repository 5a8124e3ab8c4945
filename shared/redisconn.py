"""One Redis connection pool per URL per process (pools are not shared across fork)."""

from __future__ import annotations

import os
import threading

import redis

_pools: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def get_redis(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    client = _pools.get(key)
    if client is None:
        with _lock:
            client = _pools.get(key)
            if client is None:
                client = redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True,
                                              retry_on_timeout=True)
                _pools[key] = client
    return client
