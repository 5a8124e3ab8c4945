"""Items whose answer is already in the shared response cache are not sent in a provider batch.

The cache (shared/steps/cache.py) is keyed by the exact request a live call makes. To find that
request without making the call, the item runs through the program once on a copy of the job's LM
whose engine only records the request (and stops the call); the key is then looked up in the job's
cache step, memory first, then Redis. A hit is the answer a live call would have returned from the
cache: parsed back the same way, ``cached`` and free.
"""

from __future__ import annotations

from typing import Any

from shared.economy.requests import Answer
from shared.steps.cache import CacheStep, cache_key


class _Recorded(Exception):
    """Stops the probed call once its request is recorded."""


class _RecordingEngine:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def complete(self, request: Any) -> Any:
        self.requests.append(request)
        raise _Recorded

    def stream(self, request: Any) -> Any:
        return self.complete(request)

    def close(self) -> None:
        pass


def cache_step(wrapper: Any) -> CacheStep | None:
    """The cache step of the job's own target (its first route; shared/engine.py builds them)."""
    return next((s for s in wrapper.routes[0].engine.steps if isinstance(s, CacheStep)), None)


def cached_answer(module: Any, inputs: dict[str, Any]) -> Answer | None:
    """The shared cache's answer for the live call ``inputs`` would make, or None."""
    from dspy.dsp.utils.settings import settings as dspy_settings

    wrapper = module.wrapper
    step = cache_step(wrapper)
    if step is None:
        return None
    engine = _RecordingEngine()
    try:
        with dspy_settings.context(lm=wrapper.lm.copy(engine=engine)):
            module.module(**inputs)
    except Exception:  # _Recorded, or whatever DSPy wrapped it in: the request is what counts
        pass
    if not engine.requests:
        return None
    response = step.cached(cache_key(wrapper.backend_name, engine.requests[0]))
    if response is None or response.text is None:
        return None
    return Answer(response.text, 0, 0)
