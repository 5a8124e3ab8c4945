"""The item-level result cache's keys and entries: one finished item's outputs, found again without DSPy.

Why beside the LM-call cache (shared/steps/cache.py): that one is keyed by the exact request, so a
hit still pays DSPy's adapter formatting and parsing per item. This one is keyed by what decides an
item's answer, so a second run of a job (or a twin in another job) is one MGET per chunk:

- program identity: the signature string, a registered version (``models:/NAME/N`` and the MLflow
  run it was registered from), or for ``pkg.module:Name`` a hash of its package's source and its
  JSON state (workers/item_cache.py computes it);
- the target ``backend:model`` (resolved: the worker's default model counts) and its endpoint
  (``api_base``, ``gateway_url``, normalised by ``endpoint_identity``; never a credential): one model
  name served by two hosts is two targets;
- generation settings: the LM's kwargs (temperature, max_tokens, n, ...), the adapter, DSPy's version;
- the inputs, whatever their key order.

The first three make the *scope*, a {hash tag} in the key (shared/keys.py): one chunk's keys share a
Redis Cluster slot. Values are JSON, never pickle.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared import keys
from shared.dedupe import inputs_digest
from shared.jobs import ItemResult


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint_identity(url: str | None) -> str | None:
    """An endpoint URL as the cache key sees it: scheme and host lower-cased, the default port and
    trailing slashes dropped; user info, query and fragment left out (they may carry a key)."""
    if not url or not url.strip():
        return None
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a port number: keep the URL's own text for it
        port = None
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def scope_digest(program: str, target: str, generation: dict[str, Any]) -> str:
    """What every item of one (program version, target, generation settings) shares."""
    body = canonical_json({"program": program, "target": target, "generation": generation})
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def item_key(scope: str, inputs: dict[str, Any]) -> str:
    """The Redis key of one item's cached answer."""
    return keys.item_result(scope, inputs_digest(inputs).hex())


def entry(result: ItemResult) -> str:
    """What is kept of a succeeded result: its answer and who gave it (never its custom_id or cost)."""
    return canonical_json({"outputs": result.outputs, "backend": result.backend, "model": result.model})


def hit(custom_id: str, raw: bytes | str | None) -> ItemResult | None:
    """A stored entry as this item's result: cached, free, no attempt; None for a miss or a bad entry."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return ItemResult(custom_id=custom_id, status="succeeded", outputs=data["outputs"], backend=data["backend"],
                          model=data["model"], cached=True, cost_usd=0.0, attempts=0, latency_ms=0.0)
    except (ValueError, TypeError, KeyError):
        return None
