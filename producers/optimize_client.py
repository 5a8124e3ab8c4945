"""Submitting optimize jobs (``Client.submit_optimize`` delegates here).

Everything a producer can check is checked before the job exists: signature, optimizer and its
settings, metric, every trainset/valset line (file, line and field named). Then one job (kind
optimize, one result) is written and one task is sent to the ``optimize`` queue; the examples
travel in the task message (they are small: an optimizer wants tens to a few thousand).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from producers.target_check import check_target
from shared.errors import BadInput
from shared.jobs import JobKind, JobSpec, Target, new_job_id, signature_fields
from shared.task_labels import optimize_send_options


def _fields(signature: str | None, program: str | None, settings) -> tuple[list[str], list[str]]:
    if signature:
        ins, outs = signature_fields(signature)
        return list(ins), list(outs)
    from shared.programs import parse_program_uri, resolve_program, load_version

    parse_program_uri(program, where="--program")
    if not settings.mlflow_tracking_uri:
        raise BadInput("optimizing a registered program needs TIDYQ_MLFLOW_TRACKING_URI here too (to read its "
                       "signature); or pass --signature", where="--program")
    resolved = resolve_program(program)
    sig = load_version(resolved.name, resolved.version).predictors()[0].signature
    return list(sig.input_fields), [n for n in sig.output_fields if n != "reasoning"]


def _rows(source: Any, ins, outs, where: str) -> list[dict]:
    from shared.optimize import check_rows, read_examples_file

    if isinstance(source, (str, Path)):
        return read_examples_file(source, ins, outs)
    if not isinstance(source, (list, tuple)) or not source:
        raise BadInput("expected a JSONL path or a non-empty list of {'inputs': ..., 'outputs': ...}", where=where)
    return check_rows([r if isinstance(r, dict) else {} for r in source], ins, outs, where)


def submit_optimize(client, *, name: str, trainset: Any, valset: Any = None, signature: str | None = None,
                    program: str | None = None, kind: str = "predict", optimizer: str = "bootstrap-fewshot",
                    settings: dict | None = None, metric: str = "exact_match", metric_options: dict | None = None,
                    backend: str | None = None, model: str | None = None, time_limit: float | None = None,
                    num_threads: int = 1):
    """Check, write and enqueue an optimize job; returns a ``producers.client.Job``. Its single
    result's outputs hold ``model_uri`` (models:/NAME/VERSION) and the scores."""
    from shared.optimize import OptimizeRequest, check_settings, resolve_metric
    from producers.client import Job
    from workers.routing import OPTIMIZE_QUEUE, OPTIMIZE_TASK

    if bool(signature) == bool(program):
        raise BadInput("give --signature or --program (a registered models:/NAME/VERSION), exactly one",
                       where="--signature")
    from shared.programs import check_name

    check_name(name, where="--name")
    if kind not in ("predict", "chain_of_thought"):
        raise BadInput("kind is 'predict' or 'chain_of_thought'", where="--kind")
    check_settings(optimizer, settings)
    if ":" not in metric:
        resolve_metric(metric, metric_options)
    elif not all(part.strip() for part in metric.partition(":")[::2]):
        raise BadInput(f"a user metric is 'package.module:function', got {metric!r}", where="--metric")
    if time_limit is not None and time_limit <= 0:
        raise BadInput("the time limit must be > 0 seconds", where="--time-limit")
    ins, outs = _fields(signature, program, client.settings)
    train_rows = _rows(trainset, ins, outs, "trainset")
    val_rows = _rows(valset, ins, outs, "valset") if valset is not None else None
    backend_name = client.resolve_backend(backend, model)
    try:
        request = OptimizeRequest(name=name, signature=signature, program=program, kind=kind, trainset=train_rows,
                                  valset=val_rows, optimizer=optimizer, settings=dict(settings or {}), metric=metric,
                                  metric_options=dict(metric_options or {}), time_limit=time_limit,
                                  num_threads=num_threads)
    except ValueError as exc:
        raise BadInput(str(exc).splitlines()[-1] if str(exc) else "bad optimize request", where="optimize") from None
    spec = JobSpec(id=new_job_id(), kind=JobKind.OPTIMIZE, signature=signature, program=program, backend=backend_name,
                   model=model or None, total=1, chunk_size=1, ttl_seconds=client.settings.result_ttl_seconds,
                   created_at=time.time())
    notes = check_target(client.store.r, OPTIMIZE_QUEUE, Target(backend=backend_name, model=model or None),
                         client.settings)  # refuses (BadInput) before anything is written
    for note in notes:
        client.on_warning(note)
    client.store.create_job(spec)
    payload = {"job": spec.model_dump(mode="json"), "request": request.model_dump(mode="json")}
    try:
        client.app.send_task(OPTIMIZE_TASK, args=[payload], queue=OPTIMIZE_QUEUE,
                             **optimize_send_options(OPTIMIZE_TASK, payload["job"], payload["request"]))
    except BaseException as exc:
        client.store.fail_job(spec.id, f"enqueue interrupted: {type(exc).__name__}: {exc}")
        raise
    return Job(client, spec.id, warnings=notes)
