"""The step protocol and the engine that runs a list of steps around a backend.

A step is ``step(request, call_next) -> Response`` (httpx/structlog style: a plain callable).
``StepEngine`` is what ``dspy.LM(engine=...)`` receives: DSPy's engine protocol
(``complete``/``stream``/``close``) with our steps, outermost first, around one backend engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from dspy.lm15 import Request, Response, response_to_events

CallNext = Callable[[Request], Response]


class Step(Protocol):
    name: str

    def __call__(self, request: Request, call_next: CallNext) -> Response: ...


class Backend(Protocol):
    """One attempt against one provider; vendor errors mapped to dspy.lm15 errors."""

    name: str

    def complete(self, request: Request) -> Response: ...

    def close(self) -> None: ...


def _bind(step: Step, call_next: CallNext) -> CallNext:
    return lambda request: step(request, call_next)


class StepEngine:
    """DSPy engine = steps (outermost first) composed around a backend's ``complete``."""

    def __init__(self, steps: list[Step], backend: Backend):
        self.steps = list(steps)
        self.backend = backend
        call: CallNext = backend.complete
        for step in reversed(self.steps):
            call = _bind(step, call)
        self._call = call

    def complete(self, request: Request) -> Response:
        return self._call(request)

    def stream(self, request: Request) -> Iterator:
        # Streaming is served from a complete response so caching and retries still apply.
        return response_to_events(self.complete(request))

    def close(self) -> None:
        for step in self.steps:
            close = getattr(step, "close", None)
            if close is not None:
                close()
        self.backend.close()

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]
