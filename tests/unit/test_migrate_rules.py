"""Focused rewrites of `tidyq migrate` (libcst), and its command-line contract (exit codes)."""

import io

import pytest

from shared.migrate import run
from shared.migrate.transform import migrate_source


def migrate(source):
    return migrate_source(source, "x.py")


def test_comments_and_formatting_survive():
    source = ("from tidyllm.dspy_enhanced import DSPyEnhancedWrapper  # old\n\n\n"
              "# build it\nw = DSPyEnhancedWrapper(\n    model='m',  # the model\n)\n")
    new, findings = migrate(source)
    assert not findings
    assert "# build it\n" in new and "# the model" in new
    assert "UnifiedDSPyWrapper(UnifiedConfig.from_env(model='m'" in new


def test_import_module_alias_and_attribute_use():
    new, findings = migrate("import tidyllm.dspy_wrapper as dw\nw = dw.DSPyWrapper('openai/gpt-4o-mini')\n")
    assert not findings
    assert "tidyllm" not in new
    assert 'backend=os.environ.get("TIDYQ_BACKEND", "direct"), model=\'openai/gpt-4o-mini\'' in new
    assert "import os" in new


def test_gateway_assignment_configures_dspy_after():
    new, _ = migrate("import dspy as d\nfrom tidyllm.dspy_gateway_backend import configure_dspy_with_gateway\n"
                     "lm = configure_dspy_with_gateway('claude-3-sonnet')\n")
    assert new.splitlines()[-1] == "d.configure(lm=lm)"
    assert ".lm\n" in new


def test_already_migrated_source_is_returned_unchanged():
    source = "import dspy\nfrom shared import UnifiedConfig, UnifiedDSPyWrapper\nw = UnifiedDSPyWrapper(UnifiedConfig.from_env())\n"
    assert migrate(source) == (source, [])


def test_checks_anywhere_become_tidyq_assertions_calls():
    source = ("import dspy\nclass M(dspy.Module):\n    def forward(self, q):\n        p = self.g(q=q)\n"
              "        n = len(p.a)\n        if q:\n            try:\n                dspy.Assert(n > 1 and self.g, 'long')\n"
              "            except ValueError:\n                pass\n        dspy.Suggest(p.a != '', 'x')\n"
              "        p.a = p.a.upper()\n        return p\n")
    new, findings = migrate(source)
    assert not findings
    assert "from tidyq.assertions import Assert, Suggest\n" in new
    assert "                Assert(n > 1 and self.g, 'long')\n" in new and "        Suggest(p.a != '', 'x')\n" in new
    assert "dspy.Assert" not in new and "dspy.Suggest" not in new


def test_typed_predictor_and_legacy_lm_client():
    new, findings = migrate("from dspy.functional import TypedPredictor\nimport dspy\n"
                            "lm = dspy.OpenAI('gpt-4o-mini', api_key=KEY)\np = TypedPredictor('a -> b')\n")
    assert not findings
    assert 'dspy.LM("openai/gpt-4o-mini", api_key=KEY, temperature=0.0)' in new and "dspy.Predict('a -> b')" in new
    assert "functional" not in new


def test_cli_contract(tmp_path):
    err = io.StringIO()
    assert run([str(tmp_path / "missing.py")], write=False, out=io.StringIO(), err=err) == 2
    assert "no such file" in err.getvalue()
    (tmp_path / "notes.txt").write_text("x")
    assert run([str(tmp_path / "notes.txt")], write=False, out=io.StringIO(), err=io.StringIO()) == 2
    assert run([], write=False, out=io.StringIO(), err=io.StringIO()) == 2
    clean = tmp_path / "clean.py"
    clean.write_text("print('hi')\n")
    out = io.StringIO()
    assert run([str(clean)], write=True, out=out, err=io.StringIO()) == 0 and out.getvalue() == ""


@pytest.mark.parametrize("before, after", [
    ("m = assert_transform_module(M())", "m = assert_transform_module(M())"),
    ("m = assert_transform_module(M(), functools.partial(backtrack_handler, max_backtracks=4))",
     "m = assert_transform_module(M(), functools.partial(backtrack_handler, max_backtracks=4))"),
    ("m = M().activate_assertions(bypass_suggest_handler)", "m = activate_assertions(M(), bypass_suggest_handler)"),
    ("m = M()\nm.activate_assertions(max_backtracks=1)", "m = M()\nactivate_assertions(m, max_backtracks=1)"),
])
def test_activation_forms_keep_their_handler_and_arguments(before, after):
    source = ("import dspy, functools\nfrom dspy.primitives.assertions import *\n"
              "from dspy.primitives.assertions import assert_transform_module, bypass_suggest_handler\n"
              f"{before}\n")
    new, findings = migrate(source)
    assert not findings, findings
    assert "from tidyq.assertions import *\n" in new and "primitives" not in new
    assert new.endswith(f"{after}\n")
