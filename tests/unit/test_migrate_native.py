"""`tidyq migrate --native`: the simple Suggest form lifted to dspy.Refine, on the shape of stanfordnlp/dspy
2.5.43's examples/math/gsm8k_assertions.ipynb; every other form left on tidyq.assertions with a note.
The lifted program is run on DSPy 3.4 against the loopback OpenAI stand-in."""

from __future__ import annotations

import importlib.util
import io

import dspy
import pytest

from shared.migrate import run
from shared.migrate.transform import migrate_source

GSM8K = '''import dspy

def extract_number(question):
    return [int(s) for s in question.split() if s.isdigit()]

def has_numbers(rationale, numbers):
    for number in numbers:
        if str(number) not in rationale:
            return False, number
    return True, None

class SimpleMathSolverWithSuggest(dspy.Module):
    def __init__(self):
        self.prog = dspy.ChainOfThought("question -> answer")

    def forward(self, question):
        pred = self.prog(question=question)
        rationale_has_numbers, missing_number = has_numbers(pred.RATIONALE, extract_number(question))
        dspy.Suggest(rationale_has_numbers, f"Your Reasoning should contain {missing_number}.")
        dspy.Suggest(len(pred.answer) < LIMIT, "Your Answer should be a number.")
        return pred

simple_math_solver_suggest = SimpleMathSolverWithSuggest().activate_assertions()
'''


def native(source):
    notes: list = []
    new, findings = migrate_source(source, "x.py", native=True, notes=notes)
    compile(new, "x.py", "exec")
    return new, findings, [n.message for n in notes]


def test_the_gsm8k_form_becomes_a_refine_with_the_checks_as_its_reward():
    new, findings, notes = native(GSM8K.replace("RATIONALE", "rationale"))
    assert not findings
    assert notes == ["note: --native: SimpleMathSolverWithSuggest.forward lifted to dspy.Refine(N=3, "
                     "threshold=1.0); retries get Refine's advice, not 2.x's feedback field"]
    assert "\n".join([
        "    def forward(self, question):",
        "        def pred_reward(args, pred):",
        "            rationale_has_numbers, missing_number = has_numbers(pred.reasoning, extract_number(question))",
        "            checks = [(rationale_has_numbers, f\"Your Reasoning should contain {missing_number}.\"), "
        "(len(pred.answer) < LIMIT, \"Your Answer should be a number.\")]",
        "            return sum(bool(passed) for passed, _ in checks) / len(checks)",
        "        pred = dspy.Refine(module=self.prog, N=3, reward_fn=pred_reward, threshold=1.0)"
        "(question=question)",
        "        return pred\n"]) in new
    assert "Suggest" not in new.replace("WithSuggest", "")
    assert "activate_assertions(SimpleMathSolverWithSuggest())" in new
    assert migrate_source(GSM8K, "x.py")[0].count("        Suggest(") == 2  # without --native: tidyq.assertions


@pytest.fixture
def lifted(openai_fake, tmp_path):
    lm = dspy.LM("openai/fake-model", api_base=openai_fake.base_url, api_key="sk-test", cache=False, num_retries=0)

    def build(limit):  # a file, imported: Refine reads its reward's source
        path = tmp_path / f"lifted_{limit}.py"
        path.write_text(native(GSM8K.replace("RATIONALE", "reasoning").replace("LIMIT", str(limit)))[0])
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module.simple_math_solver_suggest

    with dspy.context(lm=lm):
        yield build, openai_fake


def _tries(fake) -> int:
    """Requests of the math predictor (Refine's advice calls ask for `advice`)."""
    return sum("`answer`" in r.body["messages"][0]["content"] for r in fake.requests)


def test_a_passing_check_costs_one_call(lifted):
    build, fake = lifted
    pred = build(10_000)("What is 2 plus 3?")
    assert pred.answer and _tries(fake) == 1


def test_a_failing_suggest_is_retried_three_times_then_the_prediction_returned(lifted):
    build, fake = lifted
    pred = build(0)("What is 2 plus 3?")  # len(answer) < 0 never holds: 2.x bypassed it after the backtracks
    assert pred.answer and _tries(fake) == 3


@pytest.mark.parametrize("change, why", [
    (("dspy.Suggest(len(", "dspy.Assert(len("), "it has a dspy.Assert"),
    (("SimpleMathSolverWithSuggest().activate_assertions()", "SimpleMathSolverWithSuggest()"), "not activated"),
    (("activate_assertions()", "activate_assertions(handler)"), "not activated"),
    (("\"Your Answer should be a number.\")", "\"number\", target_module=self.other)"), "targets another module"),
    (("        return pred\n", "        self.log(pred)\n        return pred\n"), "does more than assign"),
    (("        return pred\n", "        return pred.answer\n"), "does not end with `return pred`"),
])
def test_other_forms_stay_on_tidyq_assertions_with_a_note(change, why):
    new, findings, notes = native(GSM8K.replace("RATIONALE", "reasoning").replace(*change))
    assert "Refine" not in new and "Suggest(" in new
    assert len(notes) == 1 and "stays on tidyq.assertions" in notes[0] and why in notes[0], notes


def test_assert_transform_module_with_the_default_handler_counts_as_activation(tmp_path):
    source = GSM8K.replace("SimpleMathSolverWithSuggest().activate_assertions()",
                           "assert_transform_module(SimpleMathSolverWithSuggest().map_named_predictors(Retry), "
                           "backtrack_handler)")
    source = "from dspy.primitives.assertions import assert_transform_module, backtrack_handler\n" \
             "from dspy.predict import Retry\n" + source
    path = tmp_path / "m.py"
    path.write_text(source)
    err = io.StringIO()
    assert run([str(path)], write=True, out=io.StringIO(), err=err, native=True) == 0
    assert f"{path}:14: note: --native: SimpleMathSolverWithSuggest.forward lifted" in err.getvalue()
    assert "dspy.Refine(module=self.prog" in path.read_text()
