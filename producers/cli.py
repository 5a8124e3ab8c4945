"""The ``tidyq`` command line.

Conventions (the contract): exit 0 ok, 1 a job or some of its items failed, 2 bad input or usage.
Without --wait a submit prints only the job id on stdout (``JOB=$(tidyq batch ...)``); progress,
messages and errors go to stderr. Bad input is refused with the file, line and field named, and
nothing is enqueued.

Other modules add commands with ``from producers.cli import app`` and ``@app.command()``; every
module in ``producers/commands/`` is imported at the bottom of this file.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from producers.progress import follow_results
from shared.errors import BadInput, ConfigurationError, TidyqError

app = typer.Typer(name="tidyq", help="A job queue for DSPy programs.", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PROGRAM_HELP = "models:/NAME/N, models:/NAME@alias or pkg.module:Name (allowed by TIDYQ_PROGRAM_PACKAGES)"


@contextmanager
def cli_errors() -> Iterator[None]:
    """Our typed errors -> one clear line on stderr and the contract's exit code, no traceback."""
    try:
        yield
    except BadInput as exc:
        err.print(f"tidyq: error: {exc}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except ConfigurationError as exc:
        err.print(f"tidyq: configuration error: {exc}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except TimeoutError as exc:
        err.print(f"tidyq: timed out: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        err.print("tidyq: interrupted", markup=False)
        raise typer.Exit(130) from None
    except TidyqError as exc:
        err.print(f"tidyq: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as exc:
        import redis

        if isinstance(exc, redis.exceptions.ConnectionError):
            err.print(f"tidyq: cannot reach Redis: {exc} (set TIDYQ_REDIS_URL, or try `tidyq demo`)", markup=False)
            raise typer.Exit(EXIT_FAILED) from None
        from shared.causes import describe

        cause = describe(exc)  # another Redis or an MLflow failure: one line with its cause
        if cause is not None:
            err.print(f"tidyq: {cause}", markup=False)
            raise typer.Exit(EXIT_FAILED) from None
        raise


ITEM_CACHE_HELP = ("answer items already computed for the same program version, inputs, target and generation "
                   "settings from the item cache (marked cached, free); --no-item-cache runs every item")


def _client():
    from producers.client import Client

    return Client(on_warning=lambda message: err.print(f"tidyq: warning: {message}", markup=False))


def _parse_inputs(pairs: list[str]) -> dict:
    """``KEY=text`` gives the text as is; ``KEY:=JSON`` a JSON value (a number, list, object, true...),
    as httpie writes it, for inputs typed other than str."""
    inputs: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        raw_json = key.endswith(":")
        key = key[:-1] if raw_json else key
        if not sep or not key.strip():
            raise BadInput(f"expected KEY=VALUE or KEY:=JSON, got {pair!r}", where="--input")
        if key.strip() in inputs:
            raise BadInput(f"input {key.strip()!r} given twice", where="--input")
        if raw_json:
            try:
                inputs[key.strip()] = json.loads(value)
            except ValueError as exc:
                raise BadInput(f"{key.strip()}:= needs a JSON value ({exc}), got {value[:80]!r}",
                               where="--input") from None
        else:
            inputs[key.strip()] = value
    return inputs


def _fallbacks(values: list[str] | None) -> list[str]:
    return [part for v in values or [] for part in v.split(",") if part.strip()]


def _exit_for(status: dict) -> int:
    if status["status"] != "completed" or status["counts"]["failed"] > 0:
        return EXIT_FAILED
    return EXIT_OK


def _summary(status: dict) -> str:
    c = status["counts"]
    return f"job {status['id']} {status['status']}: {c['succeeded']} succeeded, {c['failed']} failed of {c['total']}"


@app.command()
def predict(
    signature: str | None = typer.Option(None, "--signature", "-s", help="DSPy signature, e.g. 'question -> answer'"),
    program: str | None = typer.Option(None, "--program", help=PROGRAM_HELP),
    backend: str | None = typer.Option(None, "--backend", "-b", help="mock, direct, bedrock, gateway or auto"),
    model: str | None = typer.Option(None, "--model", "-m"),
    input: list[str] = typer.Option([], "--input", "-i", help="KEY=TEXT or KEY:=JSON (typed); repeatable"),
    fallback: list[str] | None = typer.Option(None, "--fallback", help="B:M[,B:M...] tried after the job's target"),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds to wait for the answer"),
    deadline: float | None = typer.Option(None, "--deadline", help="seconds the job may wait for a backend "
                                             "when every target's circuit breaker is open"),
    item_cache: bool = typer.Option(True, "--item-cache/--no-item-cache", help=ITEM_CACHE_HELP),
):
    """One prediction through the queue; prints the outputs as JSON."""
    with cli_errors():
        client = _client()
        job = client.submit_predict(signature, _parse_inputs(input), backend=backend, model=model, program=program,
                                    fallbacks=_fallbacks(fallback), idempotency_key=idempotency_key,
                                    deadline_seconds=deadline, item_cache=item_cache)
        from producers.client import JobFailed

        try:
            outputs = job.result(timeout=timeout)
        except JobFailed as exc:
            err.print(f"tidyq: {exc}", markup=False)
            raise typer.Exit(EXIT_FAILED) from None
        typer.echo(json.dumps(outputs, ensure_ascii=False))


@app.command()
def batch(
    file: str = typer.Argument(..., help="JSONL input: {\"custom_id\": ..., \"inputs\": {...}} per line"),
    signature: str | None = typer.Option(None, "--signature", "-s"),
    program: str | None = typer.Option(None, "--program", help=PROGRAM_HELP),
    backend: str | None = typer.Option(None, "--backend", "-b"),
    model: str | None = typer.Option(None, "--model", "-m"),
    fallback: list[str] | None = typer.Option(None, "--fallback"),
    wait: bool = typer.Option(False, "--wait", help="follow progress and write the results"),
    out: str | None = typer.Option(None, "--out", "-o", help="results JSONL (default stdout) with --wait"),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
    chunk_size: int | None = typer.Option(None, "--chunk-size", min=1),
    timeout: float | None = typer.Option(None, "--timeout", help="with --wait: give up after this many seconds"),
    deadline: float | None = typer.Option(None, "--deadline", help="seconds items may wait for a backend "
                                             "when every target's circuit breaker is open"),
    estimate: bool = typer.Option(False, "--estimate", help="print the expected cost as JSON; enqueue nothing"),
    max_cost: float | None = typer.Option(None, "--max-cost", help="USD: the job ends as budget_exceeded "
                                             "at this spend, its results kept (default TIDYQ_MAX_COST_USD)"),
    mode: str = typer.Option("live", "--mode", help="live, or economy: the provider's batch API at its "
                             "batch price (results within the provider's window, up to 24 h)"),
    tenant: str | None = typer.Option(None, "--tenant", help="charge the job to this tenant's daily budget "
                                         "(TIDYQ_TENANT_BUDGETS); see `tidyq budget`"),
    item_cache: bool = typer.Option(True, "--item-cache/--no-item-cache", help=ITEM_CACHE_HELP),
):
    """Submit a JSONL file as one batch job. Prints the job id (or, with --wait, the results)."""
    with cli_errors():
        if out and not wait:
            raise BadInput("--out needs --wait (or use `tidyq results JOB --out FILE` later)", where="--out")
        client = _client()
        if estimate:
            from producers.estimate import estimate_file

            target = client.resolve_target(signature, program, backend, model)
            report = estimate_file(file, signature=signature, program=program, model=target["model"],
                                   backend=target["backend"], settings=client.settings)
            typer.echo(json.dumps(report, ensure_ascii=False))
            return
        job = client.submit_file(file, signature, backend=backend, model=model, program=program,
                                 fallbacks=_fallbacks(fallback), idempotency_key=idempotency_key, chunk_size=chunk_size,
                                 deadline_seconds=deadline, max_cost_usd=max_cost, mode=mode,
                                 tenant=tenant, item_cache=item_cache)
        if job.existing:
            err.print(f"tidyq: idempotency key matched existing job {job.id}", markup=False)
        if not wait:
            typer.echo(job.id)
            return
        err.print(f"tidyq: job {job.id}", markup=False)
        follow_results(job, job.status()["counts"]["total"], out, timeout=timeout)
        status = job.status()
        err.print(_summary(status) + (f"; results in {out}" if out else ""), markup=False)
        raise typer.Exit(_exit_for(status))


@app.command()
def status(job_id: str = typer.Argument(..., metavar="JOB")):
    """The job's status, counts and timestamps as JSON."""
    with cli_errors():
        typer.echo(json.dumps(_client().job(job_id).status(), ensure_ascii=False))


@app.command()
def results(
    job_id: str = typer.Argument(..., metavar="JOB"),
    out: str | None = typer.Option(None, "--out", "-o"),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="wait for the job to end (default)"),
    timeout: float | None = typer.Option(None, "--timeout"),
):
    """The job's result JSONL (streamed as results arrive until the job ends)."""
    with cli_errors():
        job = _client().job(job_id)
        if follow:
            follow_results(job, job.status()["counts"]["total"], out, timeout=timeout)
        else:
            from producers.jsonl import JsonlWriter

            with JsonlWriter(out) as writer:
                writer.write_all(job.results(follow=False))
        status = job.status()
        err.print(_summary(status), markup=False)
        ended = status["status"] in ("completed", "failed", "cancelled", "budget_exceeded")
        raise typer.Exit(_exit_for(status) if ended else EXIT_OK)


@app.command()
def cancel(job_id: str = typer.Argument(..., metavar="JOB")):
    """Stop the job's pending chunks; finished results are kept. Prints the new state."""
    with cli_errors():
        typer.echo(_client().job(job_id).cancel())


@app.command()
def retry(
    job_id: str = typer.Argument(..., metavar="JOB"),
    wait: bool = typer.Option(False, "--wait"),
    out: str | None = typer.Option(None, "--out", "-o"),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
):
    """Resubmit only the failed items of JOB as a new job linked to it (prints the new id)."""
    with cli_errors():
        client = _client()
        job = client.retry(job_id, idempotency_key=idempotency_key)
        if job is None:
            err.print(f"tidyq: job {job_id} has no failed items; nothing to retry", markup=False)
            return
        if not wait:
            typer.echo(job.id)
            return
        err.print(f"tidyq: retry job {job.id} (of {job_id})", markup=False)
        follow_results(job, job.status()["counts"]["total"], out, timeout=None)
        status = job.status()
        err.print(_summary(status), markup=False)
        raise typer.Exit(_exit_for(status))


@app.command()
def demo(
    items: int | None = typer.Option(None, "--items", help="use only the first N bundled questions"),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", help="worker processes (default: CPUs, max 4)"),
):
    """Run the bundled example batch end to end with nothing installed but this package:
    a private redis-server, one worker, the mock backend. Everything started is stopped."""
    from producers.demo import run_demo

    with cli_errors():
        raise typer.Exit(run_demo(items=items, concurrency=concurrency))


@app.command()
def migrate(paths: list[str] = typer.Argument(..., metavar="PATH..."),
            write: bool = typer.Option(False, "--write", help="rewrite files in place (default: show a diff)"),
            native: bool = typer.Option(False, "--native", help="lift simple dspy.Suggest forms to dspy.Refine "
                                                                "where 2.x's semantics carry over")):
    """Rewrite code written for the old wrapper to the tidyq API."""
    with cli_errors():
        from shared.migrate import run

        raise typer.Exit(run(paths, write, native=native))


def _load_command_modules() -> None:
    """Commands contributed by other modules: every module in producers/commands/."""
    try:
        import producers.commands as pkg
    except ImportError:
        return
    for info in pkgutil.iter_modules(pkg.__path__):
        name = f"{pkg.__name__}.{info.name}"
        try:
            importlib.import_module(name)
        except ImportError as exc:
            # One broken extra command must not take `tidyq demo/batch/...` down with it.
            err.print(f"tidyq: warning: commands from {name} are unavailable: {exc}", markup=False)


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``tidyq``)."""
    try:
        app(args=argv, prog_name="tidyq", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


_load_command_modules()

if __name__ == "__main__":
    # Run through the imported module so commands registered by producers/commands/ (which import
    # `producers.cli`) land on the same app as the one that parses argv.
    from producers.cli import main as _main

    sys.exit(_main())
