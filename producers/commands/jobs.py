"""Registers `tidyq jobs` (producers/jobs_cli.py) and `tidyq serve` (producers/serve/cli.py)."""

import producers.jobs_cli  # noqa: F401
import producers.serve.cli  # noqa: F401
