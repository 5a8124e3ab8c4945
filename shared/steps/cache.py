"""Response cache: a per-process memory LRU in front of a shared tier.

The shared tier is Redis when a Redis URL is configured (one cache for every worker on every
machine) and otherwise a local disk directory. Values are JSON (lm15's response_to_dict), never
pickle. The key covers backend, model, system prompt, messages and every generation parameter
(request_to_dict), so two requests share an entry only when the provider would see the same call.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from dspy._vendor.lm15.serde import request_to_dict, response_from_dict, response_to_dict
from dspy.lm15 import Request, Response

from shared import keys
from shared.config import CacheConfig
from shared.steps import stats
from shared.steps.base import CallNext


def cache_key(backend: str, request: Request) -> str:
    body = json.dumps({"backend": backend, "request": request_to_dict(request)}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class Tier(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


class MemoryTier:
    """Thread-safe LRU bounded by entry count and bytes."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, ttl: float) -> str | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            stored_at, value = hit
            if time.monotonic() - stored_at > ttl:
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        if self.max_items <= 0 or len(value) > self.max_bytes:
            return
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = (time.monotonic(), value)
            self._bytes += len(value)
            while self._data and (len(self._data) > self.max_items or self._bytes > self.max_bytes):
                self._drop(next(iter(self._data)))

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self._bytes -= len(value)

    def __len__(self) -> int:
        return len(self._data)


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
        return value.decode() if value is not None else None

    def put(self, key: str, value: str) -> None:
        try:
            self.redis.set(keys.cache_entry(key), value, ex=self.ttl)
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
            if time.time() - path.stat().st_mtime > self.ttl:
                path.unlink(missing_ok=True)
                return None
            return path.read_text()
        except (OSError, ValueError):
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


class CacheStep:
    name = "cache"

    def __init__(self, backend: str, config: CacheConfig, *, redis_url: str | None, cache_dir: str | None):
        self.backend = backend
        self.config = config
        max_bytes = config.max_size_mb * 1024 * 1024
        self.memory = MemoryTier(config.memory_items, max_bytes)
        if redis_url:
            self.shared: Tier = RedisTier(redis_url, config.ttl_seconds)
            self.shared_kind = "redis"
        else:
            self.shared = DiskTier(cache_dir or default_cache_dir(), config.ttl_seconds, max_bytes)
            self.shared_kind = "disk"

    def __call__(self, request: Request, call_next: CallNext) -> Response:
        key = cache_key(self.backend, request)
        collector = stats.current()
        value = self.memory.get(key, self.config.ttl_seconds)
        if value is None:
            value = self.shared.get(key)
            if value is not None:
                self.memory.put(key, value)
        if value is not None:
            try:
                response = response_from_dict(json.loads(value))
            except (ValueError, TypeError, KeyError):
                response = None
            if response is not None:
                if collector is not None:
                    collector.cache_hits += 1
                return response
        response = call_next(request)
        if response.finish_reason in ("stop", "length"):
            value = json.dumps(response_to_dict(response), separators=(",", ":"))
            self.memory.put(key, value)
            self.shared.put(key, value)
        return response
