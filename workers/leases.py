"""Message leases: a live worker renews the visibility of every chunk message it holds.

Why: on Redis, Celery's late ack is emulated (kombu keeps each delivered message in the
``unacked`` hash, scored by delivery time in ``unacked_index``) and an unacked message comes back
only after ``visibility_timeout``. Without renewal that timeout has to exceed the longest chunk
(and every countdown), so a worker killed with ``kill -9`` left its chunks stuck for 15 minutes.
With renewal the timeout is a short lease (TIDYQ_VISIBILITY_TIMEOUT, 20 s): the worker's main
process re-stamps the messages it holds (running, prefetched or waiting for a countdown) every
``visibility_timeout / 4`` seconds, so they never come back while it lives, and the broker's
restore sweep (every ``restore_interval`` seconds, in any live worker) hands a dead worker's
messages to the others within ``visibility_timeout + restore_interval`` of its last renewal.

The renewal uses ``ZADD XX``: a message already acked or already restored is never re-added.
The same beat marks the chunks of those messages as alive in the chunk ledger (shared/ledger.py).
"""

from __future__ import annotations

import threading
import time

from celery import bootsteps

from shared.celery_config import visibility_timeout
from shared.ledger import ChunkLedger, parse_chunk_task_id
from shared.telemetry import get_logger


def held_tags(consumer) -> list:
    """Delivery tags of the messages this worker holds and has not acked yet."""
    task_consumer = getattr(consumer, "task_consumer", None)
    channel = getattr(task_consumer, "channel", None)
    qos = getattr(channel, "qos", None) if channel is not None else None
    if qos is None:
        return []
    for _ in range(3):  # the event loop mutates these while we copy them
        try:
            return [tag for tag in list(qos._delivered) if tag not in qos._dirty]
        except RuntimeError:
            continue
    return []


def held_chunks(consumer) -> list[tuple[str, str]]:
    """(job id, chunk id) of the chunk messages this worker holds (running, prefetched, countdown):
    they are alive, so the ledger sweeper must not send them again."""
    qos = getattr(getattr(getattr(consumer, "task_consumer", None), "channel", None), "qos", None)
    delivered = getattr(qos, "_delivered", None)
    if not delivered:
        return []
    for _ in range(3):  # the event loop mutates it while we copy it
        try:
            messages = list(delivered.values())
            break
        except RuntimeError:
            continue
    else:
        return []
    found = (parse_chunk_task_id((getattr(m, "headers", None) or {}).get("id")) for m in messages)
    return [pair for pair in found if pair is not None]


def renew(client, index_key: str, tags: list, now: float | None = None) -> int:
    """Re-stamp ``tags`` in the broker's unacked index (only those still there)."""
    if not tags:
        return 0
    now = time.time() if now is None else now
    return int(client.zadd(index_key, {tag: now for tag in tags}, xx=True, ch=True) or 0)


def guard_restore_on_lost_connection() -> None:
    """Work around kombu 5.7: when the broker connection is lost, Celery collects the connection
    (dropping the transport's client) and then closes it; the channel's close tries to restore
    the unacked messages through that dropped client and raises AttributeError, which Celery
    treats as unrecoverable: the worker died on a Redis restart. Those messages keep their place
    in the unacked index, so the lease sweep restores them anyway: skip the restore there."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.restore_unacked_once
    if getattr(original, "_tidyq_guarded", False):
        return

    def restore_unacked_once(self, stderr=None):
        try:
            return original(self, stderr)
        except AttributeError:
            if getattr(self.channel.connection, "client", None) is not None:
                raise
            get_logger().warning("unacked_restore_skipped", reason="broker connection lost",
                                 messages=len(self._delivered or ()))
            return None

    restore_unacked_once._tidyq_guarded = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked_once = restore_unacked_once  # type: ignore[method-assign]


class LeaseRenewal(bootsteps.StartStopStep):
    """Consumer step: a daemon thread in the worker's main process renews its message leases.
    A thread (not the event loop's timer) so it also runs under the solo and threads pools."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        guard_restore_on_lost_connection()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, c) -> None:
        from shared.config import get_settings
        from shared.redisconn import get_redis

        self._stop.set()  # a consumer restart (reconnect) replaces the previous thread
        interval = max(0.5, visibility_timeout(get_settings()) / 4)
        client = get_redis(c.app.conf.broker_url)
        index_key = getattr(getattr(getattr(c, "task_consumer", None), "channel", None), "unacked_index_key",
                            "unacked_index")
        ledger = ChunkLedger(client)
        stop = self._stop = threading.Event()

        def loop() -> None:
            log = get_logger()
            while not stop.wait(interval):
                try:
                    renew(client, index_key, held_tags(c))
                    ledger.touch(held_chunks(c))
                except Exception as exc:  # Redis down: the next beat tries again
                    log.warning("lease_renewal_failed", error=str(exc)[:200])

        self._thread = threading.Thread(target=loop, name="tidyq-leases", daemon=True)
        self._thread.start()

    def stop(self, c) -> None:
        """Keep renewing while the consumer restarts or the worker drains its running chunks
        (warm shutdown): the thread reads the current consumer on every beat."""

    def shutdown(self, c) -> None:
        self._stop.set()
