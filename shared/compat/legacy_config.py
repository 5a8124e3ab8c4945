"""How the five legacy entry points' arguments map onto UnifiedConfig: one table, read by both the
compatibility shims (at run time) and `tidyq migrate` (which writes the same mapping as code).

The seed documents name the legacy modules but not their signatures; the shapes below are the
obvious ones and are documented in docs/migrate.md. Keyword spellings seen across the old wrappers
are accepted as aliases (``model_id`` and ``model_name`` for ``model``, ``region_name`` for
``region``, ``enable_caching`` for ``cache.enabled``, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigurationError

# old keyword -> UnifiedConfig field, or "<part>.<field>" for RetryConfig/CacheConfig/ValidationConfig.
KEYWORDS: dict[str, str] = {
    "model": "model", "model_id": "model", "model_name": "model",
    "backend": "backend",
    "temperature": "temperature", "max_tokens": "max_tokens", "timeout": "timeout",
    "api_key": "api_key", "api_base": "api_base", "base_url": "api_base",
    "gateway_url": "gateway_url", "gateway_uri": "gateway_url",
    "region": "region", "region_name": "region", "aws_region": "region",
    "max_retries": "retry.max_retries", "retry_delay": "retry.base_delay", "base_delay": "retry.base_delay",
    "backoff_factor": "retry.backoff_factor",
    "enable_caching": "cache.enabled", "enable_cache": "cache.enabled", "cache_enabled": "cache.enabled",
    "use_cache": "cache.enabled", "cache_ttl": "cache.ttl_seconds", "cache_ttl_seconds": "cache.ttl_seconds",
    "cache_max_size_mb": "cache.max_size_mb",
    "min_length": "validation.min_length", "max_length": "validation.max_length",
    "required_keywords": "validation.required_keywords",
}

PART_CLASSES = {"retry": "RetryConfig", "cache": "CacheConfig", "validation": "ValidationConfig"}


@dataclass(frozen=True)
class EntryPoint:
    """One legacy entry point: where it lived, its positional parameters, its default backend
    (None: the environment decides, i.e. AUTO) and what it produces."""

    module: str
    name: str
    positional: tuple[str, ...]
    default_backend: str | None
    kind: str  # "wrapper" | "configure" | "module"


ENTRY_POINTS: dict[str, EntryPoint] = {
    e.name: e
    for e in (
        EntryPoint("tidyllm.dspy_enhanced", "DSPyEnhancedWrapper", ("model",), None, "wrapper"),
        EntryPoint("tidyllm.dspy_gateway_backend", "configure_dspy_with_gateway", ("model", "gateway_url"), "gateway",
                   "configure"),
        EntryPoint("tidyllm.dspy_bedrock_enhanced", "DSPyBedrockEnhancedWrapper", ("model", "region"), "bedrock",
                   "wrapper"),
        EntryPoint("tidyllm.dspy_wrapper", "DSPyWrapper", ("model",), "direct", "wrapper"),
        EntryPoint("tidyllm.base_module", "DynamicModule", ("signature", "module_type"), None, "module"),
    )
}
LEGACY_MODULES = {e.module: e for e in ENTRY_POINTS.values()}

# Methods of the legacy wrapper objects and what they become on UnifiedDSPyWrapper.
SAME_METHODS = ("create_module", "get_info", "close")
SAME_ATTRIBUTES = ("config", "lm", "backend_name", "model")

# DynamicModule(signature, module_type=...) -> the plain DSPy module it built.
MODULE_TYPES = {"predict": "Predict", "chain_of_thought": "ChainOfThought", "cot": "ChainOfThought",
                "chainofthought": "ChainOfThought"}


def bind(entry: EntryPoint, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional + keyword legacy arguments -> {canonical keyword: value}. Unknown ones are errors."""
    if len(args) > len(entry.positional):
        raise ConfigurationError(f"{entry.name} takes at most {len(entry.positional)} positional argument(s)")
    bound = dict(zip(entry.positional, args, strict=False))
    for key, value in kwargs.items():
        if entry.kind != "module" and key not in KEYWORDS:
            raise ConfigurationError(f"{entry.name}: unknown argument {key!r}; known: {', '.join(sorted(KEYWORDS))}")
        if key in bound:
            raise ConfigurationError(f"{entry.name}: argument {key!r} given twice")
        bound[key] = value
    return bound


def env_backend(default: str | None) -> str | None:
    """The backend a migrated program uses: TIDYQ_BACKEND when set, else the legacy default."""
    return os.environ.get("TIDYQ_BACKEND", default) if default else None


def unified_config_kwargs(entry: EntryPoint, bound: dict[str, Any]) -> dict[str, Any]:
    """Bound legacy arguments -> UnifiedConfig.from_env(**kwargs) arguments (parts as dicts)."""
    out: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    default_backend = entry.default_backend
    for key, value in bound.items():
        target = KEYWORDS[key]
        if target == "backend":
            default_backend = getattr(value, "value", value)
            continue
        if "." in target:
            part, name = target.split(".", 1)
            parts.setdefault(part, {})[name] = value
        else:
            out[target] = value
    backend = env_backend(default_backend)
    if backend:
        out["backend"] = backend
    out.update(parts)
    return out


def build_config(entry: EntryPoint, args: tuple, kwargs: dict[str, Any]):
    """The UnifiedConfig a legacy call stands for (backend: TIDYQ_BACKEND, else the legacy default)."""
    from shared.config import CacheConfig, RetryConfig, UnifiedConfig, ValidationConfig

    part_types = {"retry": RetryConfig, "cache": CacheConfig, "validation": ValidationConfig}
    values = unified_config_kwargs(entry, bind(entry, args, kwargs))
    for part, cls in part_types.items():
        if part in values:
            if part == "validation" and values[part].get("required_keywords") is not None:
                values[part]["required_keywords"] = tuple(values[part]["required_keywords"])
            values[part] = cls(**values[part])
    return UnifiedConfig.from_env(**values)
