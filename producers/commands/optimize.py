"""Registers `tidyq optimize`, `rollout`, `rollback` and `promote` (defined in producers.optimize_cli)."""

import producers.optimize_cli  # noqa: F401
