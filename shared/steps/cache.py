"""Response cache: a per-process memory LRU in front of a shared tier.

The shared tier is Redis when a Redis URL is configured (one cache for every worker on every
machine) and otherwise a local disk directory. Values are JSON (lm15's response_to_dict), never
pickle. The key covers backend, model, system prompt, messages and every generation parameter
(request_to_dict), so two requests share an entry only when the provider would see the same call.
The memory tier holds the immutable Response objects themselves; writes to the shared tier are
serialized and sent by a background thread, so a cache miss costs the caller only the key hash.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Protocol

import orjson
from dspy._vendor.lm15.serde import request_to_dict, response_from_dict, response_to_dict
from dspy.lm15 import Request, Response

from shared import keys
from shared.config import CacheConfig
from shared.steps import stats
from shared.steps.base import CallNext

_KEY_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def cache_key(backend: str, request: Request) -> str:
    """sha256 of the canonical request with sorted keys. orjson, not json: the stdlib encoder was
    half of the key's cost and the key about 7% of a mock item's CPU (orjson is ~10x faster)."""
    body = {"backend": backend, "request": request_to_dict(request)}
    try:
        data = orjson.dumps(body, option=_KEY_OPTIONS, default=str)
    except (orjson.JSONEncodeError, TypeError):  # e.g. an int beyond 64 bits: the stdlib takes any
        data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()


class Tier(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


def response_size(response: Response) -> int:
    return sum(len(getattr(p, "text", "") or "") for p in response.message.parts) + 256


class MemoryTier:
    """Thread-safe LRU of Response objects bounded by entry count and (approximate) bytes."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[float, Response, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, ttl: float) -> Response | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            stored_at, value, _ = hit
            if time.monotonic() - stored_at > ttl:
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return value

    def put(self, key: str, value: Response) -> None:
        size = response_size(value)
        if self.max_items <= 0 or size > self.max_bytes:
            return
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = (time.monotonic(), value, size)
            self._bytes += size
            while self._data and (len(self._data) > self.max_items or self._bytes > self.max_bytes):
                self._drop(next(iter(self._data)))

    def _drop(self, key: str) -> None:
        _, _, size = self._data.pop(key)
        self._bytes -= size

    def __len__(self) -> int:
        return len(self._data)


class NoTier:
    """Memory only: for a backend whose answer costs less than a shared-tier round trip."""

    def get(self, key: str) -> str | None:
        return None

    def put(self, key: str, value: str) -> None:
        pass


class RedisTier:
    """Shared by every worker: SET with EX, values JSON. A Redis error is a miss, never a failure."""

    def __init__(self, url: str, ttl_seconds: int):
        from shared.redisconn import get_redis

        self.redis = get_redis(url)
        self.ttl = ttl_seconds

    def get(self, key: str) -> str | None:
        try:
            value = self.redis.get(keys.cache_entry(key))
        except Exception:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def get_many(self, names: list[str]) -> list[str | None]:
        """One MGET for many entries (the async path's lookups, shared/steps/coalesce.py)."""
        try:
            values = self.redis.mget([keys.cache_entry(name) for name in names])
        except Exception:
            return [None] * len(names)
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    def put(self, key: str, value: str) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: list[tuple[str, str]]) -> None:
        """One round trip for a batch of entries."""
        try:
            with self.redis.pipeline(transaction=False) as p:
                for key, value in items:
                    p.set(keys.cache_entry(key), value, ex=self.ttl)
                p.execute()
        except Exception:
            pass


class DiskTier:
    """Local directory of JSON files; expired by mtime, pruned oldest-first above the size cap."""

    def __init__(self, directory: str | Path, ttl_seconds: int, max_bytes: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl_seconds
        self.max_bytes = max_bytes
        self._writes = 0

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as fh:  # one syscall on a miss
                if time.time() - os.fstat(fh.fileno()).st_mtime > self.ttl:
                    expired = True
                else:
                    return fh.read()
        except (OSError, ValueError):
            return None
        if expired:
            path.unlink(missing_ok=True)
        return None

    def put(self, key: str, value: str) -> None:
        path = self._path(key)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(value)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return
        self._writes += 1
        if self._writes % 100 == 0:
            self.prune()

    def prune(self) -> None:
        files = sorted(((p.stat().st_mtime, p.stat().st_size, p) for p in self.dir.glob("*.json")), reverse=True)
        total = 0
        for _, size, path in files:
            total += size
            if total > self.max_bytes:
                path.unlink(missing_ok=True)


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "tidyq")


class BackgroundWriter:
    """Serializes and writes shared-tier entries off the caller's thread, in batches: a miss costs
    the caller a deque append; the writer thread wakes once per batch (at the first pending entry,
    then gathers for ``interval`` seconds) and sends the batch in one go (one Redis pipeline).
    Bounded: above ``max_pending`` an entry is dropped (it is a cache). ``flush()`` writes what
    is pending from the caller's thread and returns when it is stored."""

    def __init__(self, tier: Tier, max_pending: int = 10_000, batch: int = 256, interval: float = 0.05):
        self.tier = tier
        self.max_pending, self.batch, self.interval = max_pending, batch, interval
        self.pending: deque = deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one drain at a time (writer thread or flush)
        self._thread = threading.Thread(target=self._run, name="tidyq-cache-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def submit(self, key: str, response: Response) -> None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append((key, response))
        if len(self.pending) == 1:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self.interval)  # let a batch gather
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            while self.pending:
                batch: list[tuple[str, Response]] = []
                while self.pending and len(batch) < self.batch:
                    batch.append(self.pending.popleft())
                try:
                    values = [(k, json.dumps(response_to_dict(r), separators=(",", ":"))) for k, r in batch]
                    put_many = getattr(self.tier, "put_many", None)
                    if put_many is not None:
                        put_many(values)
                    else:
                        for key, value in values:
                            self.tier.put(key, value)
                except Exception:
                    pass

    def flush(self) -> None:
        self._drain()


class CacheStep:
    name = "cache"

    def __init__(self, backend: str, config: CacheConfig, *, redis_url: str | None, cache_dir: str | None,
                 shared: bool = True):
        self.backend = backend
        self.config = config
        max_bytes = config.max_size_mb * 1024 * 1024
        self.memory = MemoryTier(config.memory_items, max_bytes)
        self.shared: Tier
        self.shared_kind: str | None
        if not shared:
            self.shared = NoTier()
            self.shared_kind = None
        elif redis_url:
            self.shared = RedisTier(redis_url, config.ttl_seconds)
            self.shared_kind = "redis"
        else:
            self.shared = DiskTier(cache_dir or default_cache_dir(), config.ttl_seconds, max_bytes)
            self.shared_kind = "disk"
        self.writer = BackgroundWriter(self.shared)

    def __call__(self, request: Request, call_next: CallNext) -> Response:
        key, response = self.find(request)
        if response is not None:
            return response
        return self.keep(key, call_next(request))

    def find(self, request: Request) -> tuple[str, Response | None]:
        """The request's key and its cached response (memory, then the shared tier), counted."""
        key, response = self.find_in_memory(request)
        if response is None:
            response = self.counted(self._from_shared(key))
        return key, response

    def find_in_memory(self, request: Request) -> tuple[str, Response | None]:
        """The request's key and its response from the memory tier (counted), without a round trip."""
        key = cache_key(self.backend, request)
        return key, self.counted(self.memory.get(key, self.config.ttl_seconds))

    def counted(self, response: Response | None) -> Response | None:
        if response is not None:
            collector = stats.current()
            if collector is not None:
                collector.cache_hits += 1
        return response

    def from_shared_many(self, names: list[str]) -> list[Response | None]:
        """Many shared-tier entries in one round trip (a tier without ``get_many``: one by one)."""
        get_many = getattr(self.shared, "get_many", None)
        if get_many is None:
            return [self._from_shared(name) for name in names]
        return [self._decoded(name, value) for name, value in zip(names, get_many(names), strict=True)]

    def keep(self, key: str, response: Response) -> Response:
        """A finished answer into both tiers (the shared one written in the background)."""
        if response.finish_reason in ("stop", "length"):
            self.memory.put(key, response)
            if self.shared_kind is not None:  # memory only (the worker's mock): nothing to serialize
                self.writer.submit(key, response)
        return response

    def lookup_key(self, key: str) -> Response | None:
        """A cached response without a call (economy mode checks the cache before batching)."""
        return self.memory.get(key, self.config.ttl_seconds) or self._from_shared(key)

    def _from_shared(self, key: str) -> Response | None:
        return self._decoded(key, self.shared.get(key))

    def _decoded(self, key: str, value: str | None) -> Response | None:
        if value is None:
            return None
        try:
            response = response_from_dict(json.loads(value))
        except (ValueError, TypeError, KeyError):
            return None
        self.memory.put(key, response)
        return response

    def flush(self) -> None:
        self.writer.flush()

    close = flush
