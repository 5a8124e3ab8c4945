"""The optimize task (queue ``optimize``): run a DSPy optimizer, log the run, register the version.

    payload = {"job": JobSpec (kind optimize, total 1), "request": OptimizeRequest}

One optimize job = one task. Its lifecycle uses the job store like a one-chunk job: chunk_start
marks it running (cancel then moves it to cancelling, which the optimizer sees at its next LM or
metric call), the single result (model URI and scores) completes it, a failure fails it.

Long tasks and redelivery: an optimization can outlast the broker's visibility timeout, after
which Redis hands the message to another worker although the first one still runs. A claim key
with a heartbeat (refreshed every ``optimize_heartbeat_seconds``) makes the second delivery a
no-op while the first worker is alive; if that worker died, the claim expires and the
redelivered job runs again from the start.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import signals

from shared import keys
from shared.config import get_settings
from shared.errors import BadInput, ConfigurationError, TidyqError
from shared.jobs import ItemResult, JobSpec, JobState
from shared.queues import OPTIMIZE_QUEUE, OPTIMIZE_TASK
from shared.telemetry import get_logger, redact
from workers import app
from workers.task_request import ArgsReprRequest

RESULT_ID = "optimize"
PASS_THROUGH = ("SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated", "WorkerLostError")


def run_optimize_job(spec: dict, progress: Callable[[dict], None], should_stop: Callable[[], bool]) -> dict:
    """Optimize, log one MLflow run, register the program. Returns the job's result dict:
    ``{"status": "registered", "model_uri", "name", "version", scores...}`` or
    ``{"status": "cancelled", ...}``. Raises BadInput/ConfigurationError for a job that cannot run."""
    from shared import optimize, program_io, programs, tracking
    from shared.optimize import OptimizeRequest
    from shared.program_uri import is_import_path
    from shared.registry import get_registry, log_program
    from workers import runtime

    settings = get_settings()
    job = JobSpec.model_validate(spec["job"])
    try:
        req = OptimizeRequest.model_validate(spec["request"])
    except ValueError as exc:
        raise BadInput(f"bad optimize request: {exc}", where="request") from None
    log = get_logger(job_id=job.id, optimizer=req.optimizer, model_name=req.name)
    registry = get_registry(settings)
    if not tracking.gate.available(settings):
        raise ConfigurationError(f"MLflow at {redact(settings.mlflow_tracking_uri or '(unset)')} is unreachable: an "
                                 "optimize job registers its program there (set TIDYQ_MLFLOW_TRACKING_URI)")

    if req.program and is_import_path(req.program):  # a user's module installed here
        pspec = programs.ProgramSpec("import", import_path=req.program)
        student = pspec.build()
        started_from = req.program
    elif req.program:
        resolved = programs.resolve_program(req.program, registry=registry)
        loaded, pspec = programs.load_version_with_spec(resolved.name, resolved.version, registry=registry)
        student = loaded.deepcopy()
        started_from = resolved.uri
    else:
        pspec = programs.spec_for(req.signature, kind=req.kind)
        student = pspec.build()
        started_from = None
    inputs, outputs = program_io.example_fields(student, pspec)
    req.check(inputs, outputs)
    metric = optimize.resolve_metric(req.metric, req.metric_options)
    trainset = optimize.to_examples(req.trainset)
    valset = optimize.to_examples(req.valset) if req.valset else None
    time_limit = min(req.time_limit or settings.optimize_time_limit, settings.optimize_time_limit)
    wrapper = runtime.get_wrapper(job.backend, job.model)

    settings_used = optimize.check_settings(req.optimizer, req.settings)
    params = {"optimizer": req.optimizer, "metric": req.metric, "signature": pspec.signature,
              "program": pspec.import_path or (pspec.attr and f"code:{pspec.attr}"), "program_kind": pspec.kind,
              "backend": job.backend, "model": wrapper.model, "trainset_size": len(req.trainset),
              "valset_size": len(req.valset) if req.valset else "trainset", "time_limit_s": time_limit,
              "num_threads": req.num_threads, "started_from": started_from, "registered_model": req.name,
              **{f"optimizer.{k}": v for k, v in settings_used.items()},
              **{f"metric.{k}": v for k, v in req.metric_options.items()}}
    run = tracking.start_job_run(job.id, "optimize", params, settings=settings,
                                 run_name=f"optimize-{req.name}-{job.id[:8]}")
    if not run.active or run.run_id is None:
        raise ConfigurationError("could not create an MLflow run for the optimize job (MLflow unreachable)")

    last_logged = [0.0]

    def on_progress(p: dict) -> None:
        progress(p)
        now = time.monotonic()
        if p.get("best_score") is not None and now - last_logged[0] >= 10.0:  # batched, a few points a minute
            last_logged[0] = now
            run.log_metrics({"progress.best_score": p["best_score"], "progress.lm_calls": p.get("lm_calls", 0)},
                            step=int(p.get("step", 0)))
            run.flush()

    log.info("optimize_started", trainset=len(trainset), valset=len(valset or trainset), time_limit_s=time_limit)
    try:
        outcome = optimize.run_optimization(
            student, trainset=trainset, valset=valset, optimizer=req.optimizer, settings=req.settings, metric=metric,
            lm=wrapper.lm, backend=wrapper.backend_name, model=wrapper.model, progress=on_progress,
            should_stop=should_stop, time_limit=time_limit, num_threads=req.num_threads)
    except BaseException:
        run.finish("FAILED")
        raise
    run.log_metrics(outcome.metrics())
    if outcome.stopped == "cancelled":
        run.set_tags({"tidyq.stopped": "cancelled"})
        run.finish("KILLED")
        log.info("optimize_cancelled", seconds=round(outcome.seconds, 2))
        return {"status": "cancelled", "baseline_score": outcome.baseline_score, "run_id": run.run_id}

    progress({"phase": "registering", "step": outcome.metric_calls, "best_score": outcome.optimized_score,
              "baseline_score": outcome.baseline_score, "lm_calls": outcome.lm_calls,
              "evaluations": outcome.evaluations, "elapsed_s": round(outcome.seconds, 3)})
    log_program(run, outcome.program, pspec)
    version = registry.register(req.name, run.run_id, "program", description=f"tidyq optimize job {job.id}", tags={
        "tidyq.job_id": job.id, "tidyq.optimizer": req.optimizer, "tidyq.metric": req.metric,
        "tidyq.signature": pspec.signature or "", "tidyq.program": pspec.import_path or "",
        "tidyq.program_kind": pspec.kind,
        "tidyq.baseline_score": round(outcome.baseline_score, 6),
        "tidyq.optimized_score": round(outcome.optimized_score, 6),
        "tidyq.stopped": outcome.stopped or ""})
    uri = f"models:/{req.name}/{version}"
    run.set_tags({"tidyq.model_uri": uri, "tidyq.stopped": outcome.stopped or ""})
    run.finish("FINISHED")
    log.info("optimize_registered", model_uri=uri, baseline=outcome.baseline_score, optimized=outcome.optimized_score,
             seconds=round(outcome.seconds, 2), lm_calls=outcome.lm_calls, stopped=outcome.stopped)
    return {"status": "registered", "model_uri": uri, "name": req.name, "version": version, "run_id": run.run_id,
            "stopped": outcome.stopped, "demos": len(programs.demos_of(outcome.program)),
            **{k: round(v, 6) if isinstance(v, float) else v for k, v in outcome.metrics().items()}}


# --- the Celery task around it --------------------------------------------------------------------

class _Heartbeat:
    """Keeps the job's claim alive while the task runs (a daemon thread)."""

    def __init__(self, r, key: str, owner: str, interval: float):
        self.r, self.key, self.owner, self.interval = r, key, owner, max(0.5, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tidyq-optimize-heartbeat", daemon=True)

    def acquire(self) -> bool:
        return bool(self.r.set(self.key, self.owner, nx=True, ex=int(self.interval * 3) + 1))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.r.expire(self.key, int(self.interval * 3) + 1)
            except Exception:
                pass

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            if self.r.get(self.key) == self.owner.encode():
                self.r.delete(self.key)
        except Exception:
            pass


def execute(payload: Any) -> dict:
    """The task body: claim, run, record the outcome in the job store. Never raises for a job's
    own failure (the job fails instead); lets Celery's time-limit exceptions through."""
    from workers.tasks import job_store

    settings = get_settings()
    store = job_store()
    job_id = (payload.get("job") or {}).get("id") if isinstance(payload, dict) else None
    if not isinstance(job_id, str):
        get_logger().error("optimize_poison_message", error="no job id")
        return {"status": "dropped"}
    log = get_logger(job_id=job_id)
    owner = f"{socket.gethostname()}:{os.getpid()}:{time.time()}"
    beat = _Heartbeat(store.r, keys.optimize_claim(job_id), owner, settings.optimize_heartbeat_seconds)
    if not beat.acquire():
        log.info("optimize_duplicate_delivery", note="another worker holds the job's claim")
        return {"status": "duplicate"}
    with beat:
        gate = store.chunk_start(job_id, RESULT_ID)
        if gate != "run":
            log.info("optimize_skipped", job_state=gate)
            return {"status": gate}
        key = keys.job(job_id)

        def progress(p: dict) -> None:
            store.r.hset(key, "progress", json.dumps(p))

        def should_stop() -> bool:
            st = store.state(job_id)
            return st is None or st not in (JobState.QUEUED, JobState.RUNNING)

        try:
            result = run_optimize_job(payload, progress, should_stop)
            if result["status"] == "registered":
                store.r.hset(key, "result", json.dumps(result))
                store.record_results(job_id, [(ItemResult(custom_id=RESULT_ID, status="succeeded", outputs=result,
                                                          backend=payload["job"].get("backend"),
                                                          model=payload["job"].get("model"),
                                                          latency_ms=round(result.get("duration_s", 0) * 1000, 1),
                                                          attempts=int(result.get("lm_calls", 0))), None)])
            return result
        except BaseException as exc:
            if type(exc).__name__ in PASS_THROUGH:
                store.fail_job(job_id, f"{type(exc).__name__}: the worker's time limit for optimize tasks was reached")
                raise
            if not isinstance(exc, Exception):
                raise
            message = redact(str(exc) or type(exc).__name__)[:2000]
            kind = type(exc).__name__ if isinstance(exc, TidyqError) else f"InternalError: {type(exc).__name__}"
            if not isinstance(exc, TidyqError):
                log.exception("optimize_crashed", error=message)
            else:
                log.warning("optimize_failed", error=message)
            store.r.hset(key, "result", json.dumps({"status": "failed", "error": {"type": kind, "message": message}}))
            store.fail_job(job_id, f"{kind}: {message}")
            return {"status": "failed", "error": message}
        finally:
            try:
                store.chunk_end(job_id, RESULT_ID)
            except Exception as exc:
                log.error("optimize_chunk_end_failed", error=str(exc))


_s = get_settings()


@app.task(name=OPTIMIZE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
          queue=OPTIMIZE_QUEUE, time_limit=_s.optimize_time_limit + 1200, soft_time_limit=_s.optimize_time_limit + 900,
          Request=ArgsReprRequest)  # inspect replies show our argsrepr, never the trainset
def optimize_task(self, payload: Any) -> dict:
    return execute(payload)


@signals.worker_process_init.connect
def _fresh_process(**_):
    """A forked pool process starts with empty program caches and registry clients."""
    from shared import programs, registry

    programs.reset_cache()
    registry.reset_registries()


@signals.worker_process_init.connect
def _start_tracing(**_):
    from shared import tracking

    try:
        tracking.init_worker_tracing()
    except Exception as exc:  # tracing is optional; never stop a worker over it
        get_logger().warning("tracing_not_started", error=str(exc))
