"""`tidyq register`: a user's program (source file or import path) + its JSON state as a new
version of a registered model, servable as models:/NAME/N.

    tidyq register programs/rag.py:RAG --name rag [--state optimized.json]    # source + state
    tidyq register mypkg.rag:RAG --name rag [--state optimized.json]          # import path + state

The program is built here first (the file runs on this machine: it is the user's own code) so a
missing class, a non-Module or a state that does not fit is refused before anything is written.
Workers run a version stored as source only with TIDYQ_TRUST_REGISTRY_CODE=true; a version made
from an import path needs its package installed on them and listed in TIDYQ_PROGRAM_PACKAGES.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from producers.cli import app, cli_errors
from shared.errors import BadInput


def _read_state(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput("no such file", where=path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"not JSON: {exc} (give the file module.save('state.json') wrote)", where=path) from None


@app.command()
def register(
    program: str = typer.Argument(..., metavar="PROGRAM", help="FILE.py:Name or pkg.module:Name (a dspy.Module "
                                  "subclass or a zero-argument factory)"),
    name: str = typer.Option(..., "--name", help="registered model name"),
    state: str | None = typer.Option(None, "--state", help="JSON state to apply (module.save('x.json'))"),
):
    """Register a program from code as a new version of NAME; prints models:/NAME/VERSION."""
    with cli_errors():
        from producers.registering import register as register_program

        loaded = None if state is None else _read_state(state)
        typer.echo(register_program(program, name, loaded, state_where=state or "--state"))
