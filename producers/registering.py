"""Registering a program as a new version of a registered model: `tidyq register` and ``POST /programs``.

The program is built here first, so a missing class, a non-Module or a state that does not fit is
refused before anything is written. ``files=False`` (the REST API) accepts only an import path
``pkg.module:Name`` allowed by TIDYQ_PROGRAM_PACKAGES: the API never takes code to run.
"""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.errors import BadInput


def build_for_registering(target: str, *, files: bool = True,
                          settings: Settings | None = None) -> tuple[Any, Any]:
    """FILE.py:Name or pkg.module:Name -> (built module, ProgramSpec)."""
    from shared.program_files import ProgramSpec
    from shared.program_uri import parse_import_path
    from shared.user_code import load_file, load_import_path

    path, sep, attr = target.rpartition(":")
    if not sep or not attr:
        raise BadInput(f"expected {'FILE.py:Name or ' if files else ''}pkg.module:Name, got {target!r}",
                       where="PROGRAM")
    if path.endswith(".py") or "/" in path:
        if not files:
            raise BadInput("only an import path pkg.module:Name (its package installed on the server and the "
                           "workers, listed in TIDYQ_PROGRAM_PACKAGES) can be registered here: no code upload",
                           where="PROGRAM")
        if not attr.isidentifier():
            raise BadInput(f"bad name {attr!r} after the file", where="PROGRAM")
        module, source = load_file(path, attr)
        return module, ProgramSpec("code", attr=attr, source=source)
    ref = parse_import_path(target, where="PROGRAM")
    module = load_import_path(ref.uri, settings)
    return module, ProgramSpec("import", import_path=ref.uri)


def register(program: str, name: str, state: Any = None, *, state_where: str = "--state", files: bool = True,
             settings: Settings | None = None) -> str:
    """Build ``program``, apply ``state`` (module.save's JSON, or None), register it; -> models:/NAME/VERSION."""
    from shared.program_files import apply_state, demos_of
    from shared.program_uri import check_name
    from shared.registry import get_registry

    check_name(name, where="--name")
    module, spec = build_for_registering(program, files=files, settings=settings)
    if state is not None:
        apply_state(module, state, where=state_where)
    version = get_registry(settings).register_program(name, module, spec, source=program,
                                                      tags={"tidyq.demos": len(demos_of(module))})
    return f"models:/{name}/{version}"
