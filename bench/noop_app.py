"""The baseline of the round-trip scenario: bare Celery, one no-op task, Redis broker and result
backend, JSON only. BENCH_REDIS_URL names the redis-server."""

import os

from celery import Celery

app = Celery("bench_noop", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"],
             set_as_current=False)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_default_queue="bench.noop", worker_hijack_root_logger=False, result_expires=600)


@app.task(name="bench.noop")
def noop():
    return None
