"""shared/broker_transport.py on a real redis-server: kombu's Redis channel with one redis-py client
per channel. Sends and acks build no client per command (kombu's own channel built one per publish,
unacked append and ack, ~75 us each with redis-py 8) and the message on the queue is kombu's."""

from __future__ import annotations

import base64
import json

import redis

from shared import keys
from shared.broker_transport import TRANSPORT, captured_publishes, transport_for
from shared.celery_config import celery_app
from shared.queues import CHUNK_TASK


class CountingInit:
    """Counts redis.Redis constructions (redis-py's class, wrapped for the test's duration)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = redis.Redis.__init__

        def init(client, *args, **kwargs):
            self.count += 1
            original(client, *args, **kwargs)

        monkeypatch.setattr(redis.Redis, "__init__", init)


def test_plain_redis_urls_get_our_transport_and_others_keep_kombus():
    assert transport_for("redis://127.0.0.1:6379/0") == TRANSPORT
    assert transport_for("rediss://127.0.0.1:6380/0") is None
    assert transport_for("sentinel://127.0.0.1:26379") is None
    assert celery_app("redis://127.0.0.1:1/0").conf.broker_transport == TRANSPORT


def test_sends_reuse_one_client_and_the_message_is_kombus(redis_url, monkeypatch):
    app = celery_app(redis_url)
    payload = {"job": {"id": "j1", "backend": "mock"}, "chunk": 0, "items": [], "requeues": 0}
    with app.producer_or_acquire() as producer:
        app.send_task(CHUNK_TASK, args=[payload], queue="predict.mock", producer=producer, task_id="t0")
        counting = CountingInit(monkeypatch)
        for i in range(20):
            app.send_task(CHUNK_TASK, args=[payload], queue="predict.mock", producer=producer, task_id=f"t{i + 1}")
        assert counting.count == 0  # kombu's own channel: one per send
        channel = producer.channel
        assert channel._create_client() is channel._create_client()
        assert channel._create_client().connection_pool is channel.pool
    r = redis.Redis.from_url(redis_url)
    raw = r.lrange("predict.mock", 0, -1)
    assert len(raw) == 21
    envelope = json.loads(raw[-1])  # LPUSH: the first send is the last element
    assert envelope["headers"]["id"] == "t0"
    assert envelope["properties"]["delivery_info"]["routing_key"] == "predict.mock"
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert args == [payload] and kwargs == {}
    app.close()


def test_a_consumer_acks_through_the_kept_client(redis_url):
    """Fetch (unacked bookkeeping) and ack run on the kept client: the unacked hash empties."""
    app = celery_app(redis_url)
    app.send_task(CHUNK_TASK, args=[{"x": 1}], queue="predict.mock", task_id="t-ack")
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("predict.mock")
        message = queue.get(timeout=5)
        r = redis.Redis.from_url(redis_url)
        assert r.hlen("unacked") == 1
        message.ack()
        assert r.hlen("unacked") == 0
        assert type(conn.default_channel).__module__ == "shared.broker_transport"
        queue.close()
    app.close()


def _envelope(raw: bytes | str) -> dict:
    """A queued message without what differs per send (kombu's delivery tag)."""
    envelope = json.loads(raw)
    envelope["properties"].pop("delivery_tag")
    return envelope


def test_a_captured_send_is_celerys_message_left_for_the_callers_transaction(redis_url):
    app = celery_app(redis_url)
    r = redis.Redis.from_url(redis_url)
    payload = {"job": {"id": "j2", "backend": "mock"}, "chunk": 0, "items": [], "requeues": 0}
    options = {"queue": "predict.mock", "task_id": "t-cap", "shadow": "shown", "argsrepr": "(j2)", "kwargsrepr": "{}"}
    with app.producer_or_acquire() as producer:
        app.send_task(CHUNK_TASK, args=[payload], producer=producer, **options)
        sent = r.rpop("predict.mock")
        with captured_publishes(producer) as commands:
            app.send_task(CHUNK_TASK, args=[payload], producer=producer, **options)
        assert r.llen("predict.mock") == 0  # nothing sent: the LPUSH is the caller's
    assert [(name, args[0]) for name, args in commands] == [("lpush", "predict.mock")]
    assert _envelope(commands[0][1][1]) == _envelope(sent)
    with r.pipeline(transaction=True) as pipe:
        for name, args in commands:
            getattr(pipe, name)(*args)
        pipe.execute()
    assert _envelope(r.rpop("predict.mock")) == _envelope(sent)
    app.send_task(CHUNK_TASK, args=[payload], **options)  # outside the block: sent as usual
    assert r.llen("predict.mock") == 1
    app.close()


def test_a_single_predict_is_one_transaction_after_its_subscription(redis_url):
    """The job, its first chunk's ledger entry and its message in one MULTI (no worker can take the
    message before the job exists), the SUBSCRIBE for its result before it; nothing else is sent."""
    from producers import Client
    from shared.store import JobStore

    client = Client(redis_url, on_warning=lambda _: None)
    JobStore.from_url(redis_url).mark_worker_ready("w1@test", ["predict.mock"], 1)
    client.submit_predict("question -> answer", {"question": "warm?"}, backend="mock")  # live-worker view read
    r = redis.Redis.from_url(redis_url, socket_timeout=5)
    with r.monitor() as monitor:
        job = client.submit_predict("question -> answer", {"question": "2+2?"}, backend="mock")
        seen: list[str] = []
        while "EXEC" not in seen:
            seen.append(monitor.next_command()["command"].split(" ", 1)[0].upper())
    multi = seen.index("MULTI")
    assert "SUBSCRIBE" in seen[:multi] and seen[-2:] == ["LPUSH", "EXEC"]
    assert seen.count("LPUSH") == 1 and seen.count("MULTI") == 1
    assert r.llen("predict.mock") == 2 and r.hexists(keys.job_ledger(job.id), "p:0")
