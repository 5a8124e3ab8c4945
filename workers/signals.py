"""Worker boot: JSON logs in every process, readiness recorded in Redis, caches per process.

Readiness goes to Redis (shared.store) so the demo, the tests and `tidyq doctor` can wait for a
worker that really consumes its queues instead of sleeping or parsing log text.
"""

from __future__ import annotations

import os

from celery import signals

from shared.config import get_settings
from shared.telemetry import configure_logging, get_logger


@signals.worker_init.connect
def _on_worker_init(sender=None, **_):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    configure_logging()
    from shared.redisconn import ride_out_outages

    ride_out_outages()  # pool processes inherit it: a Redis restart delays chunks, never fails them


@signals.worker_process_init.connect
def _on_process_init(sender=None, **_):
    # A forked child must not reuse the parent's wrappers, executors or sockets.
    configure_logging()
    from shared import tracking
    from workers import runtime

    runtime.reset()
    tracking.warm_up()  # the first chunk of a job creates its MLflow run: have the client ready
    from workers.gc_tuning import tune_gc

    tune_gc(get_settings().gc_gen0_threshold)  # last: what was imported above is frozen too


def _consumed_queues(consumer) -> list[str]:
    consume_from = consumer.app.amqp.queues.consume_from
    names = consume_from.keys() if consume_from else consumer.app.amqp.queues.keys()
    return sorted(names)


@signals.worker_ready.connect
def _on_worker_ready(sender=None, **_):
    from shared.store import JobStore
    from workers.celery_app import broker_url

    queues = _consumed_queues(sender)
    try:
        JobStore.from_url(broker_url()).mark_worker_ready(sender.hostname, queues, os.getpid())
    except Exception as exc:  # readiness is informative; never stop a worker over it
        get_logger().warning("worker_ready_not_recorded", error=str(exc))
    get_logger(worker=sender.hostname).info("worker_ready", queues=queues)


@signals.worker_shutdown.connect
def _on_worker_shutdown(sender=None, **_):
    from shared.store import JobStore
    from workers.celery_app import broker_url

    try:
        JobStore.from_url(broker_url()).remove_worker(sender.hostname)
    except Exception:
        pass
