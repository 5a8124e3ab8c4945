"""The legacy corpus end to end: each program run the old way (tidyllm names on the shims, DSPy
2.6 assertions re-created by tests/corpus/legacy/run_programs.py --legacy) and, after
`tidyq migrate --write`, in a clean DSPy 3.4 interpreter with TIDYQ_BACKEND=mock: same stdout."""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.migrate import run

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "legacy"
DRIVER = CORPUS / "run_programs.py"


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDYQ_")}
    env.update(TIDYQ_BACKEND="mock", LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(ROOT),
               DSPY_CACHEDIR=str(tmp_path / "dspy-cache"))
    return env


def _run_programs(folder, tmp_path, legacy):
    args = [sys.executable, str(DRIVER)] + (["--legacy"] if legacy else []) + [str(folder)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.py"))}


@pytest.fixture
def programs(tmp_path):
    folder = tmp_path / "programs"
    shutil.copytree(CORPUS / "programs", folder)
    return folder


def test_migrated_programs_behave_like_the_legacy_ones(programs, tmp_path):
    before = _run_programs(programs, tmp_path, legacy=True)
    assert all(out.strip() for out in before.values()), before
    assert not any("UNCAUGHT" in out for out in before.values()), before

    original = _digest(programs)
    out, err = io.StringIO(), io.StringIO()
    assert run([str(programs)], write=False, out=out, err=err) == 0, err.getvalue()
    assert _digest(programs) == original, "the dry run changed files"
    assert "+from shared import" in out.getvalue()

    err = io.StringIO()
    assert run([str(programs)], write=True, out=io.StringIO(), err=err) == 0, err.getvalue()
    changed = {name for name, digest in _digest(programs).items() if original[name] != digest}
    assert changed == set(original) - {"already_migrated.py"}
    for path in programs.glob("*.py"):
        source = path.read_text()
        compile(source, str(path), "exec")
        assert "import tidyllm" not in source and "from tidyllm" not in source, path.name
        assert not re.search(r"\b(dspy|d)\.(Assert|Suggest)\(", source), path.name
        assert "primitives.assertions" not in source and "shared.compat" not in source

    after = _run_programs(programs, tmp_path, legacy=False)
    assert after == before

    # Idempotent: a second run finds nothing left to do.
    out = io.StringIO()
    assert run([str(programs)], write=False, out=out, err=io.StringIO()) == 0
    assert out.getvalue() == ""


def test_migrated_program_uses_backend_from_environment(programs, tmp_path):
    """The 'done' case: an old-style gateway program, migrated, runs on the backend the
    environment names, falling back to the gateway default the old code had."""
    target = programs / "assert_backtrack.py"
    assert run([str(target)], write=True, out=io.StringIO(), err=io.StringIO()) == 0
    env = _env(tmp_path)
    probe = f"import dspy, runpy; runpy.run_path({str(target)!r}); print(dspy.settings.lm.model)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("mock/")
    env.pop("TIDYQ_BACKEND")
    proc = subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({str(target)!r})"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0 and "gateway" in proc.stderr.lower(), proc.stderr[-2000:]


def test_unmigratable_code_is_reported_with_file_and_line_and_marked_in_the_written_file(tmp_path):
    folder = tmp_path / "manual"
    shutil.copytree(CORPUS / "manual", folder)
    path = folder / "needs_a_hand.py"
    source = path.read_text()
    expected = {i: m.group(1) for i, line in enumerate(source.splitlines(), 1)
                if (m := re.search(r"# expect: (.*)$", line))}
    err = io.StringIO()
    assert run([str(folder)], write=True, out=io.StringIO(), err=err) == 1
    written = path.read_text()
    assert "from tidyq.assertions import" in written and "dspy.Suggest" not in written  # the safe rewrites
    lines = written.splitlines()
    marked = [i for i, line in enumerate(lines) if re.search(r"# expect: (.*)$", line)]
    assert len(marked) == len(expected)
    for index in marked:  # the line above each finding says why
        assert lines[index - 1].strip().startswith("# tidyq-migrate:"), (lines[index], lines[index - 1])
    reported = {}
    for line in err.getvalue().splitlines():
        if line.startswith(f"{path}:"):
            number, message = line[len(str(path)) + 1:].split(": ", 1)
            reported.setdefault(int(number), []).append(message)
    for number, text in expected.items():
        assert any(text in message for message in reported.get(number, [])), (number, text, reported.get(number))
    assert set(reported) == set(expected), "every finding should be expected by the corpus"


def test_syntax_error_exits_2_and_writes_nothing(tmp_path):
    shutil.copytree(CORPUS / "broken", tmp_path / "broken")
    good = tmp_path / "broken" / "good.py"
    shutil.copy(CORPUS / "programs" / "enhanced_wrapper.py", good)
    before = _digest(tmp_path / "broken")
    err = io.StringIO()
    assert run([str(tmp_path / "broken")], write=True, out=io.StringIO(), err=err) == 2
    assert "syntax_error.py:3: syntax error, not migrated: '(' was never closed" in err.getvalue()  # Python's words
    assert _digest(tmp_path / "broken") == before
