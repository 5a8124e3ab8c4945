"""Other DSPy 2.5/2.6 -> 3.x breaking changes tidyq migrate can see (checked against dspy 3.4.1).

Rewritten:
- dspy.TypedPredictor / dspy.TypedChainOfThought (dspy.functional, removed): dspy.Predict and
  dspy.ChainOfThought take typed signatures since 2.6;
- dspy.Program (alias removed): dspy.Module; dspy.SignatureOptimizer (alias removed): dspy.COPRO;
- legacy LM clients (dspy.OpenAI, dspy.Claude, dspy.OllamaLocal, ...): dspy.LM("<provider>/<model>").
Reported (no faithful automatic rewrite): dspy.Retry, dspy.ChainOfThoughtWithHint, MIPRO and
BayesianSignatureOptimizer (use MIPROv2, different arguments), the ``dsp`` package, the community
retrievers under dspy.retrieve, assertion settings (bypass_assert, ...), Evaluate's
return_outputs/return_all_scores (Evaluate now returns an EvaluationResult), TypedPredictor's
max_retries/explain.
"""

from __future__ import annotations

import libcst as cst

from shared.migrate.cstutil import code, expr, split_args, string_value
from shared.migrate.transform import Rule

RENAMES: dict[str, str] = {}
for _old, _new, _modules in (
    ("TypedPredictor", "Predict", ("dspy", "dspy.functional", "dspy.functional.functional")),
    ("TypedChainOfThought", "ChainOfThought", ("dspy", "dspy.functional", "dspy.functional.functional")),
    ("Program", "Module", ("dspy", "dspy.primitives", "dspy.primitives.program")),
    ("SignatureOptimizer", "COPRO", ("dspy", "dspy.teleprompt", "dspy.teleprompt.signature_opt")),
):
    for _module in _modules:
        RENAMES[f"{_module}.{_old}"] = _new

LM_CLIENTS = {"OpenAI": "openai", "GPT3": "openai", "AzureOpenAI": "azure", "Claude": "anthropic",
              "Cohere": "cohere", "Together": "together_ai", "OllamaLocal": "ollama_chat", "GROQ": "groq",
              "Mistral": "mistral", "Databricks": "databricks", "GoogleVertexAI": "vertex_ai", "Anyscale": "anyscale"}
LM_KWARGS = ("api_key", "api_base", "base_url", "api_version", "temperature", "max_tokens", "model_type", "top_p",
             "n", "stop", "num_retries", "cache")

REPORTED = {
    "dspy.Retry": "dspy.Retry was removed with assertions in DSPy 3; use dspy.Refine or dspy.BestOfN",
    "dspy.predict.retry.Retry": "dspy.Retry was removed with assertions in DSPy 3; use dspy.Refine or dspy.BestOfN",
    "dspy.ChainOfThoughtWithHint": "removed in DSPy 3; use dspy.ChainOfThought with a `hint` input field",
    "dspy.MIPRO": "MIPRO was removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.teleprompt.MIPRO": "MIPRO was removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.BayesianSignatureOptimizer": "removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.teleprompt.BayesianSignatureOptimizer": "removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.settings.bypass_assert": "assertion settings are gone in DSPy 3",
    "dspy.settings.bypass_suggest": "assertion settings are gone in DSPy 3",
    "dspy.settings.backtrack_to": "assertion settings are gone in DSPy 3",
}
EVALUATE = {"dspy.Evaluate", "dspy.evaluate.Evaluate", "dspy.evaluate.evaluate.Evaluate"}
EVALUATE_KWARGS = ("return_outputs", "return_all_scores")


class Dspy3Rules(Rule):
    def legacy_reason(self, qname: str) -> str | None:
        if qname in RENAMES:
            return f"renamed in DSPy 3 to dspy.{RENAMES[qname]}, but this use cannot be rewritten automatically"
        if qname.rsplit(".", 1)[-1] in LM_CLIENTS and qname.rsplit(".", 1)[0] == "dspy":
            return "legacy LM clients were removed; use dspy.LM('<provider>/<model>') (automatic only for a direct " \
                   "call with the model given)"
        if qname in REPORTED:
            return REPORTED[qname]
        if qname == "dsp" or qname.startswith("dsp."):
            return "the dsp package is gone in DSPy 3: use dspy.settings, dspy.LM, dspy.ColBERTv2"
        if qname == "dspy.retrieve" or (qname.startswith("dspy.retrieve.") and qname != "dspy.retrieve.Retrieve"):
            return "the community retrievers under dspy.retrieve were removed in DSPy 3; call the vendor's client " \
                   "from a function or dspy.Tool"
        if qname in ("dspy.functional",):
            return "dspy.functional was removed in DSPy 3"
        return None

    def _renamed(self, node: cst.CSTNode) -> str | None:
        return next((RENAMES[q] for q in self.m.qnames(node) if q in RENAMES), None)

    def analyze(self, module: cst.Module) -> None:
        rules = self

        class _Calls(cst.CSTVisitor):
            def visit_Call(self, node: cst.Call) -> None:
                rules._check_call(node)

            def visit_Import(self, node: cst.Import) -> None:
                for alias in node.names:
                    rules._check_module(alias, cst.helpers.get_full_name_for_node(alias.name) or "")

            def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
                if node.module is not None and not node.relative:
                    rules._check_module(node, cst.helpers.get_full_name_for_node(node.module) or "")

        module.visit(_Calls())

    def _check_module(self, node: cst.CSTNode, module: str) -> None:
        """Imports of packages DSPy 3 no longer has fail at import time, used or not."""
        if module == "dsp" or module.startswith("dsp.") or module == "dspy.retrieve" or module.startswith(
                "dspy.retrieve."):
            self.m.report(node, f"import of {module}: {self.legacy_reason(module)}")

    def _check_call(self, call: cst.Call) -> None:
        names = self.m.qnames(call.func)
        _, keywords, _ = split_args(call)
        if names & EVALUATE or any(k in keywords for k in EVALUATE_KWARGS):
            for key in EVALUATE_KWARGS:
                if key in keywords:
                    self.m.report(keywords[key], f"{key}= was removed from dspy.Evaluate in DSPy 3: calling it now "
                                                 "returns an EvaluationResult with .score and .results; adapt the "
                                                 "code that unpacks the result by hand")
        renamed = self._renamed(call.func)
        if renamed in ("Predict", "ChainOfThought"):
            dropped = [k for k in keywords if k in ("max_retries", "explain")]
            if dropped:
                self.m.report(call.func, f"TypedPredictor's {', '.join(dropped)} has no dspy.{renamed} counterpart; "
                                         "drop it by hand (the adapter retries parsing)")

    def leave_ref(self, original, updated):
        if id(original) in self.m.accounted:
            return None
        new = self._renamed(original)
        if new is None:
            return None
        parent = self.m.parent(original)
        if isinstance(parent, cst.ImportAlias):
            return None
        self.m.mark(original)
        return expr(self.m.dspy(new))

    def leave_call(self, original: cst.Call, updated: cst.Call):
        client = next((q.rsplit(".", 1)[1] for q in self.m.qnames(original.func)
                       if q.rsplit(".", 1)[0] == "dspy" and q.rsplit(".", 1)[1] in LM_CLIENTS), None)
        if client is None:
            return None
        positional, keywords, starred = split_args(updated)
        model = positional[0].value if positional else (keywords.pop("model").value if "model" in keywords else None)
        unknown = sorted(set(keywords) - set(LM_KWARGS))
        if starred or len(positional) > 1 or model is None or unknown:
            why = ("the model is not given (the legacy default is gone)" if model is None else
                   f"argument(s) {', '.join(unknown) or 'positional/starred'} have no dspy.LM counterpart")
            self.m.report(original.func, f"dspy.{client}(...) -> dspy.LM('{LM_CLIENTS[client]}/<model>'): {why}")
            return None
        literal = string_value(model)
        prefix = LM_CLIENTS[client]
        model_text = f'"{prefix}/{literal}"' if literal is not None else f'f"{prefix}/{{{code(model)}}}"'
        rest = "".join(f", {k}={code(a.value)}" for k, a in keywords.items())
        self.m.mark(original.func)
        return expr(f"{self.m.dspy('LM')}({model_text}{rest})")
