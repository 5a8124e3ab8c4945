"""How a job's numbers read for people, the same in `tidyq jobs` and on the jobs page."""

from __future__ import annotations

import time


def started_text(ts: float | None) -> str:
    """UTC, to the second; '-' before the job started."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def cost_text(cost: float | None) -> str:
    """US dollars; '-' when no call of the job was priced."""
    return "-" if cost is None else f"${cost:.4f}"


def rate_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.1f}"


def target_text(backend: str | None, model: str | None) -> str:
    """backend:model as --fallback takes it."""
    return f"{backend or '-'}:{model}" if model else (backend or "-")


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def errors_text(error_types: dict[str, int], top: int = 3) -> str:
    """'TypeA 300, TypeB 25 (+2 more)': the most frequent error types of a job."""
    items = list(error_types.items())
    text = ", ".join(f"{name} {n}" for name, n in items[:top])
    return text + (f" (+{len(items) - top} more)" if len(items) > top else "")
