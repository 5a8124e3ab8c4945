"""`tidyq migrate`: a libcst codemod from the five legacy wrappers and DSPy 2.x code to the unified
wrapper, tidyq.assertions and DSPy 3 (see docs/migrate.md). ``run(paths, write)`` returns the exit code."""

from shared.migrate.runner import run

__all__ = ["run"]
