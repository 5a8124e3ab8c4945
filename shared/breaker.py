"""A circuit breaker per (backend, model) whose state lives in Redis, shared by every worker.

    closed --(failure rate over the sliding window with at least min_calls,
              or consecutive_failures in a row: a sudden hard outage)--> open
    open --(open_seconds pass)--> half_open --(close_after probe successes)--> closed
    half_open --(a probe fails)--> open again, for twice as long (capped at max_open_seconds)

Why Redis and Lua rather than a library: pybreaker's CircuitRedisStorage counts consecutive
failures (no failure rate, no window, no minimum of calls) and its half-open state lets the next
call of every process through; LiteLLM's cooldown cache is a TTL key per deployment with no
half-open state at all (after the cooldown the whole fleet's traffic returns at once). One Lua
script per operation gives all three states atomically, with Redis's own clock (every machine
agrees) and a fleet-wide bound on half-open probes (a sorted set of probe leases, so a probe
of a worker that died frees itself after ``probe_lease_seconds``).

The window is a ring of ``buckets`` counters (e:i epoch, s:i successes, f:i failures) in the
breaker's hash, so its size is fixed whatever the call rate. Settings: ``Settings.breaker_*``.
Successes are reported in batches (``ok_batch_seconds``), so a run of failures is judged only once
every process's successes from before it are in: at once when no other process may hold any (the
script records who was last told the breaker is closed), else ``ok_batch_seconds`` later (six hung
calls timing out together in four processes, between the others' successes, opened it for 15 s).

The step sits inside the retry step (metrics -> cache -> retry -> breaker -> rate limit ->
backend): every attempt is gated, so once the breaker is open a retry does not reach the
provider, and the fallback engine moves the call to the next target at once. A Redis error
never fails a call: the breaker then lets calls through (and says so in the log).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dspy import lm15
from dspy.lm15 import Request, Response

from shared import keys
from shared.config import Settings, Target, get_settings
from shared.errors import BreakerOpen, ConfigurationError, RetryLater
from shared.redisconn import get_redis
from shared.steps import stats
from shared.steps.base import CallNext
from shared.steps.retry import is_rate_limited
from shared.telemetry import get_logger

STATES = ("closed", "half_open", "open")
STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}  # the Prometheus gauge's values

# Who may hold successes not reported yet (CircuitBreaker.record batches them while the process knows the
# breaker is closed): the one reporter given that knowledge within its span, or '*' for several.
# ARGV of the caller: reporter, span; KEYS[1] the hash.
_MEMO = """
local function grant_memo(now, reporter, span)
  local by = redis.call('HGET', KEYS[1], 'memo_by')
  local till = tonumber(redis.call('HGET', KEYS[1], 'memo_until') or '0')
  if by and by ~= reporter and till > now then by = '*' else by = reporter end
  redis.call('HSET', KEYS[1], 'memo_by', by, 'memo_until', tostring(now + tonumber(span)))
end
local function alone(now, reporter)
  local till = tonumber(redis.call('HGET', KEYS[1], 'memo_until') or '0')
  return till <= now or redis.call('HGET', KEYS[1], 'memo_by') == reporter
end
"""

# KEYS: hash, probes ; ARGV: probe_id, open_seconds, max_probes, lease, busy_retry, ttl, reporter, memo span
# -> {decision ('allow'|'probe'|'reject'), state, retry_at, transition}
_ACQUIRE = _MEMO + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local st = redis.call('HGET', KEYS[1], 'state')
if not st or st == 'closed' then
  grant_memo(now, ARGV[7], ARGV[8])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  return {'allow', 'closed', '0', ''}
end
local transition = ''
if st == 'open' then
  local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
  if now < open_until then return {'reject', 'open', tostring(open_until), ''} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'since', tostring(now), 'probe_ok', 0)
  redis.call('HINCRBY', KEYS[1], 'tr:open>half_open', 1)
  redis.call('DEL', KEYS[2])
  transition = 'open>half_open'
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
  local lease = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  redis.call('EXPIRE', KEYS[2], math.ceil(lease) + 60)
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  return {'probe', 'half_open', '0', transition}
end
return {'reject', 'half_open', tostring(now + tonumber(ARGV[5])), transition}
"""

# KEYS: hash, probes ; ARGV: outcome ('ok'|'fail'|'neutral'|'confirm'), probe_id, window, buckets, min_calls,
# failure_rate, open_seconds, max_open_seconds, close_after, ttl, consecutive_failures, count (of 'ok's),
# reporter, lag (ok_batch_seconds), memo span
# -> {state, transition, open_until, confirm_in (seconds until a run of failures may open it; 0: none pending)}
_RECORD = _MEMO + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local outcome, probe = ARGV[1], ARGV[2]
local window, nb = tonumber(ARGV[3]), tonumber(ARGV[4])
local run_of, lag = tonumber(ARGV[11]), tonumber(ARGV[14])
local st = redis.call('HGET', KEYS[1], 'state') or 'closed'
local transition = ''
local confirm_in = 0
local function done()
  if st == 'closed' then grant_memo(now, ARGV[13], ARGV[15]) end
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[10]))
  return {st, transition, redis.call('HGET', KEYS[1], 'open_until') or '0', tostring(confirm_in)}
end
local function open_it()
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', tostring(now), 'reopens', 1,
             'open_until', tostring(now + tonumber(ARGV[7])))
  redis.call('HDEL', KEYS[1], 'run_full_at')
  redis.call('HINCRBY', KEYS[1], 'tr:closed>open', 1)
  st, transition = 'open', 'closed>open'
end
-- a run of failures opens it once the successes that could break it are in: every process reports
-- its batched successes within lag, so with other processes batching the run must be lag old
local function run_complete()
  local consec = tonumber(redis.call('HGET', KEYS[1], 'consec') or '0')
  if run_of <= 0 or consec < run_of then return false end
  local full = tonumber(redis.call('HGET', KEYS[1], 'run_full_at') or '0')
  if full == 0 then full = now; redis.call('HSET', KEYS[1], 'run_full_at', tostring(now)) end
  if lag <= 0 or now - full >= lag or alone(now, ARGV[13]) then return true end
  confirm_in = lag - (now - full)
  return false
end
local function clear_ring()
  for i = 0, nb - 1 do redis.call('HDEL', KEYS[1], 'e:' .. i, 's:' .. i, 'f:' .. i) end
end
if probe ~= '' then
  redis.call('ZREM', KEYS[2], probe)
  if st == 'half_open' and outcome == 'ok' then
    if redis.call('HINCRBY', KEYS[1], 'probe_ok', 1) >= tonumber(ARGV[9]) then
      clear_ring()
      redis.call('HSET', KEYS[1], 'state', 'closed', 'since', tostring(now), 'reopens', 0, 'consec', 0)
      redis.call('HDEL', KEYS[1], 'run_full_at')
      redis.call('HINCRBY', KEYS[1], 'tr:half_open>closed', 1)
      redis.call('DEL', KEYS[2])
      st, transition = 'closed', 'half_open>closed'
    end
  elseif st == 'half_open' and outcome == 'fail' then
    local n = redis.call('HINCRBY', KEYS[1], 'reopens', 1)
    local d = math.min(tonumber(ARGV[8]), tonumber(ARGV[7]) * 2 ^ math.max(0, n - 1))
    redis.call('HSET', KEYS[1], 'state', 'open', 'since', tostring(now), 'open_until', tostring(now + d))
    redis.call('HINCRBY', KEYS[1], 'tr:half_open>open', 1)
    redis.call('DEL', KEYS[2])
    st, transition = 'open', 'half_open>open'
  end
  return done()
end
if outcome == 'neutral' then return done() end
if outcome == 'confirm' then
  if st == 'closed' and run_complete() then open_it() end
  return done()
end
local epoch = math.floor(now * nb / window)
local idx = epoch % nb
if tonumber(redis.call('HGET', KEYS[1], 'e:' .. idx) or '-1') ~= epoch then
  redis.call('HSET', KEYS[1], 'e:' .. idx, epoch, 's:' .. idx, 0, 'f:' .. idx, 0)
end
if outcome == 'ok' then
  redis.call('HINCRBY', KEYS[1], 's:' .. idx, tonumber(ARGV[12] or '1'))
  redis.call('HSET', KEYS[1], 'consec', 0)
  redis.call('HDEL', KEYS[1], 'run_full_at')
else
  redis.call('HINCRBY', KEYS[1], 'f:' .. idx, 1)
  redis.call('HINCRBY', KEYS[1], 'consec', 1)
  if st == 'closed' then
    local fields = {}
    for i = 0, nb - 1 do
      fields[#fields + 1] = 'e:' .. i; fields[#fields + 1] = 's:' .. i; fields[#fields + 1] = 'f:' .. i
    end
    local v = redis.call('HMGET', KEYS[1], unpack(fields))
    local ok, bad = 0, 0
    for i = 0, nb - 1 do
      local e = tonumber(v[3 * i + 1] or '-1')
      if e > epoch - nb then
        ok = ok + tonumber(v[3 * i + 2] or '0'); bad = bad + tonumber(v[3 * i + 3] or '0')
      end
    end
    if run_complete() or (ok + bad >= tonumber(ARGV[5]) and bad / (ok + bad) >= tonumber(ARGV[6])) then
      open_it()
    end
  end
end
return done()
"""


@dataclass(frozen=True)
class BreakerSettings:
    """The breaker's knobs, read from ``Settings.breaker_*`` (the one place for settings)."""

    window_seconds: float = 20.0
    buckets: int = 10
    min_calls: int = 10
    failure_rate: float = 0.5
    consecutive_failures: int = 5  # this many failures in a row open it whatever the rate (0: off)
    open_seconds: float = 15.0
    max_open_seconds: float = 300.0
    half_open_probes: int = 2
    close_after: int = 1
    probe_lease_seconds: float = 90.0
    busy_retry_seconds: float = 0.25  # half-open with every probe slot taken: a requeue waits this long
    local_memo_seconds: float = 1.0  # a process re-asks Redis about an open breaker at most this often
    closed_memo_seconds: float = 0.5  # a closed breaker seen in the last report needs no acquire call
    ok_batch_seconds: float = 0.2  # successes while it is known closed are reported together, this often
    ttl_seconds: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.buckets < 1 or self.min_calls < 1:
            raise ConfigurationError("breaker window_seconds > 0, buckets >= 1 and min_calls >= 1 are required")
        if not 0 < self.failure_rate <= 1:
            raise ConfigurationError("TIDYQ_BREAKER_FAILURE_RATE is a fraction in (0, 1]")
        if self.open_seconds <= 0 or self.max_open_seconds < self.open_seconds:
            raise ConfigurationError("TIDYQ_BREAKER_OPEN_SECONDS must be > 0 and <= TIDYQ_BREAKER_MAX_OPEN_SECONDS")
        if self.half_open_probes < 1 or self.close_after < 1 or self.probe_lease_seconds <= 0:
            raise ConfigurationError("breaker half_open_probes, close_after and probe_lease_seconds must be >= 1")

    @classmethod
    def from_settings(cls, s: Settings | None = None) -> BreakerSettings:
        s = s or get_settings()
        return cls(window_seconds=s.breaker_window_seconds, buckets=s.breaker_buckets, min_calls=s.breaker_min_calls,
                   failure_rate=s.breaker_failure_rate, consecutive_failures=s.breaker_consecutive_failures,
                   open_seconds=s.breaker_open_seconds,
                   max_open_seconds=s.breaker_max_open_seconds, half_open_probes=s.breaker_half_open_probes,
                   close_after=s.breaker_close_after, probe_lease_seconds=s.breaker_probe_lease_seconds)


class _Counters:
    """Process-local transition and fallback counts, for the Prometheus exporter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.transitions: Counter[tuple[str, str, str]] = Counter()  # (target, from, to)
        self.fallbacks: Counter[tuple[str, str, str]] = Counter()  # (from target, to target, reason)

    def transition(self, target: str, change: str) -> None:
        old, _, new = change.partition(">")
        with self._lock:
            self.transitions[(target, old, new)] += 1

    def fallback(self, source: str, to: str, reason: str) -> None:
        with self._lock:
            self.fallbacks[(source, to, reason)] += 1

    def snapshot(self) -> dict[str, list[dict]]:
        with self._lock:
            return {"transitions": [{"target": t, "from": a, "to": b, "count": n}
                                    for (t, a, b), n in self.transitions.items()],
                    "fallbacks": [{"from": a, "to": b, "reason": r, "count": n}
                                  for (a, b, r), n in self.fallbacks.items()]}

    def reset(self) -> None:
        with self._lock:
            self.transitions.clear()
            self.fallbacks.clear()


counters = _Counters()


def outcome_of(exc: BaseException | None) -> str:
    """'ok', 'fail' (provider trouble: 5xx, timeouts, connection errors) or 'neutral' (a rate
    limit: 429 or 503 with Retry-After, which backoff and the rate limiter handle; the request's
    or the setup's fault: bad request, auth, context window; or our own wait)."""
    if exc is None:
        return "ok"
    if is_rate_limited(exc):
        return "neutral"
    if isinstance(exc, (lm15.RateLimitError, lm15.ServerError, lm15.TimeoutError, lm15.TransportError)) \
            and not isinstance(exc, lm15.ContextLengthError):
        return "fail"
    return "neutral"


@dataclass(frozen=True)
class Permit:
    probe_id: str = ""  # non-empty when this call is a half-open probe


class CircuitBreaker:
    """One target's breaker. Cheap to hold; every method is one Lua call (or none while the
    process already knows the breaker is open)."""

    def __init__(self, client, target: str, settings: BreakerSettings | None = None):
        self.r = client
        self.target = target
        self.settings = settings or BreakerSettings()
        self.key, self.probes_key = keys.breaker(target), keys.breaker_probes(target)
        self._acquire = client.register_script(_ACQUIRE)
        self._record = client.register_script(_RECORD)
        self._memo: tuple[float, str, float] | None = None  # (valid until, state, retry_at)
        self.last_open_until = 0.0
        self._closed_until = 0.0  # this process saw it closed in its last report, until then
        self._registered = False
        self._redis_down_logged = 0.0
        self._ok_lock = threading.Lock()
        self._pending_ok = 0  # successes not yet reported (see record)
        self._pending_neutral = False  # a neutral outcome not yet reported (see record)
        self._ok_timer: threading.Timer | None = None
        self.reporter = uuid.uuid4().hex[:16]  # this breaker object in this process (see _MEMO)
        self._confirm_timer: threading.Timer | None = None
        self.log = get_logger(target=target)

    # ---- the call path -------------------------------------------------------------------
    def known_open(self) -> BreakerOpen | None:
        """What this process already knows (no Redis): the breaker refused a call moments ago."""
        memo = self._memo
        if memo is not None and time.time() < memo[0]:
            return BreakerOpen(self.target, memo[1], memo[2])
        return None

    def acquire(self) -> Permit:
        """A permit for one attempt, or BreakerOpen(retry_at=...). While this process's last
        report found the breaker closed (within ``closed_memo_seconds``) no Redis call is made: the
        next report (a failure's, or the batch of successes every ``ok_batch_seconds``) returns
        the state again, so a breaker another process opened stops this process's attempts
        within about ``ok_batch_seconds``."""
        if time.time() < self._closed_until:
            return Permit()
        known = self.known_open()
        if known is not None:
            raise known
        s = self.settings
        probe_id = uuid.uuid4().hex
        try:
            self._register()
            decision, state, retry_at, transition = (_text(x) for x in self._acquire(
                keys=[self.key, self.probes_key],
                args=[probe_id, s.open_seconds, s.half_open_probes, s.probe_lease_seconds, s.busy_retry_seconds,
                      s.ttl_seconds, self.reporter, self._memo_span()]))
        except Exception as exc:  # Redis trouble must not turn a working provider into a failure
            self._redis_down(exc)
            return Permit()
        if transition:
            self._transitioned(transition)
        if decision == "reject":
            at = float(retry_at)
            if state == "open":  # half-open rejects are not memoised: the probe may close it any moment
                self._memo = (min(at, time.time() + s.local_memo_seconds), state, at)
            raise BreakerOpen(self.target, state, at)
        self._memo = None
        if state == "closed":  # as fresh as a report: the attempts started with this one need no acquire call
            self._closed_until = time.time() + s.closed_memo_seconds
        return Permit(probe_id if decision == "probe" else "")

    def record(self, permit: Permit, outcome: str) -> str | None:
        """Report an attempt's outcome; returns the new state (None when Redis was unreachable).

        A success while this process knows the breaker is closed is counted here and reported
        with the others of the next ``ok_batch_seconds`` in one script call (a round trip per
        success was a fifth of the async path's event-loop time). A failure first reports the
        successes before it, so the failure rate and the run of consecutive failures see them in
        order; the batch's report also refreshes what this process knows of the state. A neutral outcome
        (a rate limit, a bad request) moves no count: while the state is known it is reported with the
        batch too (a neutral report when no success is batched), not in a call of its own."""
        if outcome == "ok" and not permit.probe_id and self.settings.ok_batch_seconds > 0 \
                and time.time() < self._closed_until:
            self._count_ok()
            return "closed"
        if outcome == "neutral" and not permit.probe_id and self.settings.ok_batch_seconds > 0 \
                and time.time() < self._closed_until:
            # counts nothing, so it rides with the next batch (one per 429 of a storm was 2-5 ms each on a
            # loaded machine, blocking the event loop: 0.2-0.5 s a job); reported at all, because the
            # report renews this process's memo, which holds other processes' runs of failures for their
            # confirm (skipped altogether, the storm test's hung calls opened it in 3 of 3 runs, 1 of 2 before)
            self._count_ok(0)
            return "closed"
        if outcome == "fail":
            self.flush()
        return self._report(permit, outcome, 1)

    def flush(self) -> None:
        """Report the successes counted since the last report (one script call)."""
        with self._ok_lock:
            count, self._pending_ok = self._pending_ok, 0
            neutral, self._pending_neutral = self._pending_neutral, False
            timer, self._ok_timer = self._ok_timer, None
        if timer is not None:
            timer.cancel()
        if count:
            self._report(Permit(), "ok", count)
        elif neutral:
            self._report(Permit(), "neutral", 1)

    def close(self) -> None:
        """Report what this process holds and stop its timers: an engine closed with successes
        still batched would report them later, into whatever the breaker's hash has become."""
        with self._ok_lock:
            confirm, self._confirm_timer = self._confirm_timer, None
        if confirm is not None:
            confirm.cancel()
        self.flush()

    def _count_ok(self, n: int = 1) -> None:
        """``n`` successes batched (0: a neutral outcome, reported with the batch)."""
        with self._ok_lock:
            self._pending_ok += n
            self._pending_neutral = self._pending_neutral or n == 0
            if self._ok_timer is None:
                self._ok_timer = threading.Timer(self.settings.ok_batch_seconds, self.flush)
                self._ok_timer.daemon = True
                self._ok_timer.start()

    def _confirm(self) -> None:
        """A run of failures that was complete but too young to open the breaker (other processes
        may still hold successes that break it): once they are reported, open it if none did."""
        with self._ok_lock:
            self._confirm_timer = None
        self.flush()
        self._report(Permit(), "confirm", 1)

    def _memo_span(self) -> float:
        """How long after this grant a process may still report successes it holds (with slack)."""
        return self.settings.closed_memo_seconds + self.settings.ok_batch_seconds + 0.05

    def _report(self, permit: Permit, outcome: str, count: int) -> str | None:
        s = self.settings
        try:
            state, transition, open_until, confirm_in = (_text(x) for x in self._record(
                keys=[self.key, self.probes_key],
                args=[outcome, permit.probe_id, s.window_seconds, s.buckets, s.min_calls, s.failure_rate,
                      s.open_seconds, s.max_open_seconds, s.close_after, s.ttl_seconds, s.consecutive_failures,
                      count, self.reporter, s.ok_batch_seconds, self._memo_span()]))
        except Exception as exc:
            self._redis_down(exc)
            return None
        if float(confirm_in) > 0:
            self._confirm_later(float(confirm_in))
        if transition:
            self._transitioned(transition)
        self._closed_until = time.time() + s.closed_memo_seconds if state == "closed" else 0.0
        if state == "open":
            at = float(open_until or 0)
            self._memo = (min(at, time.time() + s.local_memo_seconds), state, at)
        self.last_open_until = float(open_until or 0)
        return state

    def _confirm_later(self, seconds: float) -> None:
        with self._ok_lock:
            if self._confirm_timer is not None:
                return
            self._confirm_timer = threading.Timer(seconds + 0.01, self._confirm)
            self._confirm_timer.daemon = True
            self._confirm_timer.start()

    # ---- helpers -------------------------------------------------------------------------
    def _register(self) -> None:
        if not self._registered:
            self.r.sadd(keys.breaker_index(), self.target)
            self._registered = True

    def _transitioned(self, transition: str) -> None:
        old, _, new = transition.partition(">")
        counters.transition(self.target, transition)
        log = self.log.warning if new == "open" else self.log.info
        log("breaker_transition", from_state=old, to_state=new)

    def _redis_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._redis_down_logged > 30:
            self._redis_down_logged = now
            self.log.warning("breaker_redis_unavailable", error=f"{type(exc).__name__}: {exc}",
                             effect="calls pass without the breaker")

    def status(self) -> dict[str, Any]:
        return breaker_status(self.r, self.target, self.settings)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class BreakerStep:
    """Gates every attempt on the target's breaker and reports its outcome."""

    name = "breaker"

    def __init__(self, breaker: CircuitBreaker):
        self.breaker = breaker

    def __call__(self, request: Request, call_next: CallNext) -> Response:
        permit = self.enter()
        try:
            response = call_next(request)
        except BaseException as exc:
            self.failed(permit, exc)
            raise
        self.breaker.record(permit, "ok")
        return response

    def close(self) -> None:
        self.breaker.close()

    def enter(self):
        """A permit for one attempt, or BreakerOpen (the attempt the retry step counted is undone)."""
        try:
            return self.breaker.acquire()
        except BreakerOpen:
            collector = stats.current()
            if collector is not None and collector.attempts > 0:
                collector.attempts -= 1  # the retry step counted an attempt that never left
            raise

    def failed(self, permit, exc: BaseException) -> None:
        """Record a failed attempt; raises BreakerOpen when this failure opened the breaker. (The
        async twin in shared/steps/async_steps.py shares enter/failed.)"""
        if isinstance(exc, RetryLater):
            self.breaker.record(permit, "neutral")  # our own rate limit: the provider was not asked
            return
        outcome = outcome_of(exc)
        state = self.breaker.record(permit, outcome)
        if outcome == "fail" and state == "open":
            # the breaker is open now: no backoff sleep before a retry it would refuse anyway,
            # the fallback engine moves on at once (the provider's error stays the cause)
            raise BreakerOpen(self.breaker.target, "open", self.breaker.last_open_until) from exc


def breaker_enabled_for(backend: str, redis_url: str | None, settings: Settings | None = None) -> bool:
    s = settings or get_settings()
    wanted = {b.strip() for b in s.breaker_backends.split(",") if b.strip()}
    return bool(s.breaker_enabled and redis_url and backend in wanted)


def build_breaker_step(backend: str, model: str | None, redis_url: str | None,
                       settings: Settings | None = None) -> BreakerStep | None:
    """The breaker step for one target, or None (no Redis, disabled, or a backend without one)."""
    s = settings or get_settings()
    if redis_url is None or not breaker_enabled_for(backend, redis_url, s):
        return None
    breaker = CircuitBreaker(get_redis(redis_url), Target(backend, model).id, BreakerSettings.from_settings(s))
    return BreakerStep(breaker)


# ---- status and operations (tidyq queues / doctor / breaker reset, Prometheus) ----------------

def breaker_status(client, target: str, settings: BreakerSettings | None = None) -> dict[str, Any]:
    """One target's breaker as plain data. ``state`` is what a call would meet now: an open
    breaker whose time is up reads 'half_open'."""
    s = settings or BreakerSettings()
    with client.pipeline(transaction=False) as p:
        p.time()
        p.hgetall(keys.breaker(target))
        p.zrange(keys.breaker_probes(target), 0, -1, withscores=True)
        (sec, usec), raw, probes = p.execute()
    now = sec + usec / 1e6
    h = {_text(k): _text(v) for k, v in raw.items()}
    state = h.get("state", "closed")
    open_until = float(h["open_until"]) if h.get("open_until") else None
    if state == "open" and open_until is not None and now >= open_until:
        state = "half_open"
    epoch = int(now * s.buckets // s.window_seconds)
    ok = bad = 0
    for i in range(s.buckets):
        if int(h.get(f"e:{i}", -1)) > epoch - s.buckets:
            ok += int(h.get(f"s:{i}", 0))
            bad += int(h.get(f"f:{i}", 0))
    transitions = {k[3:].replace(">", "->"): int(v) for k, v in h.items() if k.startswith("tr:")}
    fallbacks = {k[5:]: int(v) for k, v in h.items() if k.startswith("skip:")}
    return {
        "target": target,
        "state": state,
        "state_value": STATE_VALUE[state],
        "since": float(h["since"]) if h.get("since") else None,
        "retry_at": open_until if state == "open" else None,
        "window": {"calls": ok + bad, "failures": bad, "failure_rate": round(bad / (ok + bad), 4) if ok + bad else 0.0,
                   "seconds": s.window_seconds},
        "probes_in_flight": sum(1 for _, exp in probes if exp > now),
        "probes_total": int(h.get("probes", 0)),
        "transitions": transitions,
        "skipped": fallbacks,  # calls that moved off this target, by reason
        "served_as_fallback": int(h.get("served_as_fallback", 0)),
    }


def known_targets(client) -> list[str]:
    return sorted(_text(t) for t in client.smembers(keys.breaker_index()))


def breaker_states(client, settings: BreakerSettings | None = None) -> list[dict[str, Any]]:
    """Every known target's breaker (the Prometheus gauge, `tidyq queues`, `tidyq doctor`)."""
    s = settings or BreakerSettings.from_settings()
    return [breaker_status(client, t, s) for t in known_targets(client)]


def known_target(client, text: str, *, where: str = "TARGET") -> str:
    """``text`` as a known target's id (`tidyq breaker reset TARGET`, POST /breakers/{target}/reset):
    a BadInput naming ``where`` when it is no backend:model or no breaker has seen it."""
    from shared.errors import BadInput

    try:
        target = Target.parse(text)
    except ConfigurationError as exc:
        raise BadInput(str(exc), where=where) from None
    if not target.model:
        raise BadInput(f"expected backend:model, e.g. direct:openai/gpt-4o-mini, got {text!r}", where=where)
    known = known_targets(client)
    if target.id not in known:
        raise BadInput(f"no breaker for {target.id!r}; known targets: {', '.join(known) or 'none yet'}", where=where)
    return target.id


def reset_breaker(client, target: str) -> dict[str, Any]:
    """`tidyq breaker reset TARGET`: close the breaker now (window and probes cleared)."""
    target = Target.parse(target).id
    before = breaker_status(client, target)
    with client.pipeline(transaction=True) as p:
        p.delete(keys.breaker(target), keys.breaker_probes(target))
        p.hset(keys.breaker(target), mapping={"state": "closed", "since": repr(time.time())})
        p.hincrby(keys.breaker(target), "tr:reset>closed", 1)
        p.expire(keys.breaker(target), BreakerSettings().ttl_seconds)
        p.sadd(keys.breaker_index(), target)
        p.execute()
    if before["state"] != "closed":
        counters.transition(target, f"{before['state']}>closed")
    get_logger(target=target).warning("breaker_transition", from_state=before["state"], to_state="closed",
                                      reason="manual reset")
    return {"target": target, "was": before["state"], "now": "closed"}


def record_fallbacks(client, skipped: list[dict], served_by: str | None) -> None:
    """Count one call's skips: process-local (Prometheus) and fleet-wide in Redis (`tidyq queues`:
    calls that left each target, by reason, and calls a fallback target served). Never fails a call."""
    for s in skipped:
        counters.fallback(s["target"], served_by or "", s["reason"])
    if client is None or not skipped:
        return
    ttl = BreakerSettings().ttl_seconds
    try:
        with client.pipeline(transaction=False) as p:
            for s in skipped:
                p.hincrby(keys.breaker(s["target"]), f"skip:{s['reason']}", 1)
                p.expire(keys.breaker(s["target"]), ttl)
            if served_by:
                p.hincrby(keys.breaker(served_by), "served_as_fallback", 1)
                p.expire(keys.breaker(served_by), ttl)
            p.sadd(keys.breaker_index(), *{s["target"] for s in skipped}, *([served_by] if served_by else []))
            p.execute()
    except Exception:
        pass
