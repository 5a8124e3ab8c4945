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

from shared.errors import BadInput
from shared.jobs import JobKind, JobSpec, new_job_id, signature_fields
from shared.task_labels import optimize_send_options


def _fields(signature: str | None, program: str | None, settings) -> tuple[Any, list[str] | None]:
    """What trainset rows must match (see shared.optimize.check_rows): a signature's fields, a
    user module's forward() parameters, or None for what only the workers can tell."""
    if signature:
        ins, outs = signature_fields(signature)
        return list(ins), list(outs)
    from producers.program_check import check_program
    from shared.program_uri import is_import_path

    if not program:
        raise BadInput("give --signature or --program", where="--program")
    inputs = check_program(program, settings)
    if is_import_path(program):
        return inputs, None
    if not settings.mlflow_tracking_uri:
        raise BadInput("optimizing a registered program needs TIDYQ_MLFLOW_TRACKING_URI here too (to read its "
                       "signature); or pass --signature", where="--program")
    from shared.program_io import example_fields
    from shared.programs import load_version_with_spec, resolve_program
    from shared.user_code import ProgramRefused

    resolved = resolve_program(program)
    try:
        module, spec = load_version_with_spec(resolved.name, resolved.version)
    except ProgramRefused:  # registry code this producer does not trust: the worker checks the rows
        return None, None
    return example_fields(module, spec)


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
                    num_threads: int = 1, tenant: str | None = None) -> tuple[str, list[str]]:
    """Check, write and enqueue an optimize job; returns its id and the target check's warnings
    (``Client.submit_optimize`` wraps them in a Job). Its single result's outputs hold ``model_uri``
    (models:/NAME/VERSION) and the scores."""
    from shared.optimize import OptimizeRequest, check_settings, resolve_metric
    from shared.queues import OPTIMIZE_QUEUE, OPTIMIZE_TASK

    if bool(signature) == bool(program):
        raise BadInput("give --signature or --program (models:/NAME/VERSION, models:/NAME@alias or "
                       "pkg.module:Name), exactly one",
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
                   created_at=time.time(), tenant=tenant)
    notes = client.check_target(spec, OPTIMIZE_QUEUE)  # refuses (BadInput) before anything is written
    client.store.create_job(spec)
    payload = {"job": spec.model_dump(mode="json"), "request": request.model_dump(mode="json")}
    try:
        client.app.send_task(OPTIMIZE_TASK, args=[payload], queue=OPTIMIZE_QUEUE,
                             **optimize_send_options(OPTIMIZE_TASK, payload["job"], payload["request"]))
    except BaseException as exc:
        client.store.fail_job(spec.id, f"enqueue interrupted: {type(exc).__name__}: {exc}")
        raise
    return spec.id, notes
