"""Values memoised on the environment (shared/environ.py) must still follow every change at once:
the settings a worker reads per chunk and the secrets every log line is redacted with."""

from __future__ import annotations

import io
import json
import os
from unittest import mock

from shared import telemetry
from shared.config import get_settings
from shared.environ import EnvMemo


def test_a_memo_recomputes_only_when_the_environment_changed(monkeypatch):
    calls = []
    memo = EnvMemo(lambda: calls.append(os.environ.get("TIDYQ_T_ENVMEMO")) or len(calls))
    first = memo.get()
    assert memo.get() == first and len(calls) == 1  # unchanged: no recompute
    monkeypatch.setenv("TIDYQ_T_ENVMEMO", "a")
    assert memo.get() == first + 1 and calls[-1] == "a"
    monkeypatch.setenv("TIDYQ_T_ENVMEMO", "b")  # same keys, another value
    assert memo.get() == first + 2 and calls[-1] == "b"
    with mock.patch.dict(os.environ, {"UNRELATED_T_ENVMEMO": "1"}):
        assert memo.get() == first + 3
    monkeypatch.delenv("TIDYQ_T_ENVMEMO")
    assert memo.get() == first + 4 and calls[-1] is None
    assert memo.get() == first + 4


def test_a_memo_without_the_raw_environment_computes_every_time(monkeypatch):
    memo = EnvMemo(lambda: object())
    monkeypatch.setattr(os, "environ", dict(os.environ))  # a plain dict: nothing to compare cheaply
    assert memo.get() is not memo.get()


def test_settings_follow_a_tidyq_variable_at_once(monkeypatch):
    monkeypatch.setenv("TIDYQ_RESULTS_FLUSH_ITEMS", "7")
    assert get_settings().results_flush_items == 7
    assert get_settings() is get_settings()
    monkeypatch.setenv("TIDYQ_RESULTS_FLUSH_ITEMS", "9")
    assert get_settings().results_flush_items == 9
    before = get_settings()
    monkeypatch.setenv("NOT_TIDYQ_T_ENVMEMO", "x")  # another variable: the same settings object
    assert get_settings() is before


def test_a_secret_set_after_the_first_log_line_is_still_masked(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(telemetry, "_configured", False)
    telemetry.configure_logging(stream=out)
    try:
        log = telemetry.get_logger(job_id="j")
        log.info("before", note="nothing secret")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-envmemo-secret-123")
        log.info("after", note="key sk-envmemo-secret-123 leaked", url="redis://u:hunter22@h:6379/0",
                 api_key="plain", items=1, stopped=None)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert lines[-1]["note"] == "key *** leaked"
        assert lines[-1]["url"] == "redis://u:***@h:6379/0"
        assert lines[-1]["api_key"] == "***" and lines[-1]["items"] == 1 and lines[-1]["stopped"] is None
        monkeypatch.delenv("OPENAI_API_KEY")
        assert telemetry.redact("sk-envmemo-secret-123") == "sk-envmemo-secret-123"  # gone: no longer masked
    finally:
        telemetry.configure_logging()
