"""Reads issued in the same event-loop turn share one round trip.

Why: on DSPy's async path one worker process has hundreds of calls in flight on one event loop,
and each cache lookup was its own Redis GET, blocking the loop for a round trip (about a tenth of
the loop's time under I/O-bound load). Here the first read of a turn schedules one batched fetch
(an MGET) for the next turn, and every read made before it runs joins it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


class Coalescer:
    """``await get(key)``: the value ``fetch_many`` returns for key, fetched with the other keys
    asked for in the same loop turn. One pending batch per event loop (loops never share one)."""

    def __init__(self, fetch_many: Callable[[list[str]], Sequence[Any]]):
        self.fetch_many = fetch_many
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[str, asyncio.Future]]] = {}

    async def get(self, key: str) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        batch = self._pending.get(loop)
        if batch is None:
            batch = self._pending[loop] = []
            loop.call_soon(self._run, loop)
        batch.append((key, future))
        return await future

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, [])
        waiting = [(key, future) for key, future in batch if not future.done()]  # cancelled callers drop out
        if not waiting:
            return
        try:
            values = self.fetch_many([key for key, _ in waiting])
        except BaseException as exc:  # each caller sees the error as its own read would have
            for _, future in waiting:
                future.set_exception(exc)
            return
        for (_, future), value in zip(waiting, values, strict=True):
            future.set_result(value)
