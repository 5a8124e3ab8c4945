"""The public DSPy 2.x programs of tests/corpus/public (stanfordnlp/dspy 2.5.43), migrated with
`tidyq migrate --write`, run as programs on DSPy 3.4: each ``python FILE`` in its own temporary
directory, offline, every OpenAI-compatible LM and every ColBERTv2 retriever on a loopback stand-in
(tests/migrate_runs_support.py says how, and how an outcome is read from stderr).

None may end in an error raised by DSPy or tidyq code (what a wrong rewrite or runtime causes); the
number that run to the end is held at what it was measured at. The per-file table is printed
(``-s``) and kept in docs/migrate.md. The files are exported at their paths in the repository, so that
``import utils`` next to a notebook finds its neighbour; a module of a package (a relative import)
runs as ``python -m``.
"""

from __future__ import annotations

import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.migrate import run
from tests.fakes.colbert_server import ColBERTv2Fake
from tests.migrate_runs_support import classify, run_program

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "corpus" / "public"))
import build  # noqa: E402  (the corpus builder lives with its manifest)

CLONE = os.environ.get("TIDYQ_DSPY_REPO", "")
MEASURED_RAN = 16  # of 52 ran to the end, measured 2026-12-01 (docs/migrate.md)

needs_clone = pytest.mark.skipif(not CLONE or not Path(CLONE).exists(),
                                 reason="needs a git clone of stanfordnlp/dspy: set TIDYQ_DSPY_REPO to its path")


@needs_clone
def test_public_dspy2_programs_run_on_dspy3_after_migration(tmp_path, openai_fake):
    tree = tmp_path / "corpus"
    files = build.export(Path(CLONE), tree, keep_paths=True)
    err = io.StringIO()
    assert run([str(tree)], write=True, out=io.StringIO(), err=err) in (0, 1), err.getvalue()
    with ColBERTv2Fake() as colbert, ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda f: run_program(f, openai_fake.base_url, colbert.url, root=tree, timeout=90),
                                 files))
    print("\n".join(f"{o.name:66} {o.kind:10} {o.detail}" for o in outcomes))
    ran = [o.name for o in outcomes if o.kind == "ran"]
    print(f"ran to the end: {len(ran)}/{len(outcomes)}")
    migration = {o.name: (o.detail, o.stderr[-2500:]) for o in outcomes if o.kind == "migration"}
    assert not migration, migration
    assert len(outcomes) == len(build.entries()) and len(ran) >= MEASURED_RAN
    assert openai_fake.request_count > 0 and colbert.queries  # the programs that ran reached the stand-ins


# ---- the classification itself, on stderr in the shapes the runs produce ------------------------

def _tb(frames: list[tuple[str, int]], last: str) -> str:
    lines = ["Traceback (most recent call last):"]
    lines += [f'  File "{file}", line {line}, in <module>' for file, line in frames]
    return "\n".join([*lines, last]) + "\n"


PROGRAM = Path("/tmp/x/examples/skycamp2023.py")
DSPY = f"{ROOT}/.venv/lib/python3.11/site-packages/dspy/clients/base_lm.py"


@pytest.mark.parametrize("stderr, kind, detail", [
    (_tb([(str(PROGRAM), 182)], "TypeError: BaseLM.inspect_history() got an unexpected keyword argument 'skip'"),
     "migration", "TypeError"),
    (_tb([(str(PROGRAM), 3)], "ModuleNotFoundError: No module named 'dspy.primitives.assertions'"), "migration", ""),
    (_tb([(str(PROGRAM), 3)], "ModuleNotFoundError: No module named 'datasets'"), "dependency", "datasets (line 3)"),
    (_tb([(str(PROGRAM), 9), (DSPY, 40)], "AttributeError: 'LM' object has no attribute 'request'"), "migration", ""),
    (_tb([(str(PROGRAM), 15)], "ValueError: tidyq-run: api_base is not a URL: 'http://h:[1, 2]/v1'"), "migration", ""),
    (_tb([(str(PROGRAM), 34)], "urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>"),
     "data", "URLError"),
    (_tb([(str(PROGRAM), 42)], "ValueError: No objects to concatenate"), "program", "ValueError"),
    (_tb([(str(PROGRAM), 19)], "dspy.utils.exceptions.AdapterParseError: Failed to parse field fact"), "standin", ""),
])
def test_outcomes_are_told_apart(stderr, kind, detail):
    outcome = classify(PROGRAM.name, PROGRAM, 1, stderr)
    assert outcome.kind == kind and detail in outcome.detail, outcome
    assert classify(PROGRAM.name, PROGRAM, 0, stderr).kind == "ran"
