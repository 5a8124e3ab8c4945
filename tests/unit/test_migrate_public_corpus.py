"""`tidyq migrate` on public DSPy 2.x programs nobody here wrote: stanfordnlp/dspy 2.5.43's examples,
tutorial notebooks (as script exports) and testing tasks, pinned in tests/corpus/public/MANIFEST.tsv.

They are rebuilt from a clone (tests/corpus/public/build.py), not stored here. Each migrated file must
compile; a file without findings must hold no removed DSPy 2.x API and be left alone by a second run;
every finding must be marked in its file. The share fully migrated is printed as a per-file table and
held at what it was measured at (docs/migrate.md has the table and what is left for a person).
"""

from __future__ import annotations

import io
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from shared.migrate import run
from tests.migrate_support import removed_uses

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "corpus" / "public"))
import build  # noqa: E402  (the corpus builder lives with its manifest)

CLONE = os.environ.get("TIDYQ_DSPY_REPO", "")
MEASURED_FULLY_MIGRATED = 47  # of 52, measured 2026-12-01 (docs/migrate.md)

pytestmark = pytest.mark.skipif(not CLONE or not Path(CLONE).exists(),
                                reason="needs a git clone of stanfordnlp/dspy: set TIDYQ_DSPY_REPO to its path")


def test_public_dspy2_programs_migrate(tmp_path):
    files = build.export(Path(CLONE), tmp_path / "corpus")
    err = io.StringIO()
    code = run([str(tmp_path / "corpus")], write=True, out=io.StringIO(), err=err)
    assert code in (0, 1), err.getvalue()
    findings = Counter(line.split(":", 1)[0] for line in err.getvalue().splitlines()
                       if line.startswith(str(tmp_path)) and ": note: " not in line)
    table = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
        if findings[str(path)]:
            assert source.count("# tidyq-migrate:") >= 1, path.name
            table.append((path.name, "needs a hand", findings[str(path)]))
            continue
        assert not removed_uses(source), (path.name, removed_uses(source))
        table.append((path.name, "migrated", 0))
    again = io.StringIO()
    run([str(tmp_path / "corpus")], write=False, out=again, err=io.StringIO())
    for name, state, _ in table:  # a second run leaves every fully migrated file alone
        assert state != "migrated" or f"/{name}\n" not in again.getvalue(), name
    print("\n".join(f"{name:70} {state:13} {count}" for name, state, count in table))
    migrated = sum(state == "migrated" for _, state, _ in table)
    print(f"fully migrated: {migrated}/{len(table)} ({migrated / len(table):.0%})")
    assert len(table) == len(build.entries()) >= 30
    assert migrated >= MEASURED_FULLY_MIGRATED
