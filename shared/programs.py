"""Serving registered program versions: which version an item runs, loaded once per process.

The pieces live in their own modules (re-exported here for callers of the older names):
``shared.program_uri`` parses program strings, ``shared.program_files`` reads and writes a
version's files (spec.json + program.json [+ program.py]; never pickle), ``shared.user_code``
gates and runs users' code, ``shared.registry`` talks to MLflow. This module only decides the
version of an item (rollout split) and keeps loaded versions in a bounded LRU.

URIs: ``models:/NAME/VERSION`` (one version), ``models:/NAME@ALIAS`` and the bare ``NAME`` (= the
``live`` alias: what a rollout splits between live and candidate).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.program_files import (
    KINDS,
    SPEC_FILE,
    SPEC_FORMAT,
    STATE_FILE,
    ProgramSpec,
    demos_of,
    load_program_dir,
    program_state,
    save_program,
    signature_text,
    spec_for,
)
from shared.program_uri import CANDIDATE_ALIAS, LIVE_ALIAS, ProgramRef, check_name, parse_program_uri
from shared.registry import get_registry

__all__ = ["CANDIDATE_ALIAS", "KINDS", "LIVE_ALIAS", "SPEC_FILE", "SPEC_FORMAT", "STATE_FILE", "ProgramRef",
           "ProgramSpec", "ResolvedProgram", "VersionCache", "check_name", "demos_of", "load_program",
           "load_program_dir", "load_version", "load_version_with_spec", "parse_program_uri", "program_state",
           "reset_cache", "resolve_program", "save_program", "signature_text", "spec_for", "version_cache"]


# --- bounded per-process cache of loaded versions ----------------------------------------------

class VersionCache:
    """LRU of loaded program versions keyed (name, version); one load per key even when many
    threads ask at once. A version's content never changes, so entries never go stale."""

    def __init__(self, maxsize: int):
        self.maxsize = max(1, maxsize)
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self.loads = 0

    def get(self, key: tuple[str, int], loader: Callable[[], Any]):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = loader()
            with self._lock:
                self.loads += 1
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
            return value

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache: VersionCache | None = None
_cache_lock = threading.Lock()


def version_cache() -> VersionCache:
    global _cache
    with _cache_lock:
        if _cache is None:
            from shared.config import get_settings

            _cache = VersionCache(get_settings().program_cache_size)
        return _cache


def reset_cache() -> None:
    """Forget loaded versions (a forked worker process starts empty)."""
    global _cache
    with _cache_lock:
        _cache = None


# --- what the queue calls -----------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedProgram:
    """The concrete version an item runs: ``uri`` is always models:/NAME/VERSION. ``role`` is
    'live' or 'candidate' for rollout-routed items, else None."""

    name: str
    version: int
    role: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_program(uri: str, item_id: str | None = None, *, registry=None) -> ResolvedProgram:
    """Which version serves this item. ``models:/NAME@live`` and ``NAME`` follow the rollout
    (split by a hash of ``item_id``); other aliases resolve through the registry; versions as is."""
    ref = parse_program_uri(uri)
    if ref.version is not None:
        return ResolvedProgram(ref.name, ref.version)
    reg = registry or get_registry()
    if ref.follows_rollout:
        from shared.rollout import choose

        state = reg.rollout_state(ref.name)
        version, role = choose(state, ref.name, item_id or "")
        return ResolvedProgram(ref.name, version, role)
    assert ref.alias is not None  # a reference without a version has an alias
    return ResolvedProgram(ref.name, reg.alias_version(ref.name, ref.alias))


def load_version_with_spec(name: str, version: int, *, registry=None) -> tuple[Any, ProgramSpec]:
    """One registered version's dspy.Module and spec, loaded once per process (bounded LRU)."""
    return version_cache().get((name, version),
                               lambda: (registry or get_registry()).load_version_with_spec(name, version))


def load_version(name: str, version: int, *, registry=None):
    """The dspy.Module of one registered version (shared: callers that mutate it deep-copy it)."""
    return load_version_with_spec(name, version, registry=registry)[0]


def load_program(uri: str, item_id: str | None = None, *, registry=None):
    """A dspy.Module for a program URI (workers.runtime calls this). Without an item id, an
    alias URI resolves to the live version (use :func:`resolve_program` per item for rollout)."""
    resolved = resolve_program(uri, item_id, registry=registry)
    return load_version(resolved.name, resolved.version, registry=registry)
