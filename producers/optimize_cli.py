"""`tidyq optimize`, `rollout`, `rollback`, `promote`: optimize jobs and serving versions.

    tidyq optimize --signature "question -> answer" --trainset train.jsonl --optimizer bootstrap-fewshot \\
                   --metric exact_match --name qa --backend mock --wait          # -> models:/qa/1
    tidyq rollout qa --candidate 2 --percent 10     # 10% of items asking for qa (or models:/qa@live) -> v2
    tidyq rollout qa                                # state and per-version counts, error rate, latency
    tidyq rollback qa                               # everything back to the live version, next item on
    tidyq promote qa                                # the candidate becomes live
"""

from __future__ import annotations

import json
import time

import typer

from producers.cli import EXIT_FAILED, EXIT_OK, app, cli_errors, err
from shared.errors import BadInput


def _pairs(values: list[str] | None, where: str) -> dict:
    """KEY=VALUE options; values are JSON when they parse (numbers, booleans), else strings."""
    out: dict = {}
    for pair in values or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"expected KEY=VALUE, got {pair!r}", where=where)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _progress_line(p: dict | None) -> str:
    if not p:
        return "queued"
    best = p.get("best_score")
    base = p.get("baseline_score")
    parts = [p.get("phase", "?"), f"step {p.get('step', 0)}", f"lm calls {p.get('lm_calls', 0)}"]
    if base is not None:
        parts.append(f"baseline {base:.3f}")
    if best is not None:
        parts.append(f"best {best:.3f}")
    parts.append(f"{p.get('elapsed_s', 0):.1f}s")
    return ", ".join(parts)


def wait_for_optimize(job, timeout: float | None, poll: float = 0.5) -> dict:
    """Follow an optimize job, printing progress changes to stderr; returns the final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        status = job.status()
        line = _progress_line(status.get("progress"))
        if line != last:
            err.print(f"tidyq: optimize {job.id[:8]}: {line}", markup=False)
            last = line
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"optimize job {job.id} did not finish within {timeout}s (it keeps running)")
        time.sleep(poll)


@app.command()
def optimize(
    name: str = typer.Option(..., "--name", help="registered model name the result is saved under"),
    trainset: str = typer.Option(..., "--trainset", help="JSONL: {\"inputs\": {...}, \"outputs\": {...}} per line"),
    signature: str | None = typer.Option(None, "--signature", "-s"),
    program: str | None = typer.Option(None, "--program", help="start from models:/NAME/VERSION instead"),
    valset: str | None = typer.Option(None, "--valset", help="JSONL scored before and after (default: trainset)"),
    optimizer: str = typer.Option("bootstrap-fewshot", "--optimizer",
                                  help="labeled-fewshot, bootstrap-fewshot, bootstrap-random-search, mipro-v2, "
                                       "copro, simba, gepa"),
    metric: str = typer.Option("exact_match", "--metric",
                               help="exact_match, contains, f1, numeric, or an allow-listed package.module:function"),
    setting: list[str] | None = typer.Option(None, "--set", help="optimizer setting KEY=VALUE, repeatable"),
    metric_option: list[str] | None = typer.Option(None, "--metric-option", help="e.g. tolerance=0.01"),
    kind: str = typer.Option("predict", "--kind", help="predict or chain_of_thought (with --signature)"),
    backend: str | None = typer.Option(None, "--backend", "-b"),
    model: str | None = typer.Option(None, "--model", "-m"),
    time_limit: float | None = typer.Option(None, "--time-limit",
                                               help="seconds of search; then the best program so far is kept"),
    threads: int = typer.Option(1, "--threads", min=1, max=64, help="parallel evaluations inside the job"),
    wait: bool = typer.Option(False, "--wait", help="follow progress and print models:/NAME/VERSION"),
    timeout: float | None = typer.Option(None, "--timeout", help="with --wait: stop waiting after this many s"),
):
    """Run a DSPy optimizer on the optimize queue and register the result as a model version."""
    with cli_errors():
        from producers.client import Client

        job = Client().submit_optimize(
            name=name, trainset=trainset, valset=valset, signature=signature, program=program, kind=kind,
            optimizer=optimizer, settings=_pairs(setting, "--set"), metric=metric,
            metric_options=_pairs(metric_option, "--metric-option"), backend=backend, model=model,
            time_limit=time_limit, num_threads=threads)
        if not wait:
            typer.echo(job.id)
            return
        err.print(f"tidyq: optimize job {job.id}", markup=False)
        status = wait_for_optimize(job, timeout)
        result = status.get("result") or {}
        if status["status"] == "completed" and result.get("model_uri"):
            err.print(f"tidyq: score {result.get('baseline_score', 0):.3f} -> {result.get('optimized_score', 0):.3f} "
                      f"in {result.get('duration_s', 0):.1f}s, {result.get('lm_calls', 0)} LM calls"
                      + (" (time limit: best so far)" if result.get("stopped") == "time_limit" else ""), markup=False)
            typer.echo(result["model_uri"])
            raise typer.Exit(EXIT_OK)
        err.print(f"tidyq: optimize job {job.id} {status['status']}: {status.get('error') or ''}".rstrip(": "),
                  markup=False)
        raise typer.Exit(EXIT_FAILED)


def _registry():
    from shared.registry import get_registry

    return get_registry()


def _report(state, warning: str | None) -> None:
    if warning:
        err.print(f"tidyq: warning: {warning}", markup=False)
    typer.echo(json.dumps(state.as_dict()))


@app.command()
def rollout(
    name: str = typer.Argument(..., metavar="NAME"),
    candidate: int | None = typer.Option(None, "--candidate", min=1, help="version to send traffic to"),
    percent: float | None = typer.Option(None, "--percent", min=0.0, max=100.0, help="share of items, 0-100"),
):
    """Send PERCENT % of items asking for NAME (or models:/NAME@live) to CANDIDATE; without options,
    show the rollout state and per-version counts, error rate, validation failures and latency."""
    with cli_errors():
        from shared.programs import check_name

        check_name(name, where="NAME")
        reg = _registry()
        if candidate is None and percent is None:
            typer.echo(json.dumps(reg.status(name)))
            return
        _report(*reg.change_rollout("rollout", name, candidate=candidate, percent=percent))


@app.command()
def rollback(name: str = typer.Argument(..., metavar="NAME")):
    """Return all traffic of NAME to its live version at once (the candidate is dropped)."""
    with cli_errors():
        _report(*_registry().change_rollout("rollback", name))


@app.command()
def promote(name: str = typer.Argument(..., metavar="NAME")):
    """Make the candidate of NAME its live version (serving every item)."""
    with cli_errors():
        _report(*_registry().change_rollout("promote", name))
