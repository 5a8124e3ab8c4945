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


def build_for_registering(target: str) -> tuple[Any, Any]:
    """FILE.py:Name or pkg.module:Name -> (built module, ProgramSpec)."""
    from shared.program_files import ProgramSpec
    from shared.program_uri import parse_import_path
    from shared.user_code import load_file, load_import_path

    path, sep, attr = target.rpartition(":")
    if not sep or not attr:
        raise BadInput(f"expected FILE.py:Name or pkg.module:Name, got {target!r}", where="PROGRAM")
    if path.endswith(".py") or "/" in path:
        if not attr.isidentifier():
            raise BadInput(f"bad name {attr!r} after the file", where="PROGRAM")
        module, source = load_file(path, attr)
        return module, ProgramSpec("code", attr=attr, source=source)
    ref = parse_import_path(target, where="PROGRAM")
    module = load_import_path(ref.uri)
    return module, ProgramSpec("import", import_path=ref.uri)


@app.command()
def register(
    program: str = typer.Argument(..., metavar="PROGRAM", help="FILE.py:Name or pkg.module:Name (a dspy.Module "
                                  "subclass or a zero-argument factory)"),
    name: str = typer.Option(..., "--name", help="registered model name"),
    state: str | None = typer.Option(None, "--state", help="JSON state to apply (module.save('x.json'))"),
):
    """Register a program from code as a new version of NAME; prints models:/NAME/VERSION."""
    with cli_errors():
        from shared.program_files import apply_state, demos_of
        from shared.program_uri import check_name
        from shared.registry import get_registry

        check_name(name, where="--name")
        module, spec = build_for_registering(program)
        if state is not None:
            apply_state(module, _read_state(state), where=state)
        version = get_registry().register_program(name, module, spec, source=program,
                                                  tags={"tidyq.demos": len(demos_of(module))})
        typer.echo(f"models:/{name}/{version}")
