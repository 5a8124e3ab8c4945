"""Notebook exports (``jupyter nbconvert --to script``) carry IPython magics (``%pip install``,
``!ls``, ``%%capture``) that are not Python, so no parser reads the file. They cannot run in a plain
interpreter either, so they are commented out in place (``pass`` inside a block), each reported as a
note with its line;
``#%%`` cell markers are comments already."""

from __future__ import annotations

import re

import libcst as cst

from shared.migrate.findings import Finding

_MAGIC = re.compile(r"^(?P<indent>[ \t]*)(?P<magic>[%!].*)$")
NOTE = "# tidyq-migrate: IPython magic, not Python; commented out"


def comment_out_magics(source: str, path: str) -> tuple[str, list[Finding]]:
    """(source to migrate, notes). A file that parses as it is is returned unchanged."""
    try:
        cst.parse_module(source)
        return source, []
    except cst.ParserSyntaxError:
        pass
    lines = source.splitlines(keepends=True)
    notes = []
    continued = False  # a magic ending in a backslash goes on on the next line
    for number, line in enumerate(lines, 1):
        body = line.rstrip("\r\n")
        match = _MAGIC.match(body)
        if continued or (match and not match["magic"].startswith("!=")):
            indent = match["indent"] if match and not continued else ""
            text = body[len(indent):]
            # inside a block a comment would leave it empty: ``pass`` keeps it a block and does nothing
            keep = "pass  " if indent else ""
            lines[number - 1] = f"{indent}{keep}# {text}  {NOTE}{line[len(body):]}"
            if not continued:
                notes.append(Finding(path, number, f"note: IPython magic commented out: {text}"))
            continued = body.endswith("\\")
    return "".join(lines), notes
