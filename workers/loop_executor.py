"""The default executor of the worker's event loop: two of DSPy's per-call thread hops run inline.

Why: ``dspy.LM.acall`` sends two pieces of work to ``asyncio.to_thread`` on every call, in case
they block: ``prepare`` (it may read local media files when the call is a ``Request``) and
``_price_result`` (the price map's lookup). For an adapter's call (``messages=``, no Request)
``prepare`` reads nothing, and with a custom engine such as ours DSPy prices with no provider,
which returns "unknown" without a lookup (our metrics step prices the call). Each hop costs a
thread wake-up and two GIL hand-offs (~0.1 ms of CPU per item of ~1.5 on the async path). Here
exactly those two cases run on the loop's thread, in the same copied context ``to_thread`` gives
them; everything else (media reads, validation re-runs, users' ``asyncify``, route lookups) still
goes to a thread pool. If DSPy renames either function, both simply go back to threads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def _inline_safe(fn: Callable[..., Any], args: tuple, kwargs: dict) -> bool:
    """``to_thread`` hands the executor ``partial(context.run, func, *args, **kwargs)``: whether
    ``func(*args)`` is one of the two cases above."""
    if not (isinstance(fn, functools.partial) and fn.args and not args and not kwargs):
        return False
    from dspy.clients import execution

    func, *call = fn.args
    if func is getattr(execution, "prepare", None) and len(call) == 4:
        _lm, prompt, messages, options = call
        return prompt is None and isinstance(messages, list) and "request" not in options
    if func is getattr(execution, "_price_result", None) and len(call) == 5:
        return call[3] is None  # provider: none for a custom engine
    return False


class LoopExecutor(ThreadPoolExecutor):
    """A thread pool that runs DSPy's two no-I/O hops of a call inline (see the module doc).
    ``inline`` and ``threaded`` count the work each way (submit is called on the loop's thread)."""

    inline = 0
    threaded = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if not _inline_safe(fn, args, kwargs):
            self.threaded += 1
            return super().submit(fn, *args, **kwargs)
        self.inline += 1
        future: Future = Future()
        try:
            future.set_result(fn())
        except BaseException as exc:  # delivered to the awaiting coroutine, as from a thread
            future.set_exception(exc)
        return future
