"""Per-process caches: one UnifiedDSPyWrapper per (backend, model), one module per program,
one thread pool per backend. Building a wrapper (backend client, step stack, dspy.LM) costs far
more than a call, so a worker process builds each once and reuses it for every chunk.

Caches are keyed by nothing that crosses a fork: ``reset()`` runs in each new pool process.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.config import BackendType, Target, UnifiedConfig, get_settings

_lock = threading.RLock()
_wrappers: dict[tuple, Any] = {}
_modules: dict[tuple, Any] = {}
_executors: dict[str, ThreadPoolExecutor] = {}


def reset() -> None:
    with _lock:
        _wrappers.clear()
        _modules.clear()
        for ex in _executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
        _executors.clear()


def get_wrapper(backend: str, model: str | None, fallbacks: tuple[Target, ...] = ()):
    """``fallbacks``: the targets after this one (one engine over all, shared/engine.py)."""
    key = (backend, model, *fallbacks)
    with _lock:
        w = _wrappers.get(key)
        if w is None:
            from shared.wrapper import UnifiedDSPyWrapper

            # (the wrapper keeps the mock's cache in memory only: CacheConfig.shared)
            w = UnifiedDSPyWrapper(UnifiedConfig(backend=BackendType.parse(backend), model=model, fallbacks=fallbacks))
            _wrappers[key] = w
        return w


def load_program(uri: str):
    """A dspy.Module from a registered program URI (models:/NAME/VERSION). The registry module
    belongs to the MLflow side; without it a program job fails its items with a clear error."""
    try:
        from shared.programs import load_program as _load  # provided by the MLflow registry work
    except ImportError:
        from shared.errors import ConfigurationError

        raise ConfigurationError(f"cannot load program {uri!r}: this worker has no program registry "
                                 "(shared.programs.load_program)") from None
    return _load(uri)


def get_module(backend: str, model: str | None, signature: str | None, program: str | None,
               fallbacks: tuple[Target, ...] = ()):
    """A UnifiedDSPyModule for a job's program on its target chain, cached per process."""
    key = (backend, model, signature or "", program or "", *fallbacks)
    with _lock:
        m = _modules.get(key)
        if m is None:
            wrapper = get_wrapper(backend, model, fallbacks)
            m = wrapper.create_module(load_program(program) if program else signature)
            _modules[key] = m
        return m


def concurrency_for(backend: str) -> int:
    """Items of one chunk in flight at once: 1 for the CPU-bound mock, many for I/O backends."""
    return max(1, int(getattr(get_settings(), f"concurrency_{backend}", 1)))


def executor_for(backend: str) -> ThreadPoolExecutor:
    with _lock:
        ex = _executors.get(backend)
        if ex is None:
            ex = ThreadPoolExecutor(max_workers=concurrency_for(backend), thread_name_prefix=f"tidyq-{backend}")
            _executors[backend] = ex
        return ex
