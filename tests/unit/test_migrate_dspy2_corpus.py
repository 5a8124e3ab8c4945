"""The DSPy 2.x-shaped programs of tests/corpus/dspy2, migrated with `tidyq migrate --write`, run on
DSPy 3.4 against the loopback OpenAI stand-in: their failing Suggest and Assert behave as in 2.x,
the Suggest's message reaches the model as ``feedback`` on the retried call, and the old
``dspy.OpenAI`` client's temperature 0.0 is kept."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.migrate import run
from tests.migrate_support import removed_uses

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "dspy2"
EXPECTED = {
    "qa_helpers.py": [{"result": "assert raised", "msg": "qa_helpers: the answer must mention zulu"}],
    "activation_of_import.py": [{"result": "assert raised", "msg": "checked_module: the summary must be detailed"}],
    "method_activation.py": [{"result": "returned", "has_tweet": True}, {"result": "DSPySuggestionError"}],
    "star_import_typed.py": [{"result": "bypassed", "ok": True},
                             {"result": "assert raised", "msg": "star_import_typed: the answer must start with zulu"}],
    "module_alias_retry.py": [{"result": "returned", "n": 2}],  # two hops, two distinct queries
    "notebook_export.py": [{"result": "returned", "ok": True}],
}
SUGGESTIONS = ["qa_helpers: keep the answer under 2 words", "checked_module: end the summary with a full stop",
               "method_activation: add a hashtag", "star_import_typed: the draft must start with zulu",
               "module_alias_retry: keep the query under 5 characters",
               "notebook_export: give four comma separated choices"]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dspy2")
    for path in CORPUS.glob("*.py"):
        shutil.copy(path, folder / path.name)
    err = io.StringIO()
    assert run([str(folder)], write=True, out=io.StringIO(), err=err) == 0, err.getvalue()
    return folder


def test_every_program_is_fully_migrated(migrated):
    for path in migrated.glob("*.py"):
        source = path.read_text()
        compile(source, str(path), "exec")
        assert not removed_uses(source), (path.name, removed_uses(source))
        assert "tidyq-migrate" not in source or "IPython magic" in source, path.name
    assert "from tidyq.assertions import" in (migrated / "qa_helpers.py").read_text()
    again = io.StringIO()
    assert run([str(migrated)], write=False, out=again, err=io.StringIO()) == 0 and again.getvalue() == ""


def _prompt(request) -> str:
    return "\n".join(str(m.get("content")) for m in request.body.get("messages", []))


def test_migrated_programs_run_with_2x_assertion_semantics(migrated, openai_fake, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDYQ_", "OPENAI_"))}
    env.update(OPENAI_API_BASE=openai_fake.base_url, PYTHONPATH=str(ROOT), LITELLM_LOCAL_MODEL_COST_MAP="True")
    # each program in its own clean interpreter (and DSPy cache), all at once: their start-up is most of the time
    procs = {name: subprocess.Popen([sys.executable, str(migrated / name)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                    env=env | {"DSPY_CACHEDIR": str(tmp_path / "cache" / name)}) for name in EXPECTED}
    try:
        outputs = {name: proc.communicate(timeout=180) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    for name, expected in EXPECTED.items():
        stdout, stderr = outputs[name]
        assert procs[name].returncode == 0, (name, stderr[-3000:])
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        assert [{k: v for k, v in line.items() if k != "program"} for line in lines] == expected, name
    requests = [r for r in openai_fake.requests if isinstance(r.body, dict)]
    prompts = [_prompt(r) for r in requests]
    for message in SUGGESTIONS:  # 2.x put the failing check's message into the retried predictor's prompt
        assert any("feedback" in p and message in p for p in prompts), message
    assert {r.body.get("temperature") for r in requests} == {0.0}  # dspy.OpenAI's default, kept by the rewrite
