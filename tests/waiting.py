"""Bounded waiting for tests: poll a predicate until it is truthy or the timeout passes."""

import time


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """The predicate's first truthy value; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
