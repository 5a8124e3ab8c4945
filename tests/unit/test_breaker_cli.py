"""`tidyq breaker status|reset` against a real redis-server (exit codes: 0 ok, 2 bad input)."""

from __future__ import annotations

import json

import redis
from typer.testing import CliRunner

from producers.cli import app
from shared.breaker import BreakerSettings, CircuitBreaker, breaker_status

runner = CliRunner()


def open_breaker(url: str, target: str) -> None:
    b = CircuitBreaker(redis.Redis.from_url(url), target, BreakerSettings(min_calls=2, open_seconds=60,
                                                                        max_open_seconds=60))
    for _ in range(2):
        b.record(b.acquire(), "fail")


def test_status_lists_open_breakers_and_reset_closes_them(redis_url):
    target = "bedrock:anthropic.claude-3-haiku-20240307-v1:0"
    open_breaker(redis_url, target)
    res = runner.invoke(app, ["breaker", "status", "--json"])
    assert res.exit_code == 0, res.output
    states = json.loads(res.stdout)
    assert [(s["target"], s["state"]) for s in states] == [(target, "open")]
    res = runner.invoke(app, ["breaker", "reset", target])
    assert res.exit_code == 0, res.output
    assert breaker_status(redis.Redis.from_url(redis_url), target)["state"] == "closed"
    table = runner.invoke(app, ["breaker", "status"])
    assert table.exit_code == 0 and target[:40] in table.stdout and "closed" in table.stdout


def test_reset_of_an_unknown_or_malformed_target_is_bad_input(redis_url):
    res = runner.invoke(app, ["breaker", "reset", "direct:openai/never-called"])
    assert res.exit_code == 2 and "no breaker for 'direct:openai/never-called'" in res.output
    res = runner.invoke(app, ["breaker", "reset", "nope:x"])
    assert res.exit_code == 2 and "unknown backend 'nope'" in res.output
    assert "Traceback" not in res.output
