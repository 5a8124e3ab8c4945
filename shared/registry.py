"""Program versions in the MLflow model registry, rollout state, per-version serving stats.

A version is registered from a run's ``program/`` artifact directory (spec.json + program.json,
see shared.programs); loading downloads those two files with ``mlflow.artifacts`` and reads them
as JSON. ``mlflow.dspy.log_model`` is not used: it pickles the module (LM objects included).

Rollout state: Redis is the source of truth for routing, MLflow mirrors it.
- Every item that asks for ``models:/NAME@live`` (or ``NAME``) needs the state, and a rollback
  must reach the very next item on every worker. A Redis HGETALL (~0.1 ms) per item does that; a
  registry query per item would not (tens of ms, and a job would fail when MLflow is down).
- The same change is written to MLflow as aliases ``live`` and ``candidate`` plus the tag
  ``tidyq.rollout_percent``, so the registry UI shows it, ``models:/NAME@live`` means the same
  thing outside tidyq, and an emptied Redis is re-hydrated from MLflow on first use.
Per-version counters (items, failed, validation failures, latency) live in Redis, shown by
``tidyq rollout NAME``, and are published to MLflow as model-version tags and per-job run metrics.
"""

from __future__ import annotations

import tempfile
import threading
import time
from typing import Any

from shared import keys
from shared.config import Settings, get_settings
from shared.errors import BadInput, ConfigurationError
from shared.program_files import ProgramSpec, load_program_dir_with_spec, save_program
from shared.program_uri import CANDIDATE_ALIAS, LIVE_ALIAS, check_name
from shared.rollout import RolloutState
from shared.version_stats import record_version_stats  # noqa: F401  (its older home)

PERCENT_TAG = "tidyq.rollout_percent"


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def is_not_found(exc: BaseException) -> bool:
    """MLflow said the model, version or alias does not exist (an unknown alias is
    INVALID_PARAMETER_VALUE "... not found"); any other MlflowException is a failing call."""
    code = str(getattr(exc, "error_code", ""))
    return "RESOURCE_DOES_NOT_EXIST" in code or ("INVALID_PARAMETER_VALUE" in code and "not found" in str(exc))


class Registry:
    """MLflow registry + Redis rollout state for one tracking URI. Cheap to keep per process."""

    def __init__(self, settings: Settings | None = None, *, redis_client=None):
        self.settings = settings or get_settings()
        if not self.settings.mlflow_tracking_uri:
            raise ConfigurationError("program versions need MLflow: set TIDYQ_MLFLOW_TRACKING_URI "
                                     "(e.g. sqlite:///mlflow.db or http://127.0.0.1:5000)")
        self._redis = redis_client
        self._client = None
        self._alias_cache: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    # --- connections ---------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from shared.tracking import mlflow_client

            self._client = mlflow_client(self.settings)
        return self._client

    @property
    def redis(self):
        if self._redis is None:
            from shared.redisconn import get_redis

            self._redis = get_redis(self.settings.redis_url or self.settings.default_redis_url)
        return self._redis

    # --- versions -------------------------------------------------------------------------------
    def register(self, name: str, run_id: str, artifact_path: str = "program", *, description: str | None = None,
                 tags: dict[str, Any] | None = None) -> int:
        """Register ``runs:/run_id/artifact_path`` as a new version of ``name``; the first
        version of a model also becomes its live version."""
        from mlflow.exceptions import MlflowException

        check_name(name, where="--name")
        try:
            self.client.create_registered_model(name, description="A tidyq DSPy program (JSON state)")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
                raise
        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
        mv = self.client.create_model_version(name, source, run_id=run_id, description=description,
                                              tags={k: str(v)[:5000] for k, v in (tags or {}).items()})
        version = int(mv.version)
        state = self.rollout_state(name, hydrate=True, missing_ok=True)
        if state.live is None:
            self.set_live(name, version)
        return version

    def register_program(self, name: str, module: Any, spec: ProgramSpec, *, source: str,
                         tags: dict[str, Any] | None = None) -> int:
        """A new version of ``name`` from a program built here (``tidyq register``): one MLflow
        run holding the program's files (spec, JSON state, and its source for code programs)."""
        from shared.jobs import new_job_id
        from shared.tracking import start_job_run

        check_name(name, where="--name")
        self.redis.ping()  # the rollout state lives there: fail before MLflow holds half a registration
        run_id = new_job_id()
        params = {"program": source, "program_kind": spec.kind, "registered_model": name}
        run = start_job_run(run_id, "register", params, settings=self.settings,
                            run_name=f"register-{name}-{run_id[:8]}")
        if not run.active or run.run_id is None:
            raise ConfigurationError("could not create an MLflow run to register the program (MLflow unreachable at "
                                     "TIDYQ_MLFLOW_TRACKING_URI)")
        log_program(run, module, spec)
        run.finish("FINISHED")
        return self.register(name, run.run_id, "program", description=f"tidyq register {source}",
                             tags={"tidyq.program": source, "tidyq.program_kind": spec.kind, **(tags or {})})

    def version_info(self, name: str, version: int):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if not is_not_found(exc):  # MLflow down or refusing: its own error, not "no such version"
                raise
            raise BadInput(f"model {name!r} has no version {version}", where="program") from None

    def latest_version(self, name: str) -> int | None:
        versions = self.client.search_model_versions(f"name='{check_name(name)}'")
        return max((int(v.version) for v in versions), default=None)

    def load_version(self, name: str, version: int):
        """Rebuild the program of one version from its JSON files (never unpickles)."""
        return self.load_version_with_spec(name, version)[0]

    def load_version_with_spec(self, name: str, version: int) -> tuple[Any, ProgramSpec]:
        import mlflow

        info = self.version_info(name, version)
        with tempfile.TemporaryDirectory(prefix="tidyq-program-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=tmp,
                                                        tracking_uri=self.settings.mlflow_tracking_uri)
            return load_program_dir_with_spec(local, label=f"models:/{name}/{version}")

    def alias_version(self, name: str, alias: str, ttl: float = 10.0) -> int:
        """The version behind an alias; live/candidate come from the rollout state."""
        if alias in (LIVE_ALIAS, CANDIDATE_ALIAS):
            state = self.rollout_state(name)
            version = state.live if alias == LIVE_ALIAS else state.candidate
            if version is None:
                raise BadInput(f"model {name!r} has no {alias} version", where="program")
            return version
        key = (name, alias)
        hit = self._alias_cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        from mlflow.exceptions import MlflowException

        try:
            version = int(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
            raise BadInput(f"model {name!r} has no alias {alias!r}", where="program") from None
        self._alias_cache[key] = (time.monotonic() + ttl, version)
        return version

    # --- rollout state ------------------------------------------------------------------------
    def rollout_state(self, name: str, *, hydrate: bool = True, missing_ok: bool = False) -> RolloutState:
        raw = self.redis.hgetall(keys.rollout(name))
        if raw:
            h = {_s(k): _s(v) for k, v in raw.items()}
            return RolloutState(live=int(h["live"]) if h.get("live") else None,
                                candidate=int(h["candidate"]) if h.get("candidate") else None,
                                percent=float(h.get("percent") or 0))
        if not hydrate:
            return RolloutState()
        state = self._state_from_mlflow(name, missing_ok)
        if state.live is not None or state.candidate is not None:
            self._write_state(name, state)
        return state

    def _state_from_mlflow(self, name: str, missing_ok: bool) -> RolloutState:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
            if missing_ok:
                return RolloutState()
            raise BadInput(f"no registered model {name!r}", where="program") from None
        aliases = dict(model.aliases or {})
        percent = float((model.tags or {}).get(PERCENT_TAG) or 0)
        live = int(aliases[LIVE_ALIAS]) if LIVE_ALIAS in aliases else None
        candidate = int(aliases[CANDIDATE_ALIAS]) if CANDIDATE_ALIAS in aliases else None
        return RolloutState(live=live, candidate=candidate, percent=percent if candidate else 0.0)

    def _write_state(self, name: str, state: RolloutState) -> None:
        key = keys.rollout(name)
        mapping = {"live": state.live or "", "candidate": state.candidate or "", "percent": repr(float(state.percent)),
                   "updated_at": repr(time.time())}
        with self.redis.pipeline(transaction=True) as p:
            p.delete(key)
            p.hset(key, mapping=mapping)
            p.execute()

    def _mirror(self, name: str, state: RolloutState) -> str | None:
        """Write the state to MLflow aliases/tag; returns a warning instead of raising."""
        try:
            c = self.client
            if state.live is not None:
                c.set_registered_model_alias(name, LIVE_ALIAS, str(state.live))
            if state.candidate is not None:
                c.set_registered_model_alias(name, CANDIDATE_ALIAS, str(state.candidate))
            else:
                try:
                    c.delete_registered_model_alias(name, CANDIDATE_ALIAS)
                except Exception:
                    pass
            c.set_registered_model_tag(name, PERCENT_TAG, repr(float(state.percent)))
            return None
        except Exception as exc:
            return f"routing changed in Redis, but MLflow aliases were not updated: {exc}"

    def set_live(self, name: str, version: int) -> str | None:
        self.version_info(name, version)
        current = self.rollout_state(name, missing_ok=True)
        state = RolloutState(live=version, candidate=current.candidate if current.candidate != version else None,
                             percent=current.percent if current.candidate not in (None, version) else 0.0)
        self._write_state(name, state)
        return self._mirror(name, state)

    def start_rollout(self, name: str, candidate: int, percent: float) -> tuple[RolloutState, str | None]:
        """Send ``percent`` % of live-following items to ``candidate``."""
        state = RolloutState(percent=percent)  # validates the range first
        current = self.rollout_state(name)
        self.version_info(name, candidate)
        if current.live is None:
            raise BadInput(f"model {name!r} has no live version to roll out against", where="NAME")
        if current.live == candidate:
            raise BadInput(f"version {candidate} is already live", where="--candidate")
        state = RolloutState(live=current.live, candidate=candidate, percent=float(percent))
        self._write_state(name, state)
        return state, self._mirror(name, state)

    def rollback(self, name: str) -> tuple[RolloutState, str | None]:
        """Every item back to the live version, from the next item on."""
        current = self.rollout_state(name)
        state = RolloutState(live=current.live, candidate=None, percent=0.0)
        self._write_state(name, state)
        return state, self._mirror(name, state)

    def promote(self, name: str) -> tuple[RolloutState, str | None]:
        """The candidate becomes live and serves every item."""
        current = self.rollout_state(name)
        if current.candidate is None:
            raise BadInput(f"model {name!r} has no candidate to promote (start one with tidyq rollout)", where="NAME")
        state = RolloutState(live=current.candidate, candidate=None, percent=0.0)
        self._write_state(name, state)
        return state, self._mirror(name, state)

    def change_rollout(self, action: str, name: str, *, candidate: int | None = None,
                       percent: float | None = None) -> tuple[RolloutState, str | None]:
        """`tidyq rollout NAME --candidate V --percent P`, `rollback NAME`, `promote NAME` (the CLI and
        the REST API): the change, then the per-version counters published. BadInput names the CLI's
        argument (NAME, --candidate, --percent)."""
        check_name(name, where="NAME")
        if action == "rollout":
            if candidate is None or percent is None:
                raise BadInput("give both --candidate VERSION and --percent P", where="--candidate")
            state, warning = self.start_rollout(name, candidate, percent)
        elif action == "rollback":
            state, warning = self.rollback(name)
        elif action == "promote":
            state, warning = self.promote(name)
        else:
            raise ValueError(f"unknown rollout action {action!r}")
        self.publish_stats(name)
        return state, warning

    # --- per-version stats --------------------------------------------------------------------
    def version_stats(self, name: str) -> dict[int, dict[str, float]]:
        raw = self.redis.hgetall(keys.version_stats(name))
        out: dict[int, dict[str, float]] = {}
        for k, v in raw.items():
            version, _, counter = _s(k).partition(":")
            out.setdefault(int(version), {})[counter] = float(_s(v))
        for stats in out.values():
            n = stats.get("items", 0.0)
            stats["error_rate"] = round(stats.get("failed", 0.0) / n, 4) if n else 0.0
            stats["latency_mean_ms"] = round(stats.get("latency_ms_sum", 0.0) / n, 3) if n else 0.0
        return dict(sorted(out.items()))

    def publish_stats(self, name: str) -> None:
        """Per-version counters as model-version tags (best effort, through the tracking gate)."""
        from shared.tracking import gate

        stats = self.version_stats(name)

        def publish():
            for version, s in stats.items():
                for counter in ("items", "failed", "error_rate", "validation_failures", "latency_mean_ms"):
                    self.client.set_model_version_tag(name, str(version), f"tidyq.served.{counter}",
                                                      str(s.get(counter, 0)))

        gate.run(publish, self.settings)

    def status(self, name: str) -> dict:
        state = self.rollout_state(name)
        return {"name": name, **state.as_dict(), "versions": self.version_stats(name)}


def log_program(run: Any, module: Any, spec: ProgramSpec) -> None:
    """The program's files as the run's ``program/`` artifact directory (a version's source)."""
    with tempfile.TemporaryDirectory(prefix="tidyq-program-") as tmp:
        save_program(module, spec, tmp)
        if not run.log_artifacts(tmp, "program"):
            run.finish("FAILED")
            raise ConfigurationError("could not store the program's files in MLflow (artifact upload failed)")
    run.flush()


_registries: dict[tuple, Registry] = {}
_registries_lock = threading.Lock()


def get_registry(settings: Settings | None = None) -> Registry:
    """One Registry per (tracking URI, Redis URL) per process."""
    from shared.config import get_settings

    s = settings or get_settings()
    key = (s.mlflow_tracking_uri, s.redis_url or s.default_redis_url)
    with _registries_lock:
        reg = _registries.get(key)
        if reg is None:
            reg = _registries[key] = Registry(s)
        return reg


def reset_registries() -> None:
    with _registries_lock:
        _registries.clear()
