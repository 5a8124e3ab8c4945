"""URL checks, signatures, progress buckets and backoff of shared/webhooks.py."""

import time

import pytest

from shared.config import Settings
from shared.errors import BadInput, ConfigurationError
from shared.webhooks import check_url, job_webhook_url, progress_event, retry_delay, sign, verify_signature

STRICT = Settings(webhook_allow_private=False)
LOOSE = Settings(webhook_allow_private=True)


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.com/hook", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "only http and https"),
    ("http:///path", "no host"),
    ("https://user:pw@example.com/", "credentials"),
    ("http://127.0.0.1:8080/x", "loopback"),
    ("http://localhost/x", "loopback"),
    ("http://10.1.2.3/x", "private"),
    ("http://192.168.0.7/x", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[::1]:9000/", "loopback"),
    ("http://[fc00::1]/", "private"),
    ("http://0.0.0.0/", "private"),
    ("http://224.0.0.1/", "private"),
    ("http://no-such-host.invalid/", "cannot resolve"),
    ("", "expected an http(s) URL"),
])
def test_refused_urls_say_why(url, reason):
    with pytest.raises(BadInput) as err:
        check_url(url, STRICT)
    assert err.value.where == "webhook_url" and reason in str(err.value)


def test_public_addresses_pass_and_private_ones_only_when_allowed():
    assert check_url("https://93.184.216.34/hook", STRICT) == "https://93.184.216.34/hook"
    assert check_url(" http://127.0.0.1:9/x ", LOOSE) == "http://127.0.0.1:9/x"
    with pytest.raises(BadInput, match="only http"):
        check_url("ftp://127.0.0.1/", LOOSE)  # the scheme rule holds even then


def test_a_job_webhook_needs_the_secret_and_falls_back_to_the_default():
    with pytest.raises(ConfigurationError, match="TIDYQ_WEBHOOK_SECRET"):
        job_webhook_url("http://127.0.0.1/x", LOOSE)
    with_secret = Settings(webhook_allow_private=True, webhook_secret="s3cret-value",
                           webhook_url="http://127.0.0.1:1/default")
    assert job_webhook_url(None, with_secret) == "http://127.0.0.1:1/default"
    assert job_webhook_url(None, Settings()) is None
    with pytest.raises(BadInput) as err:
        job_webhook_url(None, Settings(webhook_secret="s3cret-value", webhook_url="http://10.0.0.1/"))
    assert err.value.where == "TIDYQ_WEBHOOK_URL"


def test_signatures_verify_and_tampering_or_replay_fails():
    key, body, now = b"k3y", b'{"id":"j1"}', int(time.time())
    header = sign(key, body, now)
    assert header.startswith(f"t={now},v1=") and len(header.rpartition("v1=")[2]) == 64
    assert verify_signature(key, header, body)
    assert not verify_signature(key, header, body + b" ")
    assert not verify_signature(b"other", header, body)
    assert not verify_signature(key, sign(key, body, now - 3600), body)  # too old: a replay
    assert not verify_signature(key, "v1=abc", body) and not verify_signature(key, "t=x,v1=abc", body)
    rotated = f"{header},v1={'0' * 64}"  # several v1 values (key rotation): any match counts
    assert verify_signature(key, rotated, body)


def test_progress_buckets_and_backoff():
    assert [progress_event(d, 100, 25) for d in (0, 24, 25, 60, 99, 100)] == \
        [None, None, "job.progress.25", "job.progress.50", "job.progress.75", None]
    assert progress_event(5, 10, 0) is None and progress_event(1, 0, 10) is None
    s = Settings(webhook_retry_base_seconds=10, webhook_retry_max_delay_seconds=60)
    assert [retry_delay(n, s) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
