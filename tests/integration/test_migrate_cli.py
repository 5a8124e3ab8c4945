"""`tidyq migrate` through the installed console script: exit codes 0 / 1 / 2, what is written, and
no traceback for a user's mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TIDYQ = str(Path(sys.executable).with_name("tidyq"))


def _tidyq(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDYQ_")}
    return subprocess.run([TIDYQ, "migrate", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_migrate_cli_exit_codes_and_writes(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("import dspy\nlm = dspy.OpenAI(model='gpt-4o')\ndspy.Suggest(True, 'ok')\n")
    done = _tidyq(str(good), "--write", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert good.read_text() == ('import dspy\nfrom tidyq.assertions import Suggest\n\n'
                                'lm = dspy.LM("openai/gpt-4o", temperature=0.0)\nSuggest(True, \'ok\')\n')

    manual = tmp_path / "manual.py"
    manual.write_text("import dspy\nr = dspy.Retry\n")
    found = _tidyq(str(manual), "--write", cwd=tmp_path)
    assert found.returncode == 1 and f"{manual}:2: dspy.Retry" in found.stderr
    assert manual.read_text().splitlines()[1].startswith("# tidyq-migrate: dspy.Retry")

    broken = tmp_path / "broken.py"
    broken.write_text("import dspy\nx = (\n")
    bad = _tidyq(str(tmp_path), "--write", cwd=tmp_path)
    assert bad.returncode == 2 and f"{broken}:2: syntax error" in bad.stderr
    assert "Traceback" not in bad.stderr and broken.read_text() == "import dspy\nx = (\n"
    assert _tidyq(str(tmp_path / "nope.py"), cwd=tmp_path).returncode == 2
