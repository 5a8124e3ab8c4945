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
    source = ("import dspy\nfrom shared import UnifiedConfig, UnifiedDSPyWrapper\n"
              "w = UnifiedDSPyWrapper(UnifiedConfig.from_env())\n")
    assert migrate(source) == (source, [])


def test_checks_anywhere_become_tidyq_assertions_calls():
    source = ("import dspy\nclass M(dspy.Module):\n    def forward(self, q):\n        p = self.g(q=q)\n"
              "        n = len(p.a)\n        if q:\n            try:\n"
              "                dspy.Assert(n > 1 and self.g, 'long')\n"
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


def test_notebook_magics_are_commented_out_with_their_line(tmp_path):
    notebook = tmp_path / "nb.py"
    notebook.write_text("# %%\n%load_ext autoreload\ntry:\n    import x\nexcept ImportError:\n    !pip install x \\\n"
                        "      --upgrade\nimport dspy\nlm = dspy.OpenAI(model='gpt-4o')\n")
    err = io.StringIO()
    assert run([str(notebook)], write=True, out=io.StringIO(), err=err) == 0, err.getvalue()
    assert f"{notebook}:2: note: IPython magic commented out: %load_ext autoreload" in err.getvalue()
    assert f"{notebook}:6: note: IPython magic commented out: !pip install x" in err.getvalue()
    written = notebook.read_text()
    compile(written, str(notebook), "exec")
    assert "    pass  # !pip install x \\  # tidyq-migrate:" in written and "# %%\n" in written
    assert 'dspy.LM("openai/gpt-4o", temperature=0.0)' in written


def test_a_file_with_findings_gets_its_safe_rewrites_and_a_mark_per_finding(tmp_path):
    path = tmp_path / "mixed.py"
    path.write_text("import dspy\nfrom dspy.signatures.signature import signature_to_template\n\n\n"
                    "def helper(p):\n    dspy.Suggest(len(p.answer) < 9, 'short')\n"
                    "    return signature_to_template(p)\n")
    err = io.StringIO()
    assert run([str(path)], write=True, out=io.StringIO(), err=err) == 1
    assert f"{path}:7: dspy.signatures.signature.signature_to_template: signature_to_template is gone" \
        in err.getvalue()
    written = path.read_text()
    assert "    Suggest(len(p.answer) < 9, 'short')\n" in written
    assert "    # tidyq-migrate: dspy.signatures.signature.signature_to_template: signature_to_template is gone" \
        in written
    assert run([str(path)], write=True, out=io.StringIO(), err=io.StringIO()) == 1
    assert path.read_text() == written  # the mark is written once


def test_name_clashes_use_the_module_path_and_dsp_moves():
    new, findings = migrate("import dspy\nimport dsp\nAssert = 1\ndspy.Assert(Assert == 1, 'x')\n"
                            "print(dsp.settings.lm)\n")
    assert not findings
    assert "import tidyq.assertions\n" in new and "tidyq.assertions.Assert(Assert == 1, 'x')" in new
    assert "print(dspy.settings.lm)" in new and "import dsp\n" not in new


def test_names_the_installed_dspy_lacks_are_reported():
    _, findings = migrate("import dspy\nlm = dspy.HFModel('x')\nr = dspy.ColBERTv2RetrieverLocal(p)\n")
    assert [(f.line, f.message.split(":")[0]) for f in findings] == [(2, "dspy.HFModel"),
                                                                     (3, "dspy.ColBERTv2RetrieverLocal")]


def test_every_import_form_of_the_assertion_api_moves_to_tidyq_assertions():
    new, findings = migrate(
        "import dspy\nimport dspy.primitives.assertions as A\nfrom dspy.primitives import assertions\n"
        "from dspy import Assert, Predict\nfrom dspy import Suggest\nfrom dspy.predict import Retry\n"
        "A.Suggest(True, 'a')\nassertions.Assert(True, 'b')\nAssert(True, 'c')\nSuggest(True, 'd')\n"
        "p = A.assert_transform_module(Predict('q -> a').map_named_predictors(Retry), A.backtrack_handler)\n"
        "A.activate_assertions(p)\n")
    assert not findings, findings
    assert new.startswith("import dspy\nimport tidyq.assertions as A\nfrom tidyq import assertions\n"
                          "from dspy import Predict\nfrom tidyq.assertions import Assert\n"
                          "from tidyq.assertions import Suggest\n")
    assert "Retry" not in new and "A.assert_transform_module(Predict('q -> a'), A.backtrack_handler)" in new
    assert "A.activate_assertions(p)" in new  # already the runtime's function: left as it is


def test_dsp_imports_move_or_are_reported():
    new, findings = migrate("from dsp.utils import deduplicate\nfrom dsp import *\nfrom dsp.modules import GPT3\n"
                            "import dspy.retrieve\nx = deduplicate([1])\n")
    assert "from dspy.dsp.utils import deduplicate\n" in new
    assert sorted(f.message.split(":")[0] for f in findings) == ["import of dsp", "import of dsp.modules"]



def test_knn_fewshot_moves_to_tidyq_dspy2_which_keeps_2x_default_vectorizer(openai_fake, monkeypatch):
    # examples/knn.ipynb and multi-input-output (2.5.43): KNNFewShot(7, trainset) without vectorizer=;
    # DSPy 3's requires one (TypeError at run); 2.x built sentence-transformers' all-MiniLM-L6-v2
    import sys
    import types

    import dspy

    with pytest.raises(TypeError, match="vectorizer"):
        dspy.KNNFewShot(7, [])
    source = "import dspy\nfrom dspy.teleprompt import KNNFewShot\nknn = KNNFewShot(2, trainset)\n"
    new, findings = migrate_source(source, "knn.py")
    assert findings == [] and "from tidyq.dspy2 import KNNFewShot" in new, new
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question")
                for q, a in [("red apple", "fruit"), ("blue sky", "air"), ("green leaf", "plant")]]
    scope: dict = {"trainset": trainset}
    with pytest.raises(ImportError, match="pip install sentence-transformers"):
        exec(compile(new, "knn.py", "exec"), dict(scope))  # noqa: S102 - the migrated program
    loaded: list[str] = []

    class SentenceTransformer:  # the package's API, vectors from the OpenAI stand-in's embedding
        def __init__(self, name):
            loaded.append(name)

        def encode(self, texts, batch_size=32, normalize_embeddings=False):
            import numpy as np

            from tests.fakes.openai_server import fake_embedding
            return np.array([fake_embedding(t) for t in texts], dtype="float32")

    monkeypatch.setitem(sys.modules, "sentence_transformers",
                        types.SimpleNamespace(SentenceTransformer=SentenceTransformer))
    exec(compile(new, "knn.py", "exec"), scope)  # noqa: S102 - the migrated program
    assert loaded == ["all-MiniLM-L6-v2"]
    student = dspy.Predict("question -> answer")
    with dspy.context(lm=dspy.LM("openai/gpt-4o-mini", api_base=openai_fake.base_url, api_key="k", cache=False)):
        compiled = scope["knn"].compile(student)
        assert compiled(question="red apples").answer
    prompt = str(openai_fake.requests[-1].body["messages"])
    assert "red apple" in prompt  # the nearest training example became the demo
