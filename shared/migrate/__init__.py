"""`tidyq migrate`: a libcst codemod from the five legacy wrappers and DSPy 2.6 to the unified
wrapper on DSPy 3 (see docs/migrate.md). ``run(paths, write)`` returns the exit code."""

from shared.migrate.runner import run

__all__ = ["run"]
