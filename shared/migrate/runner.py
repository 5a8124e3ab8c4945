"""`tidyq migrate PATH... [--write]`: collect files, migrate each, print a diff or write in place.

Exit codes: 0 everything found was (or, in a dry run, can be) migrated; 1 something could not be
migrated (each printed as path:line: why); 2 bad arguments or a file that does not parse (then
nothing is written at all). A file with findings still gets every safe rewrite written, and each
finding is marked above its line with a ``# tidyq-migrate: why`` comment, so nothing is left silently.
Notebook exports: IPython magics (``%pip``, ``!ls``) are commented out before parsing (see notebook.py).
``--native`` lifts the simple assertion form to dspy.Refine (native.py); what it lifted or left is a note.
"""

from __future__ import annotations

import ast
import difflib
import os
import sys
from pathlib import Path
from typing import TextIO

import libcst as cst

from shared.migrate.findings import Finding
from shared.migrate.notebook import comment_out_magics
from shared.migrate.transform import migrate_source

SKIP_DIRS = {".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".tox", ".mypy_cache", "build", "dist"}


class UsageError(Exception):
    pass


def collect(paths: list[str]) -> list[Path]:
    if not paths:
        raise UsageError("give at least one file or folder")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                files += [Path(root) / n for n in sorted(names) if n.endswith(".py")]
        elif path.is_file():
            if path.suffix != ".py":
                raise UsageError(f"{raw}: not a Python file (.py)")
            files.append(path)
        else:
            raise UsageError(f"{raw}: no such file or folder")
    seen: dict[Path, None] = {}
    for file in files:
        seen.setdefault(file, None)
    return list(seen)


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def _syntax_error(source: str, exc: cst.ParserSyntaxError) -> tuple[int, str]:
    """(line, message) as Python's own parser says it (libcst's tokenizer errors all say line 1)."""
    try:
        ast.parse(source)
    except SyntaxError as error:
        return error.lineno or exc.raw_line, error.msg
    return exc.raw_line, exc.message


def run(paths: list[str], write: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr, native: bool = False) -> int:
    try:
        files = collect(list(paths))
    except UsageError as exc:
        print(f"tidyq migrate: {exc}", file=err)
        return 2
    sources: dict[Path, str] = {}
    parsable: dict[Path, str] = {}  # the source with notebook magics commented out
    notes: list[Finding] = []
    bad = False
    for file in files:
        try:
            sources[file] = _read(file)
            parsable[file], magics = comment_out_magics(sources[file], str(file))
            notes += magics
            cst.parse_module(parsable[file])
        except UnicodeDecodeError as exc:
            print(f"{file}:1: cannot read as UTF-8: {exc.reason}", file=err)
            bad = True
        except OSError as exc:
            print(f"{file}: cannot read: {exc.strerror}", file=err)
            bad = True
        except cst.ParserSyntaxError as exc:
            line, message = _syntax_error(parsable.get(file, ""), exc)
            print(f"{file}:{line}: syntax error, not migrated: {message}", file=err)
            bad = True
    if bad:
        print("tidyq migrate: nothing was changed (fix the files above first)", file=err)
        return 2
    results: list[tuple[Path, str, list[Finding]]] = []
    for file in files:
        new, findings = migrate_source(parsable[file], str(file), native=native, notes=notes)
        results.append((file, new, findings))
    for note in sorted(notes):
        print(f"{note}", file=err)
    changed = written = 0
    all_findings: list[Finding] = []
    for file, new, findings in results:
        all_findings += findings
        if new == sources[file]:
            continue
        changed += 1
        if write:
            with open(file, "w", encoding="utf-8", newline="") as handle:
                handle.write(new)
            written += 1
            print(f"rewrote {file}", file=err)
        else:
            name = str(file).lstrip("/")
            out.writelines(difflib.unified_diff(sources[file].splitlines(keepends=True), new.splitlines(keepends=True),
                                                fromfile=f"a/{name}", tofile=f"b/{name}"))
    for finding in all_findings:
        print(f"{finding}", file=err)
    blocked = len({f.path for f in all_findings})
    verb = "rewrote" if write else "would rewrite"
    summary = f"tidyq migrate: {len(files)} file(s) checked, {verb} {written if write else changed}"
    if all_findings:
        summary += f"; {len(all_findings)} place(s) in {blocked} file(s) need a hand (marked `# tidyq-migrate:`)"
    print(summary, file=err)
    return 1 if all_findings else 0
