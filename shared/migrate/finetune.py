"""DSPy 2.5's fine-tuning API -> DSPy 3's (checked against dspy 3.4.1):

    DataFormat (dspy.clients.provider / utils_finetune)   -> TrainDataFormat (dspy.clients.utils_finetune)
    DataFormat.chat / DataFormat.completion                -> TrainDataFormat.CHAT / .COMPLETION
    class P(Provider): def finetune(..., data_format=None)  -> def finetune(..., train_data_format=None)
    lm.finetune(train_data=d, data_format="chat")           -> lm.finetune(train_data=d, train_data_format="chat")
    lm.finetune(train_data=d)                              -> lm.finetune(train_data=d, train_data_format=None)

Reported: ``BootstrapFinetune(...).compile(..., target=, epochs=, bsize=, ...)`` (2.4's API: DSPy 3's
compile takes student, trainset and teacher; training settings go to ``train_kwargs`` and the LM's
provider trains).

DSPy 3's LM.finetune calls ``provider.finetune(job=..., model=..., train_data=...,
train_data_format=..., train_kwargs=...)`` by keyword, so a 2.x provider's ``data_format``
parameter must be renamed (its uses in the method too); and ``train_data_format`` is required
(None allowed) where 2.x's ``data_format`` defaulted to None. The values are the same strings.
"""

from __future__ import annotations

import libcst as cst

from shared.migrate.cstutil import code, split_args
from shared.migrate.rule import Rule

DATA_FORMAT = {"dspy.clients.provider.DataFormat", "dspy.clients.utils_finetune.DataFormat"}
PROVIDER = {"dspy.clients.provider.Provider", "dspy.clients.Provider", "dspy.Provider"}
MEMBERS = {"chat": "CHAT", "completion": "COMPLETION"}
NEW_MODULE, NEW_NAME = "dspy.clients.utils_finetune", "TrainDataFormat"
OLD_PARAM, NEW_PARAM = "data_format", "train_data_format"


class _RenameName(cst.CSTTransformer):
    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return updated.with_changes(value=NEW_PARAM) if updated.value == OLD_PARAM else updated

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return False  # x.data_format is not the parameter (x is renamed in leave_Attribute)

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        return updated.with_changes(value=original.value.visit(self))

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)  # f(data_format=...) is another function's


BOOTSTRAP_FINETUNE = {"dspy.BootstrapFinetune", "dspy.teleprompt.BootstrapFinetune",
                      "dspy.teleprompt.bootstrap_finetune.BootstrapFinetune"}
COMPILE_KEYWORDS = {"student", "trainset", "teacher"}


class FinetuneRules(Rule):
    def analyze(self, module: cst.Module) -> None:
        rules = self
        assigned: list[tuple[int, str, int, bool]] = []  # (scope, target text, line, a BootstrapFinetune?)
        compiles: list[cst.Call] = []

        class _Scan(cst.CSTVisitor):
            def visit_Assign(self, node: cst.Assign) -> None:
                built = isinstance(node.value, cst.Call) and bool(rules.m.qnames(node.value.func) & BOOTSTRAP_FINETUNE)
                assigned.extend((rules._scope(node), code(t.target).strip(), rules.m.line(node), built)
                                for t in node.targets)

            def visit_Call(self, node: cst.Call) -> None:
                if isinstance(node.func, cst.Attribute) and node.func.attr.value == "compile":
                    compiles.append(node)

        module.visit(_Scan())
        for call in compiles:
            if self._compiles_bootstrap_finetune(call, assigned):
                _, keywords, starred = split_args(call)
                old = sorted(set(keywords) - COMPILE_KEYWORDS)
                if old or starred:
                    self.m.report(call, f"BootstrapFinetune.compile in DSPy 3 takes student, trainset, teacher only "
                                        f"(not {', '.join(old) or '**kwargs'}): 2.4's target=/epochs=/bsize=/lr= "
                                        "settings go to BootstrapFinetune(train_kwargs=...) and the LM's provider")

    def _scope(self, node: cst.CSTNode) -> int:
        return id(self.m.enclosing(node, cst.FunctionDef))

    def _compiles_bootstrap_finetune(self, call: cst.Call, assigned: list[tuple[int, str, int, bool]]) -> bool:
        """``BootstrapFinetune(...).compile(...)``, or ``tp.compile(...)`` where the last assignment to
        ``tp`` before it, in the same function, built a BootstrapFinetune."""
        owner = cst.ensure_type(call.func, cst.Attribute).value
        if isinstance(owner, cst.Call):
            return bool(self.m.qnames(owner.func) & BOOTSTRAP_FINETUNE)
        text, scope, line = code(owner).strip(), self._scope(call), self.m.line(call)
        last = [built for s, t, at, built in assigned if s == scope and t == text and at <= line]
        return bool(last) and last[-1]

    def leave_ref(self, original, updated):
        names = self.m.qnames(original)
        if isinstance(original, cst.Attribute) and original.attr.value in MEMBERS and \
                self.m.qnames(original.value) & DATA_FORMAT:
            self.m.mark(original, original.value)
            self.m.need_import(NEW_MODULE, NEW_NAME)
            return cst.Attribute(value=cst.Name(NEW_NAME), attr=cst.Name(MEMBERS[original.attr.value]))
        if not names & DATA_FORMAT or isinstance(self.m.parent(original), cst.ImportAlias):
            return None
        self.m.mark(original)
        self.m.need_import(NEW_MODULE, NEW_NAME)
        return cst.Name(NEW_NAME)

    def leave_function(self, original: cst.FunctionDef, updated: cst.FunctionDef):
        if original.name.value != "finetune" or \
                not any(p.name.value == OLD_PARAM for p in (*original.params.params, *original.params.kwonly_params)):
            return None
        owner = self.m.enclosing(original, cst.ClassDef)
        if owner is None or not any(self.m.qnames(base.value) & PROVIDER for base in owner.bases):
            return None
        return updated.with_changes(params=updated.params.visit(_RenameName()), body=updated.body.visit(_RenameName()))

    def leave_call(self, original: cst.Call, updated: cst.Call):
        if not (isinstance(original.func, cst.Attribute) and original.func.attr.value == "finetune") or \
                self.m.dspy_alias is None:
            return None
        positional, keywords, starred = split_args(updated)
        if OLD_PARAM in keywords:
            return updated.with_changes(args=[a.with_changes(keyword=cst.Name(NEW_PARAM))
                                              if a.keyword is not None and a.keyword.value == OLD_PARAM else a
                                              for a in updated.args])
        if "train_data" in keywords and NEW_PARAM not in keywords and "job" not in keywords and not starred and \
                len(positional) < 2:
            args = list(updated.args)
            args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
            return updated.with_changes(args=[*args, cst.Arg(keyword=cst.Name(NEW_PARAM), value=cst.Name("None"),
                                                              equal=cst.AssignEqual(
                                                                  whitespace_before=cst.SimpleWhitespace(""),
                                                                  whitespace_after=cst.SimpleWhitespace("")))])
        return None
