"""Users' own DSPy programs as code: ``pkg.module:Name`` imports and source stored in the registry.

Importing or executing code is code execution, so both are gated before anything runs:
- an import path only when its top-level package is listed in ``TIDYQ_PROGRAM_PACKAGES`` (the way
  Celery workers only run task modules they were told to import);
- source read from the registry only with ``TIDYQ_TRUST_REGISTRY_CODE=true``.
``Name`` is a dspy.Module subclass (built with no arguments), a zero-argument callable returning
one, or a module instance made at import (copied). Per-predictor LMs the code sets are dropped so
every LM call goes through the job's engine.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

from shared.config import Settings, get_settings
from shared.errors import BadInput, ConfigurationError
from shared.program_uri import ImportRef, is_import_path, parse_import_path


class ProgramRefused(ConfigurationError):
    """This process may not run the program's code (package not allowed, registry code untrusted)."""


def allowed_packages(settings: Settings | None = None) -> tuple[str, ...]:
    raw = (settings or get_settings()).program_packages
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def check_allowed(ref: ImportRef, settings: Settings | None = None, *, where: str = "program") -> None:
    """Refuse an import path whose top-level package TIDYQ_PROGRAM_PACKAGES does not list."""
    allowed = allowed_packages(settings)
    if ref.package not in allowed:
        listed = ", ".join(allowed) if allowed else "nothing"
        raise ProgramRefused(f"{where}: program {ref.uri!r} is not allowed here: its package {ref.package!r} is not in "
                             f"TIDYQ_PROGRAM_PACKAGES (which lists {listed}); add it to run this code")


def check_trusted(what: str, settings: Settings | None = None) -> None:
    if not (settings or get_settings()).trust_registry_code:
        raise ProgramRefused(f"{what} is Python code stored in the registry, and running it is code execution: this "
                             "process refuses it unless TIDYQ_TRUST_REGISTRY_CODE=true")


def _where_in_user_code(exc: BaseException) -> str:
    """'file:line' of the innermost frame outside the import machinery (where the user's code broke)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    # the user's own line (news.py:6) rather than the library frame that raised (dspy/.../settings.py)
    return _user_frame(exc, None) or (f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?")


_OWN_CODE = tuple(str(Path(__file__).resolve().parent.parent / d) + "/" for d in ("shared", "workers", "producers"))


def raised_in_user_code(exc: BaseException, program: str | None) -> str | None:
    """'file:line' of the innermost frame of a program's own code in ``exc``'s traceback (not the
    standard library, installed packages such as dspy, or tidyq itself; the top-level package of
    an import-path ``program`` counts as the user's even when pip installed it): where a user's
    forward() or tool broke. None without a program or such a frame (an error inside a library)."""
    if not program:
        return None
    return _user_frame(exc, program.split(":", 1)[0].split(".", 1)[0] if is_import_path(program) else None)


def _user_frame(exc: BaseException, package: str | None) -> str | None:
    import sysconfig


    libraries = tuple({str(Path(sysconfig.get_paths()[k]).resolve()) + "/"
                       for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = str(Path(frame.filename).resolve()) if not frame.filename.startswith("<") else frame.filename
        own_package = package is not None and f"/{package}/" in path
        if (path.startswith(libraries + _OWN_CODE) and not own_package) or path.startswith("<frozen"):
            continue
        return f"{frame.filename}:{frame.lineno}"
    return None


def import_module(ref: ImportRef, *, missing_ok: bool = False) -> Any | None:
    """Import ``ref.module`` (call :func:`check_allowed` first). ``missing_ok``: None when the
    module itself cannot be found here (a producer without the workers' code), while an error
    inside a module that exists, or a module missing from a package that is installed here (a
    typo), is always BadInput."""
    try:
        return importlib.import_module(ref.module)
    except ModuleNotFoundError as exc:
        own = exc.name is not None and (ref.module == exc.name or ref.module.startswith(exc.name + "."))
        # only a missing top-level package means "not installed here": a missing module inside a
        # package that is installed here is a typo in the path (pkg.rga:RAG), refused now
        if own and missing_ok and exc.name == ref.package:
            return None
        if own and exc.name != ref.package:
            raise BadInput(f"cannot import {ref.module!r}: package {ref.package!r} has no module {exc.name!r} "
                           "(check the path's spelling)", where=f"program {ref.uri}") from None
        if own:
            raise BadInput(f"cannot import {ref.module!r}: no such module on this worker (install the package or put "
                           "it on PYTHONPATH)", where=f"program {ref.uri}") from None
        raise BadInput(f"importing {ref.module!r} failed at {_where_in_user_code(exc)}: {type(exc).__name__}: {exc}",
                       where=f"program {ref.uri}") from None
    except Exception as exc:
        if missing_ok and _configure_in_other_thread(exc):
            return None  # the module is fine; this producer thread just may not run its dspy.configure
        raise BadInput(f"importing {ref.module!r} failed at {_where_in_user_code(exc)}: {type(exc).__name__}: {exc}",
                       where=f"program {ref.uri}") from None


def _configure_in_other_thread(exc: BaseException) -> bool:
    """DSPy's refusal of ``dspy.configure`` from a thread other than the one that configured it
    first: a module calling it at import fails in a threaded client's worker thread, not on the
    workers (they build programs in the thread that configured DSPy), so the workers check it."""
    return isinstance(exc, RuntimeError) and "thread that initially configured" in str(exc)


def build(obj: Any, label: str) -> Any:
    """A dspy.Module from a Module subclass (no arguments), a zero-argument factory, or a module
    instance the code made at import time (copied: the caller's object is never changed)."""
    import dspy

    where = f"program {label}"
    if isinstance(obj, dspy.Module):
        return drop_own_lms(_check_forward(obj.deepcopy(), where))
    if not callable(obj):
        raise BadInput(f"is of type {type(obj).__name__}, not a dspy.Module subclass or a zero-argument factory",
                       where=where)
    try:
        if isinstance(obj, type):  # DSPy's metaclass hides __init__ behind (*args, **kwargs)
            inspect.signature(obj.__init__).bind(None)  # type: ignore[misc]
        else:
            inspect.signature(obj).bind()
    except TypeError:
        raise BadInput("needs arguments; give a dspy.Module subclass or a zero-argument factory",
                       where=where) from None
    except ValueError:
        pass  # builtins without a signature: let the call decide
    try:
        module = obj()
    except Exception as exc:
        raise BadInput(f"building it failed at {_where_in_user_code(exc)}: {type(exc).__name__}: {exc}",
                       where=where) from None
    if not isinstance(module, dspy.Module):
        raise BadInput(f"returned a {type(module).__name__}, not a dspy.Module", where=where)
    return drop_own_lms(_check_forward(module, where))


def _check_forward(module: Any, where: str) -> Any:
    """A module with aforward() only (DSPy's async tutorial shape) would fail every item with an
    AttributeError: items run forward(), so say so when the program is built (at submit too)."""
    if not hasattr(type(module), "forward"):
        extra = " (it defines aforward() only)" if hasattr(type(module), "aforward") else ""
        raise BadInput(f"{type(module).__name__} has no forward(){extra}; jobs call forward() (the job's engine has "
                       "no async path, so acall/aforward cannot run either): give the module a synchronous forward()",
                       where=where)
    return module


def drop_own_lms(module: Any) -> Any:
    """Predictors built with their own dspy.LM would bypass the job's engine (cache, retry, rate
    limit, breaker, fallbacks, metrics): the job's target serves every call instead."""
    for _, predictor in module.named_predictors():
        if getattr(predictor, "lm", None) is not None:
            predictor.lm = None
    return module


def load_import_path(text: str, settings: Settings | None = None, *, missing_ok: bool = False) -> Any | None:
    """``pkg.module:Name`` -> a freshly built dspy.Module, after the allow-list check. With
    ``missing_ok``, None when the module is not installed here (see :func:`import_module`)."""
    ref = parse_import_path(text)
    check_allowed(ref, settings)
    module = import_module(ref, missing_ok=missing_ok)
    if module is None:
        return None
    if not hasattr(module, ref.attr):
        raise BadInput(f"module {ref.module!r} has no attribute {ref.attr!r}", where=f"program {ref.uri}")
    return build(getattr(module, ref.attr), ref.uri)


def _module_from_source(source: str, filename: str, prefix: str) -> Any:
    """Run ``source`` as a module named by its hash (run once per process per source)."""
    name = f"{prefix}_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_loader(name, loader=None, origin=filename)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = filename
    sys.modules[name] = module  # pydantic models and dataclasses look their module up while it runs
    try:
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - the callers gate this
    except Exception as exc:
        sys.modules.pop(name, None)
        raise BadInput(f"running it failed at {_where_in_user_code(exc)}: {type(exc).__name__}: {exc}"
                       f"{_sibling_hint(exc, filename)}", where=filename) from None
    return module


def _sibling_hint(exc: BaseException, filename: str) -> str:
    """`python program.py` finds modules next to the file; a registered program is that one file."""
    top = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ImportError) else ""
    if isinstance(exc, ImportError) and "relative import" in str(exc):
        top = "."
    folder = Path(filename).parent
    if top == "." or (top and ((folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file())):
        return (" (a program registered from a file is that one file: the modules next to it are not stored; "
                "put what it imports in the file, or install them as a package and register pkg.module:Name)")
    return ""


def _build_attr(module: Any, attr: str, filename: str) -> Any:
    if not hasattr(module, attr):
        raise BadInput(f"defines no {attr!r}", where=filename)
    return build(getattr(module, attr), f"{filename}:{attr}")


def exec_source(source: str, attr: str, label: str, settings: Settings | None = None) -> Any:
    """Registry source run as a module of its own, ``attr`` built from it (trust checked first)."""
    check_trusted(label, settings)
    return _build_attr(_module_from_source(source, label, "tidyq_registry_code"), attr, label)


def load_file(path: str | Path, attr: str) -> tuple[Any, str]:
    """A local FILE.py's ``attr`` built (the user's own file, for `tidyq register`) and its source."""
    path = Path(path)
    if not path.is_file():
        raise BadInput("no such file", where=str(path))
    source = path.read_text()
    return _build_attr(_module_from_source(source, str(path), "tidyq_local_code"), attr, str(path)), source
