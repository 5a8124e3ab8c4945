"""Shared fixtures: a real redis-server for the whole session, flushed per test.

Helpers' fixture modules are registered in ``pytest_plugins`` below.
"""

import os
import signal

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# A suite started in the background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and
# every process it starts would too: the tests that press Ctrl-C on a CLI (demo, queues --interval)
# would then wait for an interrupt that never comes. Ctrl-C means Ctrl-C here, however pytest was started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "tidyq-test-dspy-cache"))

from shared.redis_server import RedisServer  # noqa: E402

pytest_plugins: list[str] = ["tests.fakes.fixtures", "tests.fakes.mlflow_gateway", "tests.integration.workers",
                             "tests.user_programs_support"]


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server, monkeypatch):
    """A clean database on the session's redis-server, also exported as TIDYQ_REDIS_URL."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    monkeypatch.setenv("TIDYQ_REDIS_URL", redis_server.url)
    return redis_server.url
