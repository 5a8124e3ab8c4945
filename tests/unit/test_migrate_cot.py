"""`tidyq migrate`: 2.5's ChainOfThought `rationale` -> DSPy 3's `reasoning`, on the shapes of stanfordnlp/dspy
2.5.43's examples (intro.ipynb, math/gsm8k_assertions.ipynb, text_to_sql/financial_data_text_to_sql.ipynb)."""

from __future__ import annotations

import dspy

from shared.migrate.transform import migrate_source


def migrate(source):
    new, findings = migrate_source(source, "x.py")
    assert not findings
    compile(new, "x.py", "exec")
    return new


def test_a_module_level_chain_of_thoughts_prediction_reads_reasoning():
    new = migrate("import dspy\ngenerate = dspy.ChainOfThought(BasicQA)\npred = generate(question=q)\n"
                  "print(f\"Thought: {pred.rationale.split('.', 1)[1].strip()}\")\nprint(other.rationale)\n")
    assert "{pred.reasoning.split('.', 1)[1].strip()}" in new and "other.rationale" in new


def test_a_predictor_of_self_reassigned_and_rationale_type_renamed():
    new = migrate("import dspy\nclass M(dspy.Module):\n    def __init__(self):\n"
                  "        self.answer = dspy.ChainOfThought(TextToSQLAnswer)\n"
                  "        self.fix = dspy.ChainOfThought(SQLRectifier, rationale_type=dspy.OutputField(prefix='R:'))\n"
                  "        self.plain = dspy.Predict('q -> rationale')\n"
                  "    def forward(self, q):\n        sql = self.answer(q=q)\n        sql = self.fix(q=sql.sql)\n"
                  "        print(sql.rationale, self.answer(q=q).rationale, self.plain(q=q).rationale)\n"
                  "        return sql\n"
                  "    def other(self, sql):\n        return sql.rationale\n")
    assert "dspy.ChainOfThought(SQLRectifier, rationale_field=dspy.OutputField(prefix='R:'))" in new
    assert "print(sql.reasoning, self.answer(q=q).reasoning, self.plain(q=q).rationale)" in new
    assert "        return sql.rationale\n" in new  # another function's `sql` is not known to be a prediction


def test_a_signature_with_its_own_rationale_field_is_left_alone():
    source = ("import dspy\ncot = dspy.ChainOfThought('question -> rationale, answer')\np = cot(question=q)\n"
              "x = p.rationale\n")
    assert migrate(source) == source


def test_the_names_written_exist_in_dspy_3():
    import inspect

    assert "rationale_field" in inspect.signature(dspy.ChainOfThought.__init__).parameters
    assert "reasoning" in dspy.ChainOfThought("q -> a").predict.signature.output_fields
