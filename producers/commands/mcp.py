"""Registers `tidyq mcp` (the command lives in producers/mcp_cli.py)."""

import producers.mcp_cli  # noqa: F401
