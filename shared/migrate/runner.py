"""`tidyq migrate PATH... [--write]`: collect files, migrate each, print a diff or write in place.

Exit codes: 0 everything found was (or, in a dry run, can be) migrated; 1 something could not be
migrated (each printed as path:line: why); 2 bad arguments or a file that does not parse (then
nothing is written at all). A file with findings is never written: it keeps working on the
compatibility shims (shared.compat) until the reported lines are ported by hand.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import TextIO

import libcst as cst

from shared.migrate.findings import Finding
from shared.migrate.transform import RunKnowledge, checked_classes, migrate_source

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


def _knowledge(sources: dict[Path, str]) -> RunKnowledge:
    """Module classes whose assertions are migrated to ``assertion_checks`` in any file of the run
    (or were already): a file that only activates or instantiates them needs to know."""
    knowledge = RunKnowledge()
    for file, source in sources.items():
        knowledge.asserting_classes |= checked_classes(source, str(file))
    return knowledge


def run(paths: list[str], write: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        files = collect(list(paths))
    except UsageError as exc:
        print(f"tidyq migrate: {exc}", file=err)
        return 2
    sources: dict[Path, str] = {}
    trees: dict[Path, cst.Module] = {}
    bad = False
    for file in files:
        try:
            sources[file] = _read(file)
            trees[file] = cst.parse_module(sources[file])
        except UnicodeDecodeError as exc:
            print(f"{file}:1: cannot read as UTF-8: {exc.reason}", file=err)
            bad = True
        except OSError as exc:
            print(f"{file}: cannot read: {exc.strerror}", file=err)
            bad = True
        except cst.ParserSyntaxError as exc:
            print(f"{file}:{exc.raw_line}: syntax error, not migrated: {exc.message}", file=err)
            bad = True
    if bad:
        print("tidyq migrate: nothing was changed (fix the files above first)", file=err)
        return 2
    knowledge = _knowledge(sources)
    results: list[tuple[Path, str, list[Finding]]] = []
    for file in files:
        new, findings = migrate_source(sources[file], str(file), knowledge)
        results.append((file, new, findings))
    changed = written = 0
    all_findings: list[Finding] = []
    for file, new, findings in results:
        all_findings += findings
        if new == sources[file]:
            continue
        changed += 1
        if write and not findings:
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
        summary += f"; {len(all_findings)} place(s) in {blocked} file(s) need a hand (files with findings are " \
                   "not written)"
    print(summary, file=err)
    return 1 if all_findings else 0
