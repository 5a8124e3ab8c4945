"""Global per-backend rate limits (requests and tokens per minute) shared by every worker.

A token bucket per (backend, kind) lives in Redis and is updated by one Lua script, so the limit
holds across processes and machines (Celery's own rate_limit is per worker). Callers reserve
their slot (the bucket may go negative) and sleep exactly their share, which keeps the order fair;
a wait longer than RetryConfig.max_inline_wait is not reserved: RetryLater hands it to the queue.
Token costs are estimated before the call (prompt chars / 4 + max_tokens) and corrected after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from dspy.lm15 import LM15Error, Request, Response

from shared import keys
from shared.errors import RetryLater
from shared.steps import stats
from shared.steps.base import CallNext
from shared.steps.retry import PACED, is_rate_limited

TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = cap; ts = now end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < cost then wait = (cost - tokens) / rate end
if wait <= max_wait then tokens = tokens - cost end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 120)
return tostring(wait)
"""

# A provider's rate-limit answer drops the bucket's burst: the fleet goes on at the steady rate.
DRAIN = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '1')
if tokens > 0 then redis.call('HSET', KEYS[1], 'tokens', 0) end
return 1
"""

DEFAULT_COMPLETION_TOKENS = 256


def estimate_tokens(request: Request) -> int:
    chars = sum(len(m.text or "") for m in request.messages)
    if isinstance(request.system, str):
        chars += len(request.system)
    return chars // 4 + (request.config.max_tokens or DEFAULT_COMPLETION_TOKENS)


class TokenBucket:
    def __init__(self, redis_client, key: str, per_minute: float):
        self.key = key
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)  # one second of burst: smooth, not a minute's worth at once
        self._script = redis_client.register_script(TOKEN_BUCKET)
        self._drain = redis_client.register_script(DRAIN)

    def reserve(self, cost: float, max_wait: float) -> float:
        """Seconds to wait before the reserved call may go; > max_wait means nothing was reserved."""
        return float(self._script(keys=[self.key], args=[self.capacity, self.rate, cost, max_wait]))

    def drain(self) -> None:
        """No burst until the bucket refills (the provider said we are going too fast)."""
        self._drain(keys=[self.key])


class RateLimitStep:
    name = "ratelimit"

    def __init__(self, backend: str, redis_url: str, *, rpm: float = 0, tpm: float = 0,
                 max_inline_wait: float = 10.0, sleep: Callable[[float], None] = time.sleep):
        from shared.redisconn import get_redis

        client = get_redis(redis_url)
        self.requests = TokenBucket(client, keys.rate_bucket(backend, "rpm"), rpm) if rpm > 0 else None
        self.tokens = TokenBucket(client, keys.rate_bucket(backend, "tpm"), tpm) if tpm > 0 else None
        self.max_inline_wait = max_inline_wait
        self.sleep = sleep

    def _take(self, bucket: TokenBucket, cost: float) -> float:
        wait = bucket.reserve(cost, self.max_inline_wait)
        if wait > self.max_inline_wait:
            raise RetryLater(f"rate limit {bucket.key}: next slot in {wait:.1f}s", delay=wait)
        return wait

    def __call__(self, request: Request, call_next: CallNext) -> Response:
        wait, estimate = self.reserve(request)
        if wait > 0:
            self.sleep(wait)
        try:
            response = call_next(request)
        except LM15Error as exc:
            self.on_error(exc)
            raise
        self.correct_tokens(response, estimate)
        return response

    def reserve(self, request: Request) -> tuple[float, float]:
        """Take this call's request and token slots: (seconds to wait first, token estimate)."""
        wait = 0.0
        if self.requests is not None:
            wait = max(wait, self._take(self.requests, 1))
        estimate = estimate_tokens(request) if self.tokens is not None else 0
        if self.tokens is not None:
            wait = max(wait, self._take(self.tokens, estimate))
        if wait > 0:
            collector = stats.current()
            if collector is not None:
                collector.rate_limit_wait_s += wait
        return wait, estimate

    def on_error(self, exc: LM15Error) -> None:
        """A provider's rate-limit answer feeds the limiter: no burst, and it paces the retry (steps/retry.py)."""
        if is_rate_limited(exc):
            setattr(exc, PACED, True)
            for bucket in (self.requests, self.tokens):
                if bucket is not None:
                    bucket.drain()

    def correct_tokens(self, response: Response, estimate: float) -> None:
        """The token bucket learns what the call really used (the estimate was taken before)."""
        if self.tokens is not None:
            used = response.usage.total_tokens if response.usage and response.usage.total_tokens is not None else None
            if used is not None and not math.isclose(used, estimate):
                self.tokens.reserve(used - estimate, 1e12)
