"""`tidyq jobs`: the recent jobs, newest first, from the jobs index (producers/job_overview.py).

The table is plain text, one job a line, the full id first: nothing is cut to fit a terminal or
an 80-column pipe (`tidyq jobs | grep running | cut -c1-32` gives ids that work).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from producers.cli import app, cli_errors, err
from producers.formatting import cost_text, rate_text, started_text, target_text
from producers.job_overview import JobRow, JobsReader
from shared.errors import BadInput
from shared.jobs import JobKind, JobState

_COLUMNS = (("ID", 32), ("KIND", 8), ("STATUS", 10), ("DONE/TOTAL", 13), ("FAILED", 7), ("ITEMS/S", 9),
            ("COST", 10), ("STARTED (UTC)", 19))


def parse_statuses(values: list[str] | None) -> list[str] | None:
    """--status values (repeatable or comma-separated), checked against the job states."""
    names = [part.strip().lower() for v in values or [] for part in v.split(",") if part.strip()]
    known = [s.value for s in JobState]
    for name in names:
        if name not in known:
            raise BadInput(f"unknown status {name!r}; expected one of: {', '.join(known)}", where="--status")
    return names or None


def parse_kind(value: str | None) -> str | None:
    if value is None:
        return None
    known = [k.value for k in JobKind]
    if value.strip().lower() not in known:
        raise BadInput(f"unknown kind {value!r}; expected one of: {', '.join(known)}", where="--kind")
    return value.strip().lower()


def table_lines(rows: list[JobRow]) -> list[str]:
    """Header and one line per job; fixed columns, then backend:model last (never truncated)."""
    head = " ".join(f"{name:<{width}}" for name, width in _COLUMNS) + " BACKEND:MODEL"
    lines = [head]
    for r in rows:
        cells = (r.id, r.kind, r.status, f"{r.done}/{r.total}", str(r.failed),
                 rate_text(r.items_per_second), cost_text(r.cost_usd),
                 started_text(r.started_at))
        fixed = " ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, _COLUMNS, strict=True))
        lines.append(f"{fixed} {target_text(r.backend, r.model)}")
    return lines


@app.command()
def jobs(
    status: Annotated[list[str] | None, typer.Option(
        "--status", help="only jobs in this state (repeatable or comma-separated): queued, running, completed, "
                         "failed, cancelling, cancelled")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="predict, batch or optimize")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="at most this many jobs")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array of the jobs")] = False,
):
    """Recent jobs, newest first: id, kind, status, counts, items/s, cost, start time, backend/model."""
    with cli_errors():
        statuses, kind_name = parse_statuses(status), parse_kind(kind)
        rows = JobsReader.from_settings().rows(statuses=statuses, kind=kind_name, limit=limit, with_errors=as_json)
        if as_json:
            typer.echo(json.dumps([r.to_json() for r in rows], ensure_ascii=False))
            return
        if not rows:
            err.print("tidyq: no jobs" + (f" in state {', '.join(statuses)}" if statuses else ""), markup=False)
            return
        for line in table_lines(rows):
            typer.echo(line)
