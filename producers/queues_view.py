"""`tidyq queues`: a `top`-like view of every queue and the running jobs.

Rates come from the workers' 10-second buckets in Redis (producers/ops_state.py), so one
`--once` read already shows items/s and the error rate of the last minute, on every machine.
"""

from __future__ import annotations

import json
import time
from typing import Literal

from rich.console import Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from producers.formatting import age_text
from producers.ops_state import OpsReader, Snapshot


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * filled + "." * (width - filled)


def render(snap: Snapshot) -> Group:
    queues = Table(title=f"tidyq queues (rates over the last {snap.window_seconds}s)", expand=False)
    justify: Literal["left", "right"]
    for col, justify in (("queue", "left"), ("depth", "right"), ("oldest", "right"), ("workers", "right"),
                         ("procs", "right"), ("items/s", "right"), ("errors", "right")):
        queues.add_column(col, justify=justify)
    for q in snap.queues:
        no_worker = q.workers == 0 and q.depth > 0
        err = "-" if q.error_rate is None else f"{q.error_rate:.2%}"
        queues.add_row(q.name, str(q.depth), age_text(q.oldest_age_seconds),
                       Text(str(q.workers), style="bold red" if no_worker else ""), str(q.processes),
                       f"{q.items_per_second:,.1f}",
                       Text(err, style="red" if q.error_rate and q.error_rate > 0.001 else ""))
    jobs = Table(title="running jobs", expand=False)
    for col, justify in (("job", "left"), ("kind", "left"), ("backend", "left"), ("status", "left"),
                         ("progress", "left"), ("done", "right"), ("failed", "right"), ("items/s", "right")):
        # a job id is never cut: the other columns give way in a narrow terminal
        jobs.add_column(col, justify=justify, no_wrap=col == "job", min_width=32 if col == "job" else None)
    for j in snap.jobs:
        rate = "-" if j.items_per_second is None else f"{j.items_per_second:,.1f}"
        jobs.add_row(j.id, j.kind, j.backend or "-", j.status, f"{_bar(j.fraction)} {j.fraction:4.0%}",
                     f"{j.done}/{j.total}", str(j.failed), rate)
    if not snap.jobs:
        jobs.add_row("(none)", "", "", "", "", "", "", "")
    footer = Text(f"{len(snap.workers)} worker node(s) live; {time.strftime('%H:%M:%S', time.localtime(snap.at))}",
                  style="dim")
    parts = [queues, jobs]
    if snap.breakers:
        breakers = Table(title="circuit breakers and fallbacks per target", expand=False)
        for col, justify in (("target", "left"), ("state", "left"), ("failed/calls", "right"), ("probes", "right"),
                             ("moved off", "right"), ("served as fallback", "right")):
            breakers.add_column(col, justify=justify)
        for b in snap.breakers:
            style = {"open": "bold red", "half_open": "yellow"}.get(b["state"], "")
            moved = ", ".join(f"{r} {n}" for r, n in sorted(b["skipped"].items())) or "0"
            breakers.add_row(b["target"], Text(b["state"], style=style),
                             f"{b['window']['failures']}/{b['window']['calls']}", str(b["probes_in_flight"]), moved,
                             str(b["served_as_fallback"]))
        parts.append(breakers)
    if snap.concurrency:
        caps = Table(title="calls in flight per target (adaptive concurrency)", expand=False)
        for col, justify in (("target", "left"), ("mode", "left"), ("limit", "right"), ("in flight", "right"),
                             ("workers", "right"), ("429s", "right")):
            caps.add_column(col, justify=justify)
        for c in snap.concurrency:
            caps.add_row(c["target"], str(c["mode"]), f"{c['limit']:g}", str(c["inflight"]), str(c["workers"]),
                         str(c["throttles"]))
        parts.append(caps)
    return Group(*parts, footer)


def natural_width(console, view: Group) -> int:
    """The width the view's widest part needs to show every cell in full."""
    return max(Measurement.get(console, console.options.update(width=10_000), part).maximum
               for part in view.renderables)


def run(reader: OpsReader, *, once: bool, as_json: bool, interval: float, window: int, console) -> int:
    if as_json:
        print(json.dumps(reader.snapshot(window=window).to_json(), ensure_ascii=False))
        return 0
    if once:
        # one snapshot for a pipe or a script: as wide as the tables need, so nothing is squeezed or cut
        view = render(reader.snapshot(window=window))
        narrow = console.width
        console.width = max(narrow, natural_width(console, view))
        try:
            console.print(view)
        finally:
            console.width = narrow
        return 0
    from rich.live import Live

    try:
        with Live(render(reader.snapshot(window=window)), console=console, refresh_per_second=4,
                  screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(reader.snapshot(window=window)))
    except KeyboardInterrupt:
        return 0
