"""The base of the rule modules (wrappers, assertions, dspy3). Kept apart from the transformer
that runs them, so that the transformer imports the rules and no rule imports the transformer."""

from __future__ import annotations

from typing import Any


class Rule:
    """Every hook returns a replacement or None (not mine). ``m`` is the running Migrator
    (shared.migrate.transform): its helpers qnames/line/parent/report/mark/need_import/dspy."""

    def __init__(self, m: Any):
        self.m = m

    def legacy_reason(self, qname: str) -> str | None:
        return None

    def analyze(self, module: Any) -> None:
        pass

    def leave_call(self, original, updated):
        return None

    def leave_ref(self, original, updated):
        return None

    def leave_statement(self, original, updated):
        return None

    def leave_function(self, original, updated):
        return None

    def leave_class(self, original, updated):
        return None

    def leave_import_from(self, original, updated):
        return None

    def leave_import(self, original, updated):
        return None
