"""Producer-side checks of a job's program, before anything is enqueued.

Every program string must be one of the accepted forms. An import path must be allowed by this
environment's TIDYQ_PROGRAM_PACKAGES (the same list the workers apply); when its code is
installed here too, it is imported and built once, so an unknown attribute, a non-Module or an
error inside the user's module is refused now, and every item is checked against the program's
forward() parameters. When the code is only on the workers, they check each item instead.

A registered program (models:/NAME/N, models:/NAME@alias, NAME) is resolved once here, so a
version, alias or model that does not exist is refused before anything is enqueued (its items
would all fail on the workers). When this producer cannot ask (no TIDYQ_MLFLOW_TRACKING_URI here,
MLflow or the rollout state unreachable) the job is accepted with a warning giving the cause.
"""

from __future__ import annotations

from shared.config import Settings
from shared.errors import BadInput, ConfigurationError
from shared.program_io import ProgramInputs, program_inputs
from shared.program_uri import ImportRef, ProgramRef, parse_program
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


def registered_program_notes(program: str | None, settings: Settings, *, registry=None) -> list[str]:
    """Warnings for a registered program this producer could not resolve; raises BadInput (a
    version, alias or model that does not exist) before anything is written."""
    if not program:
        return []
    ref = parse_program(program, where="program")
    if not isinstance(ref, ProgramRef):
        return []
    from shared.programs import resolve_program
    from shared.registry import get_registry

    try:
        reg = registry or get_registry(settings)
        served = resolve_program(ref.uri, "", registry=reg)
        reg.version_info(served.name, served.version)
    except BadInput:
        raise
    except ConfigurationError as exc:
        return [f"could not check program {ref.uri} here ({exc}); the workers resolve it"]
    except Exception as exc:  # MLflow or Redis away: the workers will tell, item by item
        return [f"could not check program {ref.uri} here ({type(exc).__name__}: {str(exc)[:300]}); "
                "the workers resolve it"]
    return []
