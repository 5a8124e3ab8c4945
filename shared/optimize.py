"""DSPy optimizers and metrics by name, and one optimization run with progress, cancel and a
time limit that ends it cleanly with the best program seen so far.

Stopping: DSPy catches ``Exception`` around almost everything an optimizer does, so a cancel
or a deadline is raised as :class:`OptimizationStopped`, a ``BaseException``: it leaves DSPy's
evaluators and bootstrap loops at the next metric call or LM call (a DSPy callback checks
before every LM call; callbacks' own errors are only logged when they are ``Exception``s).

Best so far: a DSPy callback watches every ``dspy.Evaluate`` run on the full validation set and
keeps the best-scoring program; without one (e.g. BootstrapFewShot stopped midway) the starting
program is the best so far.

LM calls, tokens and cost of the run are the difference of the process-wide metrics registry
before and after (an optimize worker process runs one task at a time); DSPy's evaluator threads
do not inherit our per-call contextvar, the registry sees every call.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import BadInput

MAX_EXAMPLES = 20_000


class OptimizationStopped(BaseException):
    """Raised inside DSPy to stop an optimizer: ``reason`` is 'cancelled' or 'time_limit'."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# --- metrics -------------------------------------------------------------------------------------

def _norm(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return " ".join(text.strip().casefold().split())


def _gold_fields(example) -> list[str]:
    labels = getattr(example, "labels", None)
    return list(labels().keys()) if callable(labels) else []


def _per_field(example, pred, compare: Callable[[Any, Any], float]) -> float:
    names = _gold_fields(example)
    if not names:
        return 0.0
    total = 0.0
    for name in names:
        got = pred.get(name) if isinstance(pred, dict) else getattr(pred, name, None)
        total += compare(example[name], got) if got is not None else 0.0
    return total / len(names)


_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _NUMBER.search(str(value).replace(",", "")) if value is not None else None
    try:
        return float(m.group(0)) if m else None
    except ValueError:
        return None


def exact_match(example, pred, trace=None) -> float:
    """Every output field equal to the gold one (case and whitespace ignored)."""
    return _per_field(example, pred, lambda gold, got: float(_norm(gold) == _norm(got)))


def contains(example, pred, trace=None) -> float:
    """The gold text appears inside the prediction (case and whitespace ignored)."""
    return _per_field(example, pred, lambda gold, got: float(_norm(gold) in _norm(got)))


def token_f1(example, pred, trace=None) -> float:
    """Token-overlap F1 of prediction and gold (SQuAD style), averaged over output fields."""
    def f1(gold, got) -> float:
        g, p = _norm(gold).split(), _norm(got).split()
        common = sum(min(g.count(t), p.count(t)) for t in set(g))
        if not g or not p or not common:
            return float(g == p)
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return _per_field(example, pred, f1)


def numeric_tolerance(tolerance: float = 1e-6, relative: float = 0.0) -> Callable:
    """|pred - gold| <= tolerance + relative * |gold|, on the first number of each field."""
    def numeric(example, pred, trace=None) -> float:
        def close(gold, got) -> float:
            a, b = _number(got), _number(gold)
            return float(a is not None and b is not None and abs(a - b) <= tolerance + relative * abs(b))

        return _per_field(example, pred, close)

    numeric.__name__ = "numeric"
    return numeric


BUILTIN_METRICS: dict[str, Callable[..., Callable]] = {
    "exact_match": lambda: exact_match,
    "contains": lambda: contains,
    "f1": lambda: token_f1,
    "numeric": numeric_tolerance,
}
METRIC_OPTIONS = {"numeric": {"tolerance": float, "relative": float}}


def resolve_metric(name: str, options: dict | None = None, *, allow_list: list[str] | None = None) -> Callable:
    """A metric ``(example, prediction, trace=None) -> float`` by name, or a user metric
    ``package.module:function`` that the worker's TIDYQ_METRIC_ALLOW_LIST names."""
    options = dict(options or {})
    if name in BUILTIN_METRICS:
        allowed = METRIC_OPTIONS.get(name, {})
        for key, value in options.items():
            if key not in allowed:
                raise BadInput(f"metric {name!r} takes no option {key!r}" +
                               (f" (options: {', '.join(allowed)})" if allowed else ""), where="--metric-option")
            try:
                options[key] = allowed[key](value)
            except (TypeError, ValueError):
                raise BadInput(f"option {key!r} of metric {name!r} must be a {allowed[key].__name__}",
                               where="--metric-option") from None
        return BUILTIN_METRICS[name](**options)
    if ":" not in name:
        raise BadInput(f"unknown metric {name!r}; built in: {', '.join(BUILTIN_METRICS)}, or a user metric "
                       "'package.module:function' listed in TIDYQ_METRIC_ALLOW_LIST", where="--metric")
    if allow_list is None:
        from shared.config import get_settings

        allow_list = get_settings().metric_allow_list
    if name not in allow_list:
        raise BadInput(f"user metric {name!r} is not in the allow-list (TIDYQ_METRIC_ALLOW_LIST)", where="--metric")
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"cannot import metric {name!r}: {exc}", where="--metric") from None
    if not callable(fn):
        raise BadInput(f"metric {name!r} is not callable", where="--metric")
    if options:
        fn = fn(**options)  # a factory taking the options
    return fn


# --- optimizers ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimizerInfo:
    """How to build and compile one DSPy optimizer. ``init`` and ``compile`` list the settings a
    job may pass (name -> type); everything else is refused with the key named."""

    cls_path: str
    init: dict[str, type]
    compile: dict[str, type] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    uses_valset: bool = True
    needs_metric: bool = True
    summary: str = ""


_COMMON = {"max_bootstrapped_demos": int, "max_labeled_demos": int}
OPTIMIZERS: dict[str, OptimizerInfo] = {
    "labeled-fewshot": OptimizerInfo("dspy.teleprompt:LabeledFewShot", {"k": int}, uses_valset=False,
                                     needs_metric=False, summary="the first k training examples as demos"),
    "bootstrap-fewshot": OptimizerInfo(
        "dspy.teleprompt:BootstrapFewShot",
        {**_COMMON, "max_rounds": int, "max_errors": int, "metric_threshold": float},
        uses_valset=False, summary="demos from the program's own successful runs on the trainset"),
    "bootstrap-random-search": OptimizerInfo(
        "dspy.teleprompt:BootstrapFewShotWithRandomSearch",
        {**_COMMON, "max_rounds": int, "num_candidate_programs": int, "num_threads": int, "max_errors": int,
         "stop_at_score": float, "metric_threshold": float},
        defaults={"num_candidate_programs": 8}, summary="several bootstrapped demo sets, the best on the valset"),
    "mipro-v2": OptimizerInfo(
        "dspy.teleprompt:MIPROv2",
        {**_COMMON, "auto": str, "num_candidates": int, "num_threads": int, "max_errors": int, "seed": int,
         "init_temperature": float, "metric_threshold": float},
        compile={"num_trials": int, "minibatch": bool, "minibatch_size": int, "minibatch_full_eval_steps": int,
                 "program_aware_proposer": bool, "data_aware_proposer": bool, "tip_aware_proposer": bool,
                 "fewshot_aware_proposer": bool, "view_data_batch_size": int},
        defaults={"auto": "light"}, summary="instructions and demos searched jointly (Bayesian, needs optuna)"),
    "copro": OptimizerInfo("dspy.teleprompt:COPRO", {"breadth": int, "depth": int, "init_temperature": float},
                           uses_valset=False, summary="instruction search by coordinate ascent"),
    "simba": OptimizerInfo(
        "dspy.teleprompt:SIMBA",
        {"bsize": int, "num_candidates": int, "max_steps": int, "max_demos": int, "num_threads": int,
         "temperature_for_sampling": float, "temperature_for_candidates": float},
        compile={"seed": int}, uses_valset=False, summary="stochastic mini-batch ascent with self-reflection"),
    "gepa": OptimizerInfo(
        "dspy.teleprompt:GEPA",
        {"auto": str, "max_full_evals": int, "max_metric_calls": int, "reflection_minibatch_size": int,
         "candidate_selection_strategy": str, "skip_perfect_score": bool, "use_merge": bool,
         "max_merge_invocations": int, "num_threads": int, "failure_score": float, "perfect_score": float, "seed": int},
        defaults={"auto": "light"}, summary="reflective instruction evolution (the job's LM also reflects)"),
}


def check_settings(optimizer: str, settings: dict | None) -> dict:
    """Settings coerced to their types; BadInput naming an unknown optimizer or key."""
    if optimizer not in OPTIMIZERS:
        raise BadInput(f"unknown optimizer {optimizer!r}; expected one of: {', '.join(OPTIMIZERS)}",
                       where="--optimizer")
    info = OPTIMIZERS[optimizer]
    allowed = {**info.init, **info.compile}
    out = dict(info.defaults)
    budget_keys = {"auto", "max_full_evals", "max_metric_calls", "num_candidates", "num_trials"}
    if set(settings or {}) & (budget_keys - {"auto"}):
        out.pop("auto", None)  # an explicit budget replaces the 'light' default
    for key, value in (settings or {}).items():
        if key not in allowed:
            raise BadInput(f"optimizer {optimizer!r} has no setting {key!r}; settings: {', '.join(sorted(allowed))}",
                           where=f"--set {key}")
        kind = allowed[key]
        try:
            if kind is bool and isinstance(value, str):
                value = value.strip().lower() in ("1", "true", "yes", "on")
            out[key] = None if value is None and key == "auto" else kind(value)
        except (TypeError, ValueError):
            raise BadInput(f"setting {key!r} must be a {kind.__name__}, got {value!r}", where=f"--set {key}") from None
    if out.get("auto") not in (None, "light", "medium", "heavy"):
        raise BadInput(f"auto must be light, medium or heavy, got {out['auto']!r}", where="--set auto")
    return out


def _class(path: str):
    module_name, _, attr = path.partition(":")
    if attr == "MIPROv2":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise BadInput("optimizer 'mipro-v2' needs the optuna package on the worker (pip install optuna)",
                           where="--optimizer") from None
    return getattr(importlib.import_module(module_name), attr)


# --- examples -------------------------------------------------------------------------------------

class ExampleRow(BaseModel):
    """One trainset line: ``{"inputs": {...}, "outputs": {...}}``."""

    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any]
    outputs: dict[str, Any]


def check_rows(rows: list[dict], input_fields, output_fields, where: str) -> list[dict]:
    """Validate rows against the signature's fields; BadInput names the row and field.
    ``input_fields`` may be a program's forward() parameters (ProgramInputs) and ``output_fields``
    None: a user's module declares no output fields, so any gold field the metric compares goes;
    None inputs (the program cannot be built here) leave the inputs to the worker's check."""
    out = []
    for index, raw in enumerate(rows, start=1):
        loc = f"{where}:{index}"
        try:
            row = ExampleRow.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise BadInput(first["msg"], where=f"{loc}: field '{'.'.join(map(str, first['loc'])) or 'line'}'") from None
        if not row.outputs:
            raise BadInput("no output values: give at least one gold output", where=f"{loc}: field 'outputs'")
        if input_fields is None or hasattr(input_fields, "check"):
            if input_fields is not None:
                input_fields.check(row.inputs, loc)
            out.append(row.model_dump())
            continue
        for name in row.inputs:
            if name not in input_fields:
                raise BadInput(f"unknown input field {name!r} (expected: {', '.join(input_fields)})",
                               where=f"{loc}: field 'inputs.{name}'")
        for name in input_fields:
            if name not in row.inputs:
                raise BadInput(f"missing input field {name!r}", where=f"{loc}: field 'inputs.{name}'")
        for name in row.outputs:
            if output_fields is not None and name not in output_fields:
                raise BadInput(f"unknown output field {name!r} (expected: {', '.join(output_fields)})",
                               where=f"{loc}: field 'outputs.{name}'")
        out.append(row.model_dump())
    return out


def read_examples_file(path: str | Path, input_fields, output_fields, *, max_rows: int = MAX_EXAMPLES) -> list[dict]:
    """A trainset/valset JSONL file -> checked rows; BadInput names file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise BadInput("no such file", where=str(path))
    rows: list[dict] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadInput(f"not JSON: {exc}", where=where) from None
            if not isinstance(data, dict):
                raise BadInput("each line must be a JSON object {\"inputs\": {...}, \"outputs\": {...}}", where=where)
            try:
                check_rows([data], input_fields, output_fields, where=str(path))
            except BadInput as exc:
                raise BadInput(str(exc).split(": ", 2)[-1],
                               where=f"{where}: " + (exc.where or "").split(": ", 1)[-1]) from None
            rows.append(data)
            if len(rows) > max_rows:
                raise BadInput(f"more than {max_rows} examples", where=str(path))
    if not rows:
        raise BadInput("no examples", where=str(path))
    return rows


def to_examples(rows: list[dict], input_fields=None) -> list:
    """Checked rows -> dspy.Examples whose inputs are each row's input fields (a user's module
    may have optional forward() parameters that some rows leave out)."""
    import dspy

    return [dspy.Example(**r["inputs"], **r["outputs"]).with_inputs(*r["inputs"]) for r in rows]


# --- one run --------------------------------------------------------------------------------------

@dataclass
class Progress:
    """What `tidyq status` shows while an optimize job runs."""

    phase: str = "starting"
    step: int = 0  # metric calls so far
    evaluations: int = 0  # full valset evaluations seen
    best_score: float | None = None
    baseline_score: float | None = None
    lm_calls: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class OptimizeOutcome:
    program: Any
    baseline_score: float
    optimized_score: float
    stopped: str | None  # None, 'time_limit' (best so far kept) or 'cancelled'
    seconds: float
    search_seconds: float
    lm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    metric_calls: int
    evaluations: int
    trainset_size: int
    valset_size: int

    def metrics(self) -> dict[str, float]:
        return {"baseline_score": self.baseline_score, "optimized_score": self.optimized_score,
                "score_gain": self.optimized_score - self.baseline_score, "duration_s": self.seconds,
                "search_s": self.search_seconds, "lm_calls": self.lm_calls, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": self.cost_usd, "metric_calls": self.metric_calls,
                "evaluations": self.evaluations, "trainset_size": self.trainset_size,
                "valset_size": self.valset_size, "stopped_early": 1.0 if self.stopped else 0.0}


class _Control:
    """Stop checks, progress reporting (throttled) and best-so-far, shared by the metric wrapper
    and the DSPy callback (called from DSPy's evaluator threads)."""

    def __init__(self, progress: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None,
                 deadline: float | None, valset_size: int, started: float, usage: Callable[[], dict],
                 report_every: float = 0.5):
        self.progress_cb, self.should_stop = progress, should_stop
        self.deadline, self.valset_size, self.started, self.usage = deadline, valset_size, started, usage
        self.report_every = report_every
        self.state = Progress()
        self.best_program = None
        self.best_score: float | None = None
        self._lock = threading.Lock()
        self._last_report = 0.0
        self._last_stop_check = 0.0
        self.stop_reason: str | None = None
        self.searching = False

    def check(self) -> None:
        if self.stop_reason:
            raise OptimizationStopped(self.stop_reason)
        if not self.searching:
            return
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            self.stop_reason = "time_limit"
        elif self.should_stop is not None and now - self._last_stop_check >= 0.2:
            self._last_stop_check = now
            if self.should_stop():
                self.stop_reason = "cancelled"
        if self.stop_reason:
            raise OptimizationStopped(self.stop_reason)

    def metric_called(self) -> None:
        with self._lock:
            self.state.step += 1
        self.report()

    def evaluated(self, program, score: float, size: int) -> None:
        if size != self.valset_size or program is None:
            return
        with self._lock:
            self.state.evaluations += 1
            if self.best_score is None or score > self.best_score:
                self.best_score = score
                self.best_program = program.deepcopy()
                self.state.best_score = score
        self.report(force=True)

    def report(self, force: bool = False) -> None:
        if self.progress_cb is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < self.report_every:
            return
        self._last_report = now
        self.state.elapsed_s = now - self.started
        self.state.lm_calls = int(self.usage().get("calls", 0))
        try:
            self.progress_cb(self.state.as_dict())
        except Exception:
            pass  # progress is informative; never stop an optimization over it


def _callback(control: _Control):
    from dspy.utils.callback import BaseCallback

    class StopAndTrack(BaseCallback):
        def __init__(self):
            self.programs: dict[str, tuple[Any, int]] = {}

        def on_lm_start(self, call_id, instance, inputs):
            control.check()  # OptimizationStopped is a BaseException: DSPy lets it through

        def on_evaluate_start(self, call_id, instance, inputs):
            devset = inputs.get("devset") or getattr(instance, "devset", None) or []
            self.programs[call_id] = (inputs.get("program"), len(devset))

        def on_evaluate_end(self, call_id, outputs, exception=None):
            program, size = self.programs.pop(call_id, (None, 0))
            score = getattr(outputs, "score", None)
            if exception is None and score is not None:
                control.evaluated(program, float(score) / 100.0, size)

    return StopAndTrack()


def _wrap_metric(metric: Callable, control: _Control, for_gepa: bool = False, strict: bool = True) -> Callable:
    def wrapped(example, prediction, trace=None, *args, **kwargs):
        control.check()
        score = float(metric(example, prediction, trace))
        control.metric_called()
        if trace is not None and strict and not for_gepa:
            return score >= 1.0  # bootstrapping keeps only fully correct traces (unless a threshold is set)
        return score

    if for_gepa:
        def gepa_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
            return wrapped(gold, pred, None)

        return gepa_metric
    return wrapped


def _usage_probe(backend: str, model: str) -> Callable[[], dict]:
    from shared.metrics import registry

    def snapshot() -> dict:
        for s in registry.snapshot():
            if s["backend"] == backend and s["model"] == model:
                return s
        return {}

    base = snapshot()

    def delta() -> dict:
        now = snapshot()
        return {k: (now.get(k, 0) or 0) - (base.get(k, 0) or 0)
                for k in ("calls", "input_tokens", "output_tokens", "cost_usd", "cache_hits")}

    return delta


def evaluate(program, devset, metric, num_threads: int) -> float:
    """Mean metric on ``devset`` in [0, 1]."""
    import dspy

    result = dspy.Evaluate(devset=devset, metric=metric, num_threads=num_threads, display_progress=False,
                           display_table=False, provide_traceback=False, max_errors=len(devset) + 1)(program)
    return float(result.score) / 100.0


def build_optimizer(name: str, settings: dict, metric: Callable, lm, num_threads: int, trainset_size: int):
    info = OPTIMIZERS[name]
    cls = _class(info.cls_path)
    init = {k: v for k, v in settings.items() if k in info.init}
    if "num_threads" in info.init:
        init.setdefault("num_threads", num_threads)
    if name == "simba":
        init["bsize"] = max(1, min(init.get("bsize", 32), trainset_size))
    if name == "gepa":
        init.setdefault("reflection_lm", lm)
    if name in ("mipro-v2",):
        init.setdefault("prompt_model", lm)
        init.setdefault("task_model", lm)
        init.setdefault("verbose", False)
    if name == "copro":
        init.setdefault("prompt_model", lm)
    if info.needs_metric:
        init["metric"] = metric
    return cls(**init), {k: v for k, v in settings.items() if k in info.compile}


def run_optimization(student, *, trainset: list, valset: list | None, optimizer: str, settings: dict | None,
                     metric: Callable, lm, backend: str, model: str, progress: Callable[[dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, time_limit: float | None = None,
                     num_threads: int = 1) -> OptimizeOutcome:
    """Baseline score, the optimizer's search (stoppable), the final score. ``lm`` is the wrapper's
    dspy.LM; everything runs inside ``dspy.context(lm=lm)`` (never dspy.configure)."""
    import dspy

    settings = check_settings(optimizer, settings)
    info = OPTIMIZERS[optimizer]
    valset = valset or trainset
    started = time.monotonic()
    usage = _usage_probe(backend, model)
    deadline = started + time_limit if time_limit else None
    control = _Control(progress, should_stop, deadline, len(valset), started, usage)
    scoring = _wrap_metric(metric, control)
    callback = _callback(control)

    with dspy.context(lm=lm, callbacks=[callback]):
        control.state.phase = "baseline"
        control.report(force=True)
        baseline = evaluate(student, valset, scoring, num_threads)
        control.state.baseline_score = baseline
        control.best_program, control.best_score, control.state.best_score = student.deepcopy(), baseline, baseline
        control.state.phase = "search"
        control.report(force=True)
        search_metric = _wrap_metric(metric, control, optimizer == "gepa", strict="metric_threshold" not in settings)
        opt, compile_kwargs = build_optimizer(optimizer, settings, search_metric,
                                              lm, num_threads, len(trainset))
        kwargs: dict[str, Any] = {"trainset": trainset, **compile_kwargs}
        if info.uses_valset or optimizer == "gepa":
            kwargs["valset"] = valset
        search_started = time.monotonic()
        stopped = None
        control.searching = True
        try:
            compiled = opt.compile(student.deepcopy() if optimizer != "labeled-fewshot" else student.reset_copy(),
                                   **kwargs)
        except OptimizationStopped as exc:
            stopped, compiled = exc.reason, None
        finally:
            control.searching = False
        search_seconds = time.monotonic() - search_started
        if stopped == "cancelled":
            return OptimizeOutcome(None, baseline, baseline, "cancelled", time.monotonic() - started, search_seconds,
                                   **_usage_numbers(usage), metric_calls=control.state.step,
                                   evaluations=control.state.evaluations, trainset_size=len(trainset),
                                   valset_size=len(valset))
        control.stop_reason = None
        control.state.phase = "final"
        control.report(force=True)
        if compiled is not None:
            final_score = evaluate(compiled, valset, scoring, num_threads)
            if control.best_score is not None and control.best_score > final_score and control.best_program is not None:
                compiled, final_score = control.best_program, control.best_score  # never register a regression
        else:
            compiled, final_score = control.best_program, control.best_score
        control.state.best_score = final_score
        control.state.phase = "done"
        control.report(force=True)
    return OptimizeOutcome(compiled, baseline, final_score, stopped, time.monotonic() - started, search_seconds,
                           **_usage_numbers(usage), metric_calls=control.state.step,
                           evaluations=control.state.evaluations, trainset_size=len(trainset), valset_size=len(valset))


def _usage_numbers(usage: Callable[[], dict]) -> dict:
    u = usage()
    return {"lm_calls": int(u.get("calls", 0)), "input_tokens": int(u.get("input_tokens", 0)),
            "output_tokens": int(u.get("output_tokens", 0)), "cost_usd": float(u.get("cost_usd", 0.0) or 0.0)}


# --- the job's request --------------------------------------------------------------------------

class OptimizeRequest(BaseModel):
    """An optimize job's body (Celery JSON): what to optimize, on which data, how, where to register."""

    model_config = ConfigDict(extra="forbid")
    name: str
    signature: str | None = None
    program: str | None = None
    kind: str = "predict"
    trainset: list[dict] = Field(min_length=1, max_length=MAX_EXAMPLES)
    valset: list[dict] | None = None
    optimizer: str = "bootstrap-fewshot"
    settings: dict[str, Any] = Field(default_factory=dict)
    metric: str = "exact_match"
    metric_options: dict[str, Any] = Field(default_factory=dict)
    time_limit: float | None = Field(default=None, gt=0)
    num_threads: int = Field(default=1, ge=1, le=64)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from shared.programs import check_name

        return check_name(v, where="--name")

    def model_post_init(self, _ctx: Any) -> None:
        if bool(self.signature) == bool(self.program):
            raise ValueError("give a signature or a program (models:/NAME/VERSION, models:/NAME@alias or "
                             "pkg.module:Name), exactly one")
        if self.kind not in ("predict", "chain_of_thought"):
            raise ValueError("kind is 'predict' or 'chain_of_thought'")

    def check(self, input_fields, output_fields, allow_list: list[str] | None = None) -> OptimizeRequest:
        """Everything a producer can check before enqueueing (BadInput naming what is wrong)."""
        check_settings(self.optimizer, self.settings)
        if ":" not in self.metric:
            resolve_metric(self.metric, self.metric_options)
        check_rows(self.trainset, input_fields, output_fields, "trainset")
        if self.valset is not None:
            check_rows(self.valset, input_fields, output_fields, "valset")
        return self


def score_delta_text(outcome: OptimizeOutcome) -> str:
    return f"{outcome.baseline_score:.3f} -> {outcome.optimized_score:.3f}"


def finite(value: float) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else 0.0
