"""Operations commands of the ``tidyq`` CLI: doctor, queues, metrics.

Registered on the shared typer app (producers/commands/ops.py imports this module).
"""

from __future__ import annotations

import typer
from rich.console import Console

from producers.cli import EXIT_BAD_INPUT, app, cli_errors, err
from shared.errors import BadInput
from shared.queues import ALL_QUEUES, PREDICT_QUEUES


def _check_queues(queues: list[str] | None) -> list[str] | None:
    for q in queues or []:
        if q not in ALL_QUEUES:
            raise BadInput(f"unknown queue {q!r}; expected one of: {', '.join(ALL_QUEUES)}", where="--queue")
    return queues or None


@app.command()
def doctor(
    queue: list[str] | None = typer.Option(None, "--queue", "-q", help="queues that must have a worker "
                                              "(default: all five)"),
    backend: list[str] | None = typer.Option(None, "--backend", "-b", help="backends to probe (default: every "
                                                "backend whose queue has a live worker)"),
    timeout: float = typer.Option(30.0, "--timeout", help="seconds each backend probe may take"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
):
    """Check the deployment (versions, Redis and its persistence, workers per queue, MLflow, a tiny
    probe per backend) and print a table. Exit 0 when all pass, 1 when one fails."""
    import json

    from producers import doctor as doc

    with cli_errors():
        queues = _check_queues(queue)
        for b in backend or []:
            if b not in PREDICT_QUEUES:
                raise BadInput(f"unknown backend {b!r}; expected one of: {', '.join(PREDICT_QUEUES)}",
                               where="--backend")
        rows = doc.run_checks(queues=queues, backends=backend, probe_timeout=timeout)
        if as_json:
            typer.echo(json.dumps({"ok": doc.exit_code(rows) == 0, "checks": doc.rows_json(rows)}, ensure_ascii=False))
        else:
            doc.render(rows, Console(highlight=False))
        raise typer.Exit(doc.exit_code(rows))


@app.command()
def queues(
    once: bool = typer.Option(False, "--once", help="print one snapshot and exit (for scripts)"),
    as_json: bool = typer.Option(False, "--json", help="print one snapshot as JSON and exit"),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="seconds between refreshes"),
    window: int = typer.Option(60, "--window", min=10, max=600, help="seconds the rates are computed over"),
):
    """A live view of each queue (depth, oldest item, workers, items/s, errors) and the running jobs."""
    from producers.ops_state import OpsReader
    from producers.queues_view import run

    with cli_errors():
        raise typer.Exit(run(OpsReader.from_settings(), once=once, as_json=as_json, interval=interval, window=window,
                             console=Console(highlight=False)))


@app.command()
def metrics(
    port: int | None = typer.Option(None, "--port", help="listen port (default TIDYQ_METRICS_PORT, 9808)"),
    host: str = typer.Option("127.0.0.1", "--host", help="listen address; keep it private"),
    once: bool = typer.Option(False, "--once", help="print the exposition text once and exit"),
):
    """Serve Prometheus metrics for the whole deployment (every worker on every machine) at /metrics."""
    from producers.metrics_exporter import exposition, serve
    from producers.ops_state import OpsReader
    from shared.config import get_settings

    with cli_errors():
        reader = OpsReader.from_settings()
        if once:
            typer.echo(exposition(reader), nl=False)
            return
        port = port or get_settings().metrics_port
        try:
            err.print(f"tidyq: serving metrics on http://{host}:{port}/metrics", markup=False)
            serve(reader, host, port)
        except OSError as exc:
            raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where="--port") from None


__all__ = ["doctor", "queues", "metrics", "EXIT_BAD_INPUT"]
