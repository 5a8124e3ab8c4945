"""Producer-side checks of a job's program, before anything is enqueued.

Every program string must be one of the accepted forms. An import path must be allowed by this
environment's TIDYQ_PROGRAM_PACKAGES (the same list the workers apply); when its code is
installed here too, it is imported and built once, so an unknown attribute, a non-Module or an
error inside the user's module is refused now, and every item is checked against the program's
forward() parameters. When the code is only on the workers, they check each item instead.
"""

from __future__ import annotations

from shared.config import Settings
from shared.errors import BadInput
from shared.program_io import ProgramInputs, program_inputs
from shared.program_uri import ImportRef, parse_program
from shared.user_code import allowed_packages, load_import_path


def check_program(program: str | None, settings: Settings) -> ProgramInputs | None:
    """The input fields items must match (None: not known here), or BadInput/ProgramRefused."""
    if program is None:
        return None
    ref = parse_program(program, where="program")
    if not isinstance(ref, ImportRef):
        _refuse_dotted_path(program, settings)
        return None
    module = load_import_path(ref.uri, settings, missing_ok=True)
    return program_inputs(module, ref.uri) if module is not None else None


def _refuse_dotted_path(program: str, settings: Settings) -> None:
    """A bare NAME such as ``pkg.module.Name`` whose first part is an allowed package is an import
    path written with '.' for ':' (it would otherwise be looked up as a registered model on every
    item); ``models:/pkg.module.Name@live`` still names such a registered model."""
    text = program.strip()
    head, _, attr = text.rpartition(".")
    if text.startswith("models:/") or not head or head.split(".", 1)[0] not in allowed_packages(settings):
        return
    raise BadInput(f"{text!r} looks like an import path of package {head.split('.', 1)[0]!r} written with '.' before "
                   f"the name: write {head}:{attr} (for a registered model of that name: models:/{text}@live)",
                   where="program")
