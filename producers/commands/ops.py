"""Registers the operations commands (doctor, queues, metrics) on the tidyq CLI."""

import producers.ops_cli  # noqa: F401
