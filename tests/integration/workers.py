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
    stop_all(started)


def stop_all(workers: list[LocalWorker], timeout: float = 5) -> None:
    """Stop every worker at once (a warm shutdown takes seconds each, mostly waiting): SIGTERM first
    (a short warm shutdown lets coverage save what the pool processes ran), then SIGKILL to whatever
    of each group is left."""
    import threading

    def stop(worker: LocalWorker) -> None:
        worker.stop(timeout=timeout)
        worker.close()

    threads = [threading.Thread(target=stop, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.fixture
def mock_worker(start_worker):
    """One worker serving every queue with two pool processes."""
    return start_worker(concurrency=2)
