"""Per-version serving counters in Redis (items, failed, latency...), added per chunk.

Its own module so that shared.tracking (which calls it per chunk) and shared.registry (which reads
and publishes the counters) do not import each other.
"""

from __future__ import annotations

from shared import keys

_COUNTERS = ("items", "ok", "failed", "latency_ms_sum", "validation_failures")


def record_version_stats(versions: dict[tuple[str, int], dict[str, float]], *, redis_client=None) -> None:
    """Add counters per (model, version) in one pipeline (called per chunk by tracking.flush)."""
    if redis_client is None:
        from shared.config import get_settings
        from shared.redisconn import get_redis

        s = get_settings()
        redis_client = get_redis(s.redis_url or s.default_redis_url)
    with redis_client.pipeline(transaction=False) as p:
        for (model, version), counters in versions.items():
            key = keys.version_stats(model)
            for counter, value in counters.items():
                if counter not in _COUNTERS or not value:
                    continue
                # a float increment always (HINCRBY fails on a field once left fractional); readers parse floats
                p.hincrbyfloat(key, f"{version}:{counter}", value)
        p.execute()
