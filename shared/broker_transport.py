"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

Why: kombu's Redis channel builds a new ``redis.Redis`` for every publish, every unacked-message
append and every ack (``Channel.conn_or_acquire``). With redis-py 8 each costs ~75 us of CPU (the
client copies ~170 response callbacks into a case-insensitive dict): three per chunk message, on
the critical path of a single predict (the producer's send, the worker's fetch and its ack; issue
19, docs/performance.md). A ``redis.Redis`` is a thread-safe handle on its connection pool, so the
channel keeps one per pool; the commands, connections and pipelines are kombu's own, unchanged.
The BRPOP/pub-sub client (``asynchronous=True``) was already one per channel and stays kombu's.
"""

from __future__ import annotations

from urllib.parse import urlparse

from kombu.transport import redis as kombu_redis

TRANSPORT = "shared.broker_transport:Transport"


class Channel(kombu_redis.Channel):
    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:  # a reset pool gets a new client
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(url: str) -> str | None:
    """Our transport for a plain ``redis://`` broker; anything else (``rediss://``, sentinel) stays
    with kombu's choice by scheme (None)."""
    return TRANSPORT if urlparse(url).scheme == "redis" else None
