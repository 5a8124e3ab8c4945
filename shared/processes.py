"""Stopping child processes we started: politely first, then for sure."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen | None, *, timeout: float = 10.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL when ``kill``), wait up to ``timeout``, then SIGKILL and reap."""
    if proc is None or proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
