"""The item-level result cache on the worker: one MGET per chunk before any DSPy work, written with the results.

Keys and entries are shared/item_cache.py's. What a key needs from this process is found here, once
per process and program: the program's identity (a registered version: its URI and the MLflow run it
was registered from, so a rebuilt registry never serves another program's answers; an import path:
a hash of the source of its package's loaded modules and of its JSON state, which needs the program
built, as a miss would build it anyway), the resolved target and the LM's generation settings (the
wrapper, built once per process). A signature job's hits need neither the program nor DSPy.

Written: succeeded results the job's own target served (a fallback's answer is another model's;
failures never), with the result write in one round trip (JobStore.record_results). A hit is not
written again: an entry lives its TTL from when it was computed.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import redis

from shared import tracking
from shared.config import Settings, get_settings
from shared.item_cache import canonical_json, endpoint_identity, entry, hit, item_key, scope_digest
from shared.jobs import Item, ItemResult, JobSpec
from shared.program_uri import is_import_path
from shared.telemetry import get_logger
from workers import runtime
from workers.items import served_version

_lock = threading.Lock()
_identities: dict[tuple, str] = {}  # per process: a program's identity never changes while it runs here


def forget_identities() -> None:
    """Compute programs' identities again (after ``runtime.reset()``, when a test changed the code)."""
    with _lock:
        _identities.clear()


def enabled(spec: JobSpec, settings: Settings) -> bool:
    """The job did not opt out, neither cache switch is off, and its backend is one the cache serves."""
    backends = {b.strip() for b in settings.item_cache_backends.split(",") if b.strip()}
    return spec.item_cache and settings.item_cache_enabled and settings.cache_enabled and spec.backend in backends


def _remembered(key: tuple, compute: Callable[[], str]) -> str:
    with _lock:
        known = _identities.get(key)
    if known is None:
        known = compute()
        with _lock:
            _identities[key] = known
    return known


def _registered(served: Any) -> str:
    """A registered version and the run it was registered from (one MLflow read per process)."""
    from shared.registry import get_registry

    def compute() -> str:
        info = get_registry().version_info(served.name, served.version)
        return f"{served.uri}@{info.run_id}:{info.source}"

    return _remembered(("version", get_settings().mlflow_tracking_uri, served.name, served.version), compute)


def code_identity(uri: str) -> str:
    """``pkg.module:Name``: the source of every loaded module of its package and the built program's
    JSON state (demos, instructions). Code elsewhere (another package) is not covered."""
    from shared.program_files import program_state

    def compute() -> str:
        program = runtime.load_program(uri)  # built once per process; a refusal raises (no key)
        package = uri.split(":", 1)[0].split(".", 1)[0]
        digest = hashlib.sha256()
        # by module name, not path: workers with the package installed elsewhere share the entries
        modules = sorted((name, str(m.__file__)) for name, m in list(sys.modules.items())
                         if (name == package or name.startswith(package + ".")) and getattr(m, "__file__", None))
        for name, path in modules:
            with open(path, "rb") as fh:
                digest.update(name.encode() + b"\0" + fh.read() + b"\0")
        digest.update(canonical_json(program_state(program)).encode())
        return f"{uri}@{digest.hexdigest()[:32]}"

    return _remembered(("code", uri), compute)


_ENDPOINT_FIELD = {"direct": "api_base", "gateway": "gateway_url"}  # what else serves the same model name


def generation(spec: JobSpec) -> tuple[str, dict[str, Any]]:
    """The job's own target, resolved (backend:model), and what shapes its calls: the endpoint it is
    served from (a direct target's api_base, a gateway's URL; never a credential), the LM's kwargs,
    the adapter DSPy is configured with (ChatAdapter by default) and DSPy's version."""
    import dspy

    from shared.prompts import default_adapter

    wrapper = runtime.get_wrapper(spec.backend, spec.model, tuple(spec.fallback))
    adapter = type(default_adapter())  # DSPy's configured adapter, else its default ChatAdapter
    adapter_name = f"{adapter.__module__}.{adapter.__qualname__}"
    shaping: dict[str, Any] = {"lm": dict(wrapper.lm.kwargs), "adapter": adapter_name, "dspy": dspy.__version__}
    field = _ENDPOINT_FIELD.get(spec.backend)
    endpoint = endpoint_identity(getattr(wrapper.config, field, None)) if field else None
    if field and endpoint is not None:  # only when set: the keys of a target without one stay as they were
        shaping[field] = endpoint
    return f"{spec.backend}:{wrapper.model or ''}", shaping


class ChunkCache:
    """The item cache of one chunk: the keys of its items to run, the hits, the entries to write."""

    def __init__(self, spec: JobSpec | None = None, keys: dict[str, str] | None = None, ttl: int = 0,
                 served: dict[str, Any] | None = None):
        self.spec, self.keys, self.ttl = spec, keys or {}, ttl
        self.served = served or {}
        self.hits: dict[str, ItemResult] = {}
        self._pending: list[tuple[str, str]] = []

    @classmethod
    def for_items(cls, spec: JobSpec, items: list[Item], settings: Settings) -> ChunkCache:
        """The items' keys; none when the job (opt-out), the backend or the settings turn the cache off.
        An item whose key cannot be found (its program does not load here) just runs."""
        if not items or not enabled(spec, settings):
            return cls()
        log = get_logger(job_id=spec.id)
        try:
            target, settings_of_calls = generation(spec)
        except Exception as exc:  # a target that cannot be built fails each item with its own error
            log.info("item_cache_skipped", reason=type(exc).__name__)
            return cls()
        keys: dict[str, str] = {}
        served_of: dict[str, Any] = {}
        scopes: dict[str, str] = {}
        for item in items:
            try:
                served = served_version(spec, item)
                if served is not None:
                    program = _registered(served)
                elif spec.program and is_import_path(spec.program):
                    program = code_identity(spec.program)
                else:
                    program = f"signature:{spec.signature}"
            except Exception as exc:  # the item runs and reports why its program does not load
                log.info("item_cache_skipped", item=item.custom_id, reason=type(exc).__name__)
                continue
            scope = scopes.get(program)
            if scope is None:
                scope = scopes[program] = scope_digest(program, target, settings_of_calls)
            keys[item.custom_id] = item_key(scope, item.inputs)
            served_of[item.custom_id] = served
        return cls(spec, keys, settings.item_cache_ttl_seconds, served_of)

    def read(self, client: redis.Redis) -> ChunkCache:
        """One MGET per scope (one per chunk, but for a rollout split between two versions), sent in
        one round trip: hits go to ``hits`` (and are not written again). A Redis error is a miss."""
        by_scope: dict[str, list[str]] = {}
        for cid, key in self.keys.items():  # a MGET stays within one {hash tag}: one Cluster slot
            by_scope.setdefault(key[key.index("{"):key.index("}")], []).append(cid)
        if not by_scope:
            return self
        groups = list(by_scope.values())
        try:
            with client.pipeline(transaction=False) as p:
                for ids in groups:
                    p.mget([self.keys[cid] for cid in ids])
                replies = p.execute()
        except redis.RedisError as exc:
            get_logger().warning("item_cache_read_failed", error=str(exc)[:200])
            return self
        for cid, raw in zip([c for ids in groups for c in ids], [v for vs in replies for v in vs], strict=True):
            result = hit(cid, raw)
            if result is not None:
                self.hits[cid] = result
                del self.keys[cid]
        return self

    def answer(self, items: list[Item], handle: Callable[[Item, ItemResult, None], None]) -> list[Item]:
        """Hand each hit to the chunk's result handler (counted, tracked as cached); the items still to run."""
        rest = []
        for item in items:
            result = self.hits.get(item.custom_id)
            if result is None:
                rest.append(item)
                continue
            assert self.spec is not None  # hits exist only for a chunk with keys
            tracking.record_item(self.spec.id, result, None, self.served.get(item.custom_id))
            handle(item, result, None)
        return rest

    def keep(self, result: ItemResult) -> None:
        """A result about to be stored: its entry too, when it is an answer of the job's own target."""
        key = self.keys.get(result.custom_id)
        if key is not None and result.status == "succeeded" and not result.skipped and result.outputs is not None:
            self._pending.append((key, entry(result)))

    def take(self) -> list[tuple[str, str]]:
        """The entries to write with the next result write."""
        out, self._pending = self._pending, []
        return out


def answer_stored(store: Any, spec: JobSpec, items: list[Item], settings: Settings) -> list[Item]:
    """Economy mode: the items the item cache answers are stored at once (they go in no provider
    batch); the items still to send."""
    from shared.dedupe import with_copies

    cache = ChunkCache.for_items(spec, items, settings).read(store.r)
    found: list[tuple[ItemResult, dict | None]] = []

    def handle(item: Item, result: ItemResult, _: None) -> None:
        result.economy = {"from_cache": True}  # as the LM-call cache's answers in economy mode say
        found.extend((each, item.inputs) for each in with_copies(item, result))

    rest = cache.answer(items, handle)
    if found:
        store.record_results(spec.id, found)
    return rest
