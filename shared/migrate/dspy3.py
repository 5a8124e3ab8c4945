"""Other DSPy 2.5/2.6 -> 3.x breaking changes tidyq migrate can see (checked against dspy 3.4.1).

Rewritten:
- dspy.TypedPredictor / dspy.TypedChainOfThought (dspy.functional, removed): dspy.Predict and
  dspy.ChainOfThought take typed signatures since 2.6;
- dspy.Program (alias removed): dspy.Module; dspy.SignatureOptimizer (alias removed): dspy.COPRO;
- legacy LM clients (dspy.OpenAI, dspy.OllamaLocal, dspy.HFClientVLLM, ...): dspy.LM("<provider>/<model>")
  with the old defaults (lm_clients.py);
- dspy.retrieve.Retrieve (the dspy.retrieve package is gone): dspy.Retrieve.
Moved to tidyq.dspy2 (which keeps their 2.x behaviour; moved.py): ChainOfThoughtWithHint, QdrantRM,
ClarifaiRM, Pyserini, dspy.Clarifai, dsp's OpenAIVectorizer and cache_turn_on, and Evaluate where
2.x's return_outputs/return_all_scores are used.
Reported (no faithful automatic rewrite): dspy.Retry, MIPRO and
BayesianSignatureOptimizer (use MIPROv2, different arguments), the ``dsp`` package, the community
retrievers under dspy.retrieve, signature_to_template, reading assertion settings, TypedPredictor's
max_retries/explain; and, as a safety net, any other ``dspy.<name>`` the installed DSPy does not have.
"""

from __future__ import annotations

import importlib
from functools import cache

import libcst as cst

from shared.migrate.cstutil import code, expr, split_args
from shared.migrate.lm_clients import CLIENTS, Unsupported, lm_arguments
from shared.migrate.moved import moved_name
from shared.migrate.rule import Rule

RENAMES: dict[str, str] = {}
for _old, _new, _modules in (
    ("TypedPredictor", "Predict", ("dspy", "dspy.functional", "dspy.functional.functional")),
    ("TypedChainOfThought", "ChainOfThought", ("dspy", "dspy.functional", "dspy.functional.functional")),
    ("Program", "Module", ("dspy", "dspy.primitives", "dspy.primitives.program")),
    ("SignatureOptimizer", "COPRO", ("dspy", "dspy.teleprompt", "dspy.teleprompt.signature_opt")),
    ("Retrieve", "Retrieve", ("dspy.retrieve", "dspy.retrieve.retrieve")),
):
    for _module in _modules:
        RENAMES[f"{_module}.{_old}"] = _new
# Moved, same function (paths under dspy; each is imported in tests/unit/test_migrate_dspy_names.py).
RENAMES.update({
    "dspy.evaluate.answer_exact_match_str": "evaluate.metrics._answer_match",  # 2.x: = dsp.answer_match
    "dspy.evaluate.metrics.answer_exact_match_str": "evaluate.metrics._answer_match",
    "dsp.answer_match": "evaluate.metrics._answer_match",
    "dsp.passage_match": "evaluate.metrics._passage_match",
})

REPORTED = {
    "dspy.Retry": "dspy.Retry was removed with assertions in DSPy 3; use dspy.Refine or dspy.BestOfN",
    "dspy.predict.retry.Retry": "dspy.Retry was removed with assertions in DSPy 3; use dspy.Refine or dspy.BestOfN",
    "dspy.predict.Retry": "dspy.Retry was removed with assertions in DSPy 3; use dspy.Refine or dspy.BestOfN",
    "dspy.signatures.signature.signature_to_template": "signature_to_template is gone in DSPy 3: prompts are built "
                                                       "by adapters, e.g. dspy.ChatAdapter().format(signature, demos, "
                                                       "inputs)",
    "dspy.MIPRO": "MIPRO was removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.teleprompt.MIPRO": "MIPRO was removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.BayesianSignatureOptimizer": "removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.teleprompt.BayesianSignatureOptimizer": "removed; dspy.MIPROv2 replaces it with different arguments",
    "dspy.settings.bypass_assert": "DSPy 3's settings have no bypass_assert unless configured: read it with "
                                   "dspy.settings.get('bypass_assert', False) (tidyq.assertions honours it)",
    "dspy.settings.bypass_suggest": "DSPy 3's settings have no bypass_suggest unless configured: read it with "
                                    "dspy.settings.get('bypass_suggest', False) (tidyq.assertions honours it)",
    "dspy.settings.backtrack_to": "2.x's backtracking state is gone (tidyq.assertions keeps it per call)",
}


class Dspy3Rules(Rule):
    def __init__(self, m):
        super().__init__(m)
        self.constants: dict[str, str] = {}

    def _read_constants(self, module: cst.Module) -> None:
        """Module-level names assigned once, to a literal (``ports = [7140, 7141]``): what a legacy
        client's argument holds when it is given by name."""
        counts: dict[str, int] = {}
        self.constants = {}
        for statement in module.body:
            for small in getattr(statement, "body", []) if isinstance(statement, cst.SimpleStatementLine) else []:
                if isinstance(small, cst.Assign):
                    for target in small.targets:
                        if isinstance(target.target, cst.Name):
                            counts[target.target.value] = counts.get(target.target.value, 0) + 1
                            self.constants[target.target.value] = code(small.value)
        self.constants = {name: value for name, value in self.constants.items() if counts[name] == 1}

    def legacy_reason(self, qname: str) -> str | None:
        if qname in RENAMES:
            return f"renamed in DSPy 3 to dspy.{RENAMES[qname]}, but this use cannot be rewritten automatically"
        if qname.rsplit(".", 1)[-1] in CLIENTS and qname.rsplit(".", 1)[0] == "dspy":
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
        if missing_in_dspy(qname):
            return f"the installed DSPy ({_dspy_version()}) has no {qname}"
        return None

    def _renamed(self, node: cst.CSTNode) -> str | None:
        return next((RENAMES[q] for q in self.m.qnames(node) if q in RENAMES), None)

    def analyze(self, module: cst.Module) -> None:
        self._read_constants(module)
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
        """``from dsp.x import y`` fails at import time, used or not, unless rewritten (an unused
        ``import dsp`` is removed, a used one is reported at its uses)."""
        if isinstance(node, cst.ImportFrom) and (module == "dsp" or module.startswith("dsp.")) and \
                not self._dsp_names_exist(node, module) and not self._all_moved(node, module):
            self.m.report(node, f"import of {module}: {self.legacy_reason(module)}")

    @staticmethod
    def _all_moved(node: cst.ImportFrom, module: str) -> bool:
        """Every name is kept by tidyq.dspy2 (shared.migrate.moved rewrites the import)."""
        return not isinstance(node.names, cst.ImportStar) and \
            all(moved_name(f"{module}.{alias.name.value}") for alias in node.names)

    @staticmethod
    def _dsp_names_exist(node: cst.ImportFrom, module: str) -> bool:
        if isinstance(node.names, cst.ImportStar):
            return False
        return all(dsp_replacement(f"{module}.{alias.name.value}") for alias in node.names)

    def leave_import_from(self, original: cst.ImportFrom, updated: cst.ImportFrom):
        if original.module is None or original.relative:
            return None
        module = cst.helpers.get_full_name_for_node(original.module) or ""
        if not ((module == "dsp" or module.startswith("dsp.")) and self._dsp_names_exist(original, module)):
            return None
        self.m.mark(original)
        groups: dict[str, list[cst.ImportAlias]] = {}  # new module -> its names (dsp.utils went two ways)
        for alias in updated.names:  # type: ignore[union-attr]  # ImportStar was excluded above
            target = dsp_replacement(f"{module}.{alias.name.value}") or ""
            groups.setdefault(target.rsplit(".", 1)[0], []).append(alias.with_changes(comma=cst.MaybeSentinel.DEFAULT))
        imports = [updated.with_changes(module=expr(target), names=names, lpar=None,
                                        rpar=None) if len(groups) > 1 else
                   updated.with_changes(module=expr(target)) for target, names in groups.items()]
        return imports[0] if len(imports) == 1 else cst.FlattenSentinel(imports)

    def _check_call(self, call: cst.Call) -> None:
        _, keywords, _ = split_args(call)
        renamed = self._renamed(call.func)
        if renamed in ("Predict", "ChainOfThought"):
            dropped = [k for k in keywords if k in ("max_retries", "explain")]
            if dropped:
                self.m.report(call.func, f"TypedPredictor's {', '.join(dropped)} has no dspy.{renamed} counterpart; "
                                         "drop it by hand (the adapter retries parsing)")

    def leave_ref(self, original, updated):
        if id(original) in self.m.accounted:
            return None
        dsp = next((r for r in map(dsp_replacement, self.m.qnames(original)) if r), None)
        if dsp is not None:
            return self._dsp_ref(original, dsp)
        new = self._renamed(original)
        if new is None:
            return None
        parent = self.m.parent(original)
        if isinstance(parent, cst.ImportAlias):
            return None
        self.m.mark(original)
        return expr(self.m.dspy(new))

    def _dsp_ref(self, original, replacement: str):
        """dsp.settings -> dspy.settings, dsp.utils.X -> dspy.dsp.utils.X (what DSPy 3 kept of dsp)."""
        parent = self.m.parent(original)
        if isinstance(parent, cst.Attribute) and parent.value is original:
            return None  # the outermost attribute is rewritten whole
        self.m.mark(original)
        if isinstance(original, cst.Name):
            return None  # bound by `from dsp... import`, rewritten there
        return expr(self.m.dspy(replacement[len("dspy."):]))  # dsp.x.y: an attribute chain, rewritten whole

    def leave_call(self, original: cst.Call, updated: cst.Call):
        client = next((q.rsplit(".", 1)[1] for q in self.m.qnames(original.func)
                       if q.rsplit(".", 1)[0] == "dspy" and q.rsplit(".", 1)[1] in CLIENTS), None)
        if client is None:
            return None
        positional, keywords, starred = split_args(updated)
        try:
            if starred:
                raise Unsupported("*args/**kwargs cannot be mapped to dspy.LM's arguments")
            notes: list[str] = []
            arguments = lm_arguments(client, [code(a.value) for a in positional],
                                     {k: code(a.value) for k, a in keywords.items()}, notes,
                                     self.constants)
        except Unsupported as exc:
            self.m.report(original.func, f"dspy.{client}(...) -> dspy.LM('{CLIENTS[client].provider}/<model>'): {exc}")
            return None
        self.m.mark(original.func)
        for note in notes:
            self.m.note(original.func, note)
        return cst.parse_expression(f"{self.m.dspy('LM')}({arguments})")


def dsp_replacement(qname: str) -> str | None:
    """What ``dsp.<path>`` (2.x's bundled package) is in the installed DSPy, if it still exists."""
    if qname == "dsp.settings" or qname.startswith("dsp.settings."):
        return "dspy" + qname[len("dsp"):]
    if not qname.startswith("dsp."):
        return None
    if qname in RENAMES:
        return f"dspy.{RENAMES[qname]}"
    candidates = ["dspy.dsp" + qname[len("dsp"):]]
    if qname.count(".") <= 2 and qname.split(".")[1] in ("utils", qname.rsplit(".", 1)[1]):
        candidates.append("dspy.evaluate.metrics." + qname.rsplit(".", 1)[1])  # 2.x's dsp.utils metrics
    return next((c for c in candidates if not missing_in_dspy(c)), None)


@cache
def missing_in_dspy(qname: str) -> bool:
    """True when ``dspy.a.b.Name`` names a module or a module's attribute the installed DSPy lacks
    (only the first name after the deepest importable module is checked: deeper ones are attributes
    of classes or objects, which a static name cannot tell)."""
    parts = qname.split(".")
    if parts[0] != "dspy" or len(parts) < 2:
        return False
    module = importlib.import_module("dspy")
    index = 1
    while index < len(parts):
        try:
            module = importlib.import_module(".".join(parts[:index + 1]))
            index += 1
        except ImportError:
            break
    if index == len(parts):
        return False
    return not hasattr(module, parts[index]) and not _fails_for_another_reason(".".join(parts[:index + 1]))


def _fails_for_another_reason(name: str) -> bool:
    """A name that fails to import for another reason than not existing (a missing optional
    dependency) is not DSPy's removal."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        return exc.name is not None and not name.startswith(exc.name)
    except ImportError:
        return True
    return True


def _dspy_version() -> str:
    import dspy

    return f"dspy {dspy.__version__}"
