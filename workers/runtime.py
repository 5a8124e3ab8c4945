"""Per-process caches: one UnifiedDSPyWrapper per (backend, model), one program per process (a
copy per thread), one thread pool per backend. Building a wrapper (backend client, step stack, dspy.LM) costs far
more than a call, so a worker process builds each once and reuses it for every chunk.

Caches are keyed by nothing that crosses a fork: ``reset()`` runs in each new pool process.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.config import BackendType, Target, UnifiedConfig, get_settings

_lock = threading.RLock()
_wrappers: dict[tuple, Any] = {}
_modules: dict[tuple, Any] = {}  # per thread: see get_module
_programs: dict[str, tuple[Any, BaseException | None]] = {}  # import-path programs, built once
_building: dict[str, threading.Lock] = {}
_executors: dict[str, ThreadPoolExecutor] = {}
_loop: list[asyncio.AbstractEventLoop] = []  # the process's one event loop for async items
_handoff: list[Any] = []  # its LoopHandoff (workers/loop_handoff.py)


def reset() -> None:
    with _lock:
        _wrappers.clear()
        _modules.clear()
        _programs.clear()
        for ex in _executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
        _executors.clear()
        _loop.clear()  # a forked child has no thread running its parent's loop
        _handoff.clear()


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop, run forever by a daemon thread: every chunk of this process
    submits its async items here, so one loop holds all of the process's calls in flight. Its
    default executor runs two of DSPy's per-call hops inline (workers/loop_executor.py)."""
    with _lock:
        if not _loop:
            from workers.loop_executor import LoopExecutor

            loop = asyncio.new_event_loop()
            loop.set_default_executor(LoopExecutor(thread_name_prefix="asyncio"))
            threading.Thread(target=loop.run_forever, name="tidyq-async-items", daemon=True).start()
            _loop.append(loop)
        return _loop[0]


def loop_handoff():
    """Batched submission of coroutines to ``event_loop()`` (workers/loop_handoff.py)."""
    from workers.loop_handoff import LoopHandoff

    loop = event_loop()
    with _lock:
        if not _handoff or _handoff[0].loop is not loop:
            _handoff[:] = [LoopHandoff(loop)]
        return _handoff[0]


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
    """The shared prototype of a job's program: ``pkg.module:Name`` built from the code installed
    here (TIDYQ_PROGRAM_PACKAGES gates the import), or a registered version (models:/...).
    Built once per process. A refusal or bad program is remembered too, so the 1,000 items of a
    program that cannot run fail with the same error without re-importing or re-downloading it."""
    from shared.errors import BadInput, ConfigurationError
    from shared.program_uri import is_import_path

    with _lock:
        cached = _programs.get(uri)
        gate = _building.setdefault(uri, threading.Lock())
    if cached is None:
        with gate:  # threads asking at once wait for the one build
            with _lock:
                cached = _programs.get(uri)
            if cached is None:
                try:
                    if not is_import_path(uri):
                        from shared.programs import load_program as _load

                        return _load(uri)  # loaded versions are cached per version by shared.programs
                    from shared.user_code import load_import_path

                    cached = (load_import_path(uri), None)
                except (BadInput, ConfigurationError) as exc:
                    cached = (None, exc)
                with _lock:
                    _programs[uri] = cached
    program, error = cached
    if error is not None:
        raise copy.copy(error) from None  # a fresh instance per item: threads never share a traceback
    return program


def get_module(backend: str, model: str | None, signature: str | None, program: str | None,
               fallbacks: tuple[Target, ...] = (), copy_key: Any = None):
    """A UnifiedDSPyModule for a job's program on its target chain, built once per process and
    copied once per thread: DSPy modules (users' ones above all) may keep state between calls,
    so threads of a chunk never share one instance (a copy costs about one mock call, once).
    ``copy_key``: which copy, when the caller is not one thread per item (workers/async_items.py
    hands each coroutine in flight a slot of its own). Without DSPy's call history: nobody reads
    it in a worker, and it would keep every job's prompts in the process."""
    owner = threading.get_ident() if copy_key is None else copy_key
    key = (backend, model, signature or "", program or "", *fallbacks, owner)
    with _lock:
        m = _modules.get(key)
    if m is None:
        wrapper = get_wrapper(backend, model, fallbacks)
        prototype = load_program(program) if program else None
        module = prototype.deepcopy() if prototype is not None else signature
        with _lock:
            # a signature has no user code that could read DSPy's LM history: keep none
            m = _modules.setdefault(key, wrapper.create_module(module, keep_history=prototype is not None))
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
