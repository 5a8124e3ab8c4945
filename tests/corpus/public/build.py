"""Rebuild the public DSPy 2.x corpus from a git clone of stanfordnlp/dspy (MIT licensed).

The programs are not copied into this repository: MANIFEST.tsv pins each one (repository, commit,
path, license) and this script exports them from a local clone: Python files as they are, notebooks
as percent-format scripts (code cells after ``# %%`` lines, IPython magics verbatim, as editors'
"export to Python" writes them), so `tidyq migrate` meets real notebook exports too.

    python tests/corpus/public/build.py /path/to/dspy-clone OUT_DIR
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

MANIFEST = Path(__file__).with_name("MANIFEST.tsv")


def entries() -> list[dict[str, str]]:
    with open(MANIFEST, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def notebook_as_script(text: str) -> str:
    cells = json.loads(text).get("cells", [])
    sources = ["".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", "")
               for c in cells if c.get("cell_type") == "code"]
    return "\n".join(f"# %%\n{source.rstrip()}\n" for source in sources)


def export(clone: Path, out: Path, *, keep_paths: bool = False) -> list[Path]:
    """Writes every manifest entry into ``out`` (flat names; with ``keep_paths``, at its path in the
    repository, a notebook as ``.py``, so that files importing their neighbours find them); returns
    the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in entries():
        text = subprocess.run(["git", "-C", str(clone), "show", f"{entry['commit']}:{entry['path']}"],
                              check=True, capture_output=True, text=True).stdout
        if entry["path"].endswith(".ipynb"):
            text = notebook_as_script(text)
        target = out / (str(Path(entry["path"]).with_suffix(".py")) if keep_paths else entry["file"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


if __name__ == "__main__":
    print("\n".join(str(p) for p in export(Path(sys.argv[1]), Path(sys.argv[2]))))
