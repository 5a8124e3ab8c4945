"""How a chunk task looks in Flower and in Celery's logs: a readable name and argument summary.

Celery puts a task's arguments into the message (``argsrepr``) for Flower and its logs to show; the
default would be the chunk's items, i.e. users' inputs cut short only by Celery's repr limits. We
send our own: the job, its target and the chunk's size, never an input. ``shadow`` replaces the
task name Flower and the worker log show (the worker still runs the task registered under
CHUNK_TASK), so the task list tells which job, backend and chunk each row is. Both producers and
workers (requeues) send chunks by name with these options; nothing here imports workers.*.
"""

from __future__ import annotations

from typing import Any

SHORT_ID = 8  # characters of a job id in a task name (the full id is in argsrepr)
MODEL_IN_NAME = 40  # a long model id is cut in the name only


def chunk_task_name(base: str, job: dict[str, Any], chunk: int, requeues: int = 0) -> str:
    """e.g. ``tidyq.predict.chunk[1f2e3d4c mock #3]`` or ``...[1f2e3d4c direct:openai/gpt-4o-mini #0 r1]``."""
    model = job.get("model") or ""
    target = f"{job.get('backend')}:{model[:MODEL_IN_NAME]}" if model else str(job.get("backend"))
    retry = f" r{requeues}" if requeues else ""
    return f"{base}[{str(job.get('id', ''))[:SHORT_ID]} {target} #{chunk}{retry}]"


def chunk_argsrepr(job: dict[str, Any], chunk: int, items: int, requeues: int = 0) -> str:
    """What Flower shows as the task's args: identifiers and sizes only."""
    parts = [f"job={job.get('id')}", f"chunk={chunk}", f"items={items}", f"backend={job.get('backend')}"]
    if job.get("model"):
        parts.append(f"model={job['model']}")
    if job.get("program"):
        parts.append(f"program={job['program']}")
    if requeues:
        parts.append(f"requeues={requeues}")
    return "(" + ", ".join(parts) + ")"


def chunk_send_options(base: str, payload: dict[str, Any]) -> dict[str, str]:
    """``send_task``/``apply_async`` options for one chunk payload (``{"job", "chunk", "items", "requeues"}``)."""
    job, chunk, requeues = payload["job"], int(payload["chunk"]), int(payload.get("requeues") or 0)
    return {"shadow": chunk_task_name(base, job, chunk, requeues),
            "argsrepr": chunk_argsrepr(job, chunk, len(payload["items"]), requeues),
            "kwargsrepr": "{}"}


def optimize_send_options(base: str, job: dict[str, Any], request: dict[str, Any]) -> dict[str, str]:
    """The same for an optimize job: its trainset and valset are users' data, so only their sizes show."""
    target = f"{job.get('backend')}:{job['model']}" if job.get("model") else str(job.get("backend"))
    valset = request.get("valset")
    parts = [f"job={job.get('id')}", f"name={request.get('name')}", f"optimizer={request.get('optimizer')}",
             f"metric={request.get('metric')}", f"target={target}", f"trainset={len(request.get('trainset') or [])}"]
    if valset is not None:
        parts.append(f"valset={len(valset)}")
    return {"shadow": f"{base}[{str(job.get('id', ''))[:SHORT_ID]} {request.get('name')} {request.get('optimizer')}]",
            "argsrepr": "(" + ", ".join(parts) + ")", "kwargsrepr": "{}"}
