"""`tidyq breaker status` and `tidyq breaker reset TARGET`: the circuit breakers (shared/breaker.py)
every worker shares through Redis. Registered on the tidyq CLI at start-up."""

from __future__ import annotations

import json

import typer

from producers.cli import app, cli_errors, err

breaker_app = typer.Typer(help="Circuit breakers per backend:model target (shared by every worker).",
                          no_args_is_help=True)
app.add_typer(breaker_app, name="breaker")


def _redis():
    from shared.config import get_settings
    from shared.redisconn import get_redis

    s = get_settings()
    return get_redis(s.redis_url or s.default_redis_url)


@breaker_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Every known target: state, window failure rate, probes, transitions and fallbacks."""
    from shared.breaker import breaker_states

    with cli_errors():
        states = breaker_states(_redis())
        if as_json:
            typer.echo(json.dumps(states, ensure_ascii=False))
            return
        if not states:
            err.print("tidyq: no breaker has seen a call yet", markup=False)
            return
        typer.echo(f"{'TARGET':40} {'STATE':9} {'FAIL/CALLS':>10} {'PROBES':>6} {'SKIPPED':>8} {'SERVED-AS-FB':>12}")
        for st in states:
            w = st["window"]
            typer.echo(f"{st['target'][:40]:40} {st['state']:9} {w['failures']:>4}/{w['calls']:<5} "
                       f"{st['probes_in_flight']:>6} {sum(st['skipped'].values()):>8} {st['served_as_fallback']:>12}")


@breaker_app.command("reset")
def reset(target: str = typer.Argument(..., metavar="TARGET", help="backend:model, e.g. bedrock:anthropic.x-v1:0")):
    """Close a target's breaker now (for ops: the provider is known to be back)."""
    from shared.breaker import known_target, reset_breaker

    with cli_errors():
        client = _redis()
        done = reset_breaker(client, known_target(client, target))
        err.print(f"tidyq: breaker {done['target']} reset ({done['was']} -> closed)", markup=False)
