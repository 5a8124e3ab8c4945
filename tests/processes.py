"""Run several independent commands at once: a CLI run is mostly its interpreter's imports, and on
two cores a row of them waits half as long side by side."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


def run_at_once(commands: Sequence[tuple[Sequence[str], dict[str, str]]], *, timeout: float = 60,
                cwd: str | None = None) -> list[subprocess.CompletedProcess]:
    """Each (argv, env) started at once; their CompletedProcess (text output) in the same order.
    None may print a Traceback. Whatever is still running when this returns or raises is killed."""
    procs = [subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv, env in commands]
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            assert "Traceback" not in stderr, stderr
            outs.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return outs
