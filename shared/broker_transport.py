"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

Why: kombu's Redis channel builds a new ``redis.Redis`` for every publish, every unacked-message
append and every ack (``Channel.conn_or_acquire``). With redis-py 8 each costs ~75 us of CPU (the
client copies ~170 response callbacks into a case-insensitive dict): three per chunk message, on
the critical path of a single predict (the producer's send, the worker's fetch and its ack; issue
19, docs/performance.md). A ``redis.Redis`` is a thread-safe handle on its connection pool, so the
channel keeps one per pool; the commands, connections and pipelines are kombu's own, unchanged.
The BRPOP/pub-sub client (``asynchronous=True``) was already one per channel and stays kombu's.

``captured_publishes``: a producer's sends inside run Celery's and kombu's whole send path (headers,
serialization, routing) but leave the final Redis command (the LPUSH) to the caller, who sends it
in its own transaction: a job, its ledger entry and its first chunk's message in one round trip
(JobStore.create_job). kombu's own publish batches use the same hook (``_put(_publish_batch=)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlparse

from kombu.transport import redis as kombu_redis

TRANSPORT = "shared.broker_transport:Transport"
# kombu >= 5.7 hands _put a publish batch; an older one would LPUSH at once and ignore the capture
_KOMBU_BATCHES = hasattr(kombu_redis.Channel, "create_publish_batch")

Commands = list[tuple[str, tuple[Any, ...]]]  # (redis-py pipeline method, its arguments)
_captured: ContextVar[Commands | None] = ContextVar("tidyq_captured_publishes", default=None)


class _Capture:
    """What kombu's ``_put`` hands a publish batch: the message's final commands."""

    def __init__(self, commands: Commands):
        self.commands = commands

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


class Channel(kombu_redis.Channel):
    _sync_client = None

    def _put(self, queue, message, **kwargs):
        commands = _captured.get()
        if commands is not None and kwargs.get("_publish_batch") is None:
            kwargs["_publish_batch"] = _Capture(commands)
        return super()._put(queue, message, **kwargs)

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:  # a reset pool gets a new client
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


@contextmanager
def captured_publishes(producer) -> Iterator[Commands | None]:
    """Inside, ``producer``'s sends append their Redis commands to the yielded list instead of
    running them. None when its channel is not ours (another broker scheme): the caller then sends
    as usual, outside this block."""
    if not isinstance(producer.channel, Channel) or not _KOMBU_BATCHES:
        yield None
        return
    commands: Commands = []
    token = _captured.set(commands)
    try:
        yield commands
    finally:
        _captured.reset(token)


def transport_for(url: str) -> str | None:
    """Our transport for a plain ``redis://`` broker; anything else (``rediss://``, sentinel) stays
    with kombu's choice by scheme (None)."""
    return TRANSPORT if urlparse(url).scheme == "redis" else None
