"""DSPy 2.x names DSPy 3 removed that ``tidyq.dspy2`` keeps with their 2.x behaviour (see
shared/dspy2_compat.py and shared/dspy2_retrievers.py): every reference and import moves there.

    dspy.ChainOfThoughtWithHint(sig)                 -> ChainOfThoughtWithHint(sig)
    from dspy.retrieve.qdrant_rm import QdrantRM      -> from tidyq.dspy2 import QdrantRM
    from dsp.modules.cache_utils import cache_turn_on -> from tidyq.dspy2 import cache_turn_on
    dspy.Clarifai(model=URL, ...)                     -> Clarifai(model=URL, ...)   (a dspy.LM)
    Evaluate(..., return_outputs=True)                -> the same, Evaluate from tidyq.dspy2
    lm.inspect_history(n=1, skip=2)                   -> inspect_history(lm, n=1, skip=2)

Evaluate moves only in a file that passes 2.x's ``return_outputs=`` / ``return_all_scores=``
somewhere (to the constructor or to a call of the evaluator); such a keyword in a file that never
names DSPy's Evaluate (the evaluator came from elsewhere) is reported.
"""

from __future__ import annotations

import libcst as cst

from shared.migrate.cstutil import split_args
from shared.migrate.rule import RuntimeRule

RUNTIME = "tidyq.dspy2"
MOVED: dict[str, str] = {}
for _name, _qnames in (
    ("ChainOfThoughtWithHint", ("dspy", "dspy.predict", "dspy.predict.chain_of_thought_with_hint")),
    ("QdrantRM", ("dspy.retrieve.qdrant_rm",)),
    ("ClarifaiRM", ("dspy.retrieve.clarifai_rm",)),
    ("OpenAIVectorizer", ("dsp.modules.sentence_vectorizer",)),
    ("FastEmbedVectorizer", ("dsp.modules.sentence_vectorizer",)),
    ("Pyserini", ("dspy", "dsp")),
    ("Clarifai", ("dspy",)),
    ("cache_turn_on", ("dsp.modules.cache_utils",)),
    # 2.x defaulted the vectorizer to sentence-transformers; DSPy 3's requires one
    ("KNNFewShot", ("dspy", "dspy.teleprompt", "dspy.teleprompt.knn_fewshot")),
    ("KNN", ("dspy", "dspy.predict", "dspy.predict.knn")),
):
    for _module in _qnames:
        MOVED[f"{_module}.{_name}"] = _name
MOVED["dsp.modules.pyserini.PyseriniRetriever"] = MOVED["dsp.PyseriniRetriever"] = "Pyserini"
MOVED["dsp.modules.clarifai.ClarifaiLLM"] = "Clarifai"
PROVIDED = tuple(sorted({*MOVED.values(), "Evaluate", "inspect_history"}))
EVALUATE = {"dspy.Evaluate", "dspy.evaluate.Evaluate", "dspy.evaluate.evaluate.Evaluate"}
EVALUATE_KWARGS = ("return_outputs", "return_all_scores")
KEEPS_2X_EVALUATE = EVALUATE | {f"{RUNTIME}.Evaluate"}  # a file migrated before builds tidyq.dspy2's


def moved_name(qname: str) -> str | None:
    """tidyq.dspy2's name for a removed 2.x name (Evaluate aside: it moves only with 2.x keywords)."""
    return MOVED.get(qname)


class MovedRules(RuntimeRule):
    runtime = RUNTIME
    provided = PROVIDED
    roots = ("dspy", "dsp")

    def __init__(self, m):
        super().__init__(m)
        self.evaluate_2x = False

    def target(self, qname: str) -> str | None:
        if self.evaluate_2x and qname in EVALUATE:
            return "Evaluate"
        return moved_name(qname)

    def legacy_reason(self, qname: str) -> str | None:
        if moved_name(qname):
            return f"removed in DSPy 3 (tidyq.dspy2.{moved_name(qname)} keeps it), and this use could not be " \
                   "rewritten"
        return None

    def leave_call(self, original: cst.Call, updated: cst.Call):
        """``x.inspect_history(..., skip=k)``: 2.x's legacy clients took ``skip``; no DSPy 3 one does."""
        func = updated.func
        if not (isinstance(func, cst.Attribute) and func.attr.value == "inspect_history") or \
                not any(a.keyword is not None and a.keyword.value == "skip" for a in updated.args) or \
                any(a.star for a in updated.args):
            return None
        self.m.mark(original.func)
        args = [cst.Arg(func.value, comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))), *updated.args]
        return updated.with_changes(func=self.runtime_ref("inspect_history"), args=args)

    def analyze(self, module: cst.Module) -> None:
        rules = self
        keywords: list[cst.Arg] = []
        names_evaluate = False

        class _Scan(cst.CSTVisitor):
            def visit_Call(self, node: cst.Call) -> None:
                _, given, _ = split_args(node)
                keywords.extend(given[k] for k in EVALUATE_KWARGS if k in given)

            def visit_Name(self, node: cst.Name) -> None:
                nonlocal names_evaluate
                names_evaluate = names_evaluate or bool(rules.m.qnames(node) & KEEPS_2X_EVALUATE)

            def visit_Attribute(self, node: cst.Attribute) -> None:
                nonlocal names_evaluate
                names_evaluate = names_evaluate or bool(rules.m.qnames(node) & KEEPS_2X_EVALUATE)

        module.visit(_Scan())
        self.evaluate_2x = bool(keywords) and names_evaluate
        if keywords and not names_evaluate:
            for arg in keywords:
                self.m.report(arg, f"{cst.ensure_type(arg.keyword, cst.Name).value}= was removed from dspy.Evaluate "
                                   "in DSPy 3 and this file does not build its evaluator (tidyq.dspy2.Evaluate keeps "
                                   "2.x's tuples): build it with tidyq.dspy2.Evaluate, or unpack the "
                                   "EvaluationResult (.score, .results) by hand")
        self.find_taken(module)
