"""Fixtures that run real `celery -A workers worker` processes (prefork pool) against the test
redis-server. Each worker is stopped with its whole process group at teardown, also on failure.

    def test_x(redis_url, start_worker):
        start_worker(queues=["predict.mock"], concurrency=2, env={"TIDYQ_CHUNK_SIZE": "10"})
"""

from __future__ import annotations

import pytest

from producers.local_worker import LocalWorker


@pytest.fixture
def start_worker(redis_url, tmp_path):
    """Factory: start_worker(queues=None, concurrency=1, env=None) -> a ready LocalWorker."""
    started: list[LocalWorker] = []

    def start(queues=None, concurrency: int = 1, env: dict | None = None, timeout: float = 60.0) -> LocalWorker:
        worker = LocalWorker(redis_url, queues=queues, concurrency=concurrency, env=env,
                             log_path=tmp_path / f"worker-{len(started)}.log", loglevel="INFO")
        started.append(worker)
        return worker.start(timeout=timeout)

    yield start
    for worker in started:
        # SIGTERM first (a short warm shutdown lets coverage save what the pool processes ran),
        # then SIGKILL to whatever of the group is left
        worker.stop(timeout=5)
        worker.close()


@pytest.fixture
def mock_worker(start_worker):
    """One worker serving every queue with two pool processes."""
    return start_worker(concurrency=2)
