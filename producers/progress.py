"""Following a job's results with a progress bar: shared by the CLI's --wait and `tidyq demo`."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producers.jsonl import JsonlWriter

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def follow_results(job, total: int, out: str | None, *, timeout: float | None, label: str = "items") -> int:
    """Stream a job's results to ``out`` (or stdout) with a progress bar on stderr.
    Returns how many results were written."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn()]
    started = time.monotonic()
    with JsonlWriter(out) as writer, Progress(*columns, console=_stderr) as progress:
        task = progress.add_task(f"job {job.id[:8]}", total=total, rate="")
        for row in job.results(timeout=timeout):
            writer.write(row)
            if writer.count % 25 == 0 or writer.count == total:
                rate = writer.count / max(1e-6, time.monotonic() - started)
                progress.update(task, completed=writer.count, rate=f"{rate:,.0f} {label}/s")
        progress.update(task, completed=writer.count)
    return writer.count
