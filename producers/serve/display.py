"""The jobs page's data: one dict per table row, with the texts people read already formatted.

The same dicts feed the server-rendered HTML (templates/) and the JSON the page polls
(static/live.js writes each value into the element with the matching ``data-field``), so both
always read the same. ``key`` identifies a row between polls. Item inputs and outputs never
appear here: a failed item shows its custom_id, error type and error message only.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from producers.formatting import age_text, cost_text, errors_text, rate_text, started_text, target_text
from producers.job_overview import JobRow
from producers.ops_state import QueueState, WorkerState
from shared.config import Settings


def mlflow_ui_base(settings: Settings) -> str | None:
    """Where MLflow's UI is: TIDYQ_MLFLOW_UI_URL, else the tracking URI when it is a server."""
    base = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    if not base or urlsplit(base).scheme not in ("http", "https"):
        return None
    return base.rstrip("/")


def mlflow_run_url(base: str | None, run_id: str | None) -> str | None:
    """MLflow's UI resolves a run by its id alone (route ``#/runs/<id>``)."""
    return f"{base}/#/runs/{quote(run_id, safe='')}" if base and run_id else None


def job_row(row: JobRow, mlflow_base: str | None) -> dict:
    return {
        "key": row.id, "id": row.id, "kind": row.kind, "status": row.status,
        "progress": round(row.fraction * 100, 1), "percent": f"{row.fraction:.0%}",
        "done": f"{row.done}/{row.total}", "succeeded": row.succeeded, "failed": row.failed,
        "errors": (errors_text(row.error_types) + (" (counting...)" if row.error_types_partial else "")).strip() or "-",
        "rate": rate_text(row.items_per_second), "cost": cost_text(row.cost_usd),
        "target": target_text(row.backend, row.model), "started": started_text(row.started_at),
        "finished": started_text(row.finished_at), "error": row.error or "",
        "mlflow_url": mlflow_run_url(mlflow_base, row.mlflow_run_id),
    }


def error_rows(error_types: dict[str, int]) -> list[dict]:
    return [{"key": name, "type": name, "count": n} for name, n in error_types.items()]


def failed_item_row(result: dict) -> dict:
    error = result.get("error") or {}
    return {"key": str(result.get("custom_id")), "custom_id": str(result.get("custom_id")),
            "type": str(error.get("type") or "unknown"), "message": str(error.get("message") or ""),
            "attempts": result.get("attempts", 0), "target": target_text(result.get("backend"), result.get("model"))}


def queue_row(q: QueueState) -> dict:
    return {"key": q.name, "name": q.name, "depth": q.depth, "oldest": age_text(q.oldest_age_seconds),
            "workers": q.workers, "processes": q.processes, "rate": rate_text(q.items_per_second),
            "error_rate": "-" if q.error_rate is None else f"{q.error_rate:.2%}",
            "alert": "no worker" if q.workers == 0 and q.depth > 0 else ""}


def worker_row(w: WorkerState) -> dict:
    return {"key": w.hostname, "hostname": w.hostname, "host": w.host, "queues": ", ".join(w.queues),
            "processes": w.processes, "backends": ", ".join(w.backends) if w.backends else "-",
            "beat": age_text(w.seconds_since_beat)}


def breaker_row(b: dict) -> dict:
    window = b.get("window") or {}
    return {"key": b["target"], "target": b["target"], "state": b["state"],
            "window": f"{window.get('failures', 0)}/{window.get('calls', 0)}",
            "probes": b.get("probes_in_flight", 0), "fallbacks": b.get("served_as_fallback", 0)}
