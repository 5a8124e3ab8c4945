"""`tidyq doctor`: check a deployment and say what to fix.

Each check is a small function returning rows (check, status, detail, fix). Status is ok, warn,
FAIL or skip; the command exits 1 when any row FAILs (0 otherwise), and a failing row always
names its fix. Backend probes go THROUGH the queue (a one-item predict job per backend whose
queue has a worker), because credentials live in the workers' environment, not on the machine
running the doctor: a probe answering means worker, credentials and provider all work.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata

from packaging.version import InvalidVersion, Version

from shared.queues import ALL_QUEUES, PREDICT_QUEUES

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

# (distribution, minimum, excluded versions, why)
VERSION_RULES = (
    ("dspy", "3.4", (), "the LM engine seam and dspy.Refine/BestOfN"),
    ("celery", "5.5", (), "worker_soft_shutdown_timeout"),
    ("mlflow", "3.0", (), "`mlflow server` serving the AI Gateway"),
    ("redis", "5.0", (), "redis-py"),
    ("litellm", "1.80", ("1.82.7", "1.82.8"), "1.82.7 and 1.82.8 were malicious releases"),
)


@dataclass
class Row:
    check: str
    status: str
    detail: str
    fix: str = ""


def check_versions() -> list[Row]:
    rows = []
    for dist, minimum, banned, why in VERSION_RULES:
        try:
            found = metadata.version(dist)
        except metadata.PackageNotFoundError:
            rows.append(Row(f"version {dist}", FAIL, "not installed", "make setup (pip install -r requirements.lock)"))
            continue
        try:
            v = Version(found)
        except InvalidVersion:
            rows.append(Row(f"version {dist}", WARN, f"{found} (unparsable)", ""))
            continue
        if found in banned:
            rows.append(Row(f"version {dist}", FAIL, f"{found}: {why}", "reinstall from requirements.lock"))
        elif v < Version(minimum):
            rows.append(Row(f"version {dist}", FAIL, f"{found} < {minimum} ({why})",
                            f"pip install '{dist}>={minimum}' (or make setup)"))
        else:
            rows.append(Row(f"version {dist}", OK, f"{found} (>= {minimum})"))
    return rows


def redis_url() -> str:
    from shared.config import get_settings

    s = get_settings()
    return s.redis_url or s.default_redis_url


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def check_redis(client) -> list[Row]:
    import redis

    url = _safe_url(redis_url())
    t0 = time.perf_counter()
    try:
        client.ping()
        info = client.info("server")
    except redis.exceptions.AuthenticationError as exc:
        return [Row("redis", FAIL, f"{url}: {exc}",
                    "put the password in TIDYQ_REDIS_URL (redis://:PASSWORD@host:port/0; see .env)")]
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        return [Row("redis", FAIL, f"{url}: {exc}", "start Redis (`make up`, `docker compose up -d redis`) "
                    "or set TIDYQ_REDIS_URL to it")]
    except redis.exceptions.ResponseError as exc:
        return [Row("redis", FAIL, f"{url}: {exc}", "check TIDYQ_REDIS_URL (password, database)")]
    ms = (time.perf_counter() - t0) * 1000
    rows = [Row("redis", OK, f"{url} (Redis {info.get('redis_version')}, {ms:.1f} ms)")]
    rows.append(check_persistence(client))
    return rows


def check_persistence(client) -> Row:
    import redis

    fix = "enable AOF: appendonly yes (deploy/redis.conf), or CONFIG SET appendonly yes"
    try:
        conf = client.config_get("appendonly")
        conf.update(client.config_get("save"))
        conf.update(client.config_get("appendfsync"))
        aof = conf.get("appendonly") == "yes"
        save = conf.get("save", "")
        fsync = conf.get("appendfsync", "?")
    except redis.exceptions.ResponseError:  # managed Redis often refuses CONFIG
        info = client.info("persistence")
        aof, save, fsync = bool(info.get("aof_enabled")), "?", "?"
    if aof:
        return Row("redis persistence", OK, f"AOF on (appendfsync {fsync})" + (f", RDB save '{save}'" if save else ""))
    if save and save != "?":
        return Row("redis persistence", WARN, f"RDB snapshots only (save '{save}'): a crash loses the jobs "
                   "since the last snapshot", fix)
    return Row("redis persistence", FAIL, "off: a Redis restart loses every queued job and result", fix)


def check_workers(reader, queues: Iterable[str]) -> tuple[list[Row], set[str], set[str]]:
    """Rows per queue, the queues served, and the backends some live worker has configured."""
    workers = reader.workers()
    rows, served = [], set()
    configured = {b for w in workers for b in (w.backends if w.backends is not None else PREDICT_QUEUES)
                  if PREDICT_QUEUES.get(b) in w.queues}
    for q in queues:
        serving = [w for w in workers if q in w.queues]
        if serving:
            served.add(q)
            procs = sum(w.processes for w in serving)
            rows.append(Row(f"workers {q}", OK, f"{len(serving)} node(s), {procs} process(es)"))
        else:
            service = "worker-" + q.split(".")[-1]
            rows.append(Row(f"workers {q}", FAIL, "no live worker",
                            f"start one: celery -A workers worker -Q {q} (compose: docker compose up -d {service})"))
    return rows, served, configured


def check_mlflow(timeout: float = 5.0) -> Row:
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    from shared.config import get_settings

    uri = get_settings().mlflow_tracking_uri
    if not uri:
        return Row("mlflow", FAIL, "TIDYQ_MLFLOW_TRACKING_URI is not set",
                   "set TIDYQ_MLFLOW_TRACKING_URI=http://HOST:5000 (the `mlflow server` of the deployment)")
    if uri.startswith(("http://", "https://")):
        t0 = time.perf_counter()
        try:
            with urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:  # noqa: S310 - operator's URL
                body = resp.read(64)
        except (HTTPError, URLError, OSError) as exc:
            return Row("mlflow", FAIL, f"{_safe_url(uri)}: {exc}",
                       "start the MLflow server (`make up`, `docker compose up -d mlflow`) "
                       "or fix TIDYQ_MLFLOW_TRACKING_URI")
        ms = (time.perf_counter() - t0) * 1000
        return Row("mlflow", OK, f"{_safe_url(uri)} /health {body.decode(errors='replace').strip()} ({ms:.0f} ms)")
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        parent = os.path.dirname(os.path.abspath(path)) or "."
        if os.access(parent, os.W_OK):
            return Row("mlflow", OK, f"{uri} (local sqlite store; workers on other machines cannot share it)")
        return Row("mlflow", FAIL, f"{uri}: {parent} is not writable", "fix the path or use an `mlflow server`")
    return Row("mlflow", SKIP, f"{uri}: not checked (only http(s) and sqlite URIs are)")


def probe_backend(client, backend: str, timeout: float) -> Row:
    """A one-item predict job through the backend's queue; a nonce keeps the cache out of it."""
    from producers.client import JobFailed
    from shared.store import JobTimeout

    queue = PREDICT_QUEUES[backend]
    t0 = time.perf_counter()
    job = None
    try:
        job = client.submit_predict("question -> answer", {"question": f"tidyq doctor probe {uuid.uuid4().hex[:8]}"},
                                    backend=backend)
        outputs = job.result(timeout=timeout)
    except JobTimeout:
        return Row(f"backend {backend}", FAIL, f"no answer within {timeout:.0f}s through {queue}",
                   f"check the {queue} workers' logs and the provider's reachability from them")
    except JobFailed as exc:
        kind = (exc.error or {}).get("type", "")
        message = (exc.error or {}).get("message", "")[:160]
        if kind == "ConfigurationError":
            fix = f"set the {backend} settings in the {queue} workers' environment (.env / docker compose env)"
        elif any(w in kind for w in ("Auth", "Permission", "Credential")):
            fix = f"check the {backend} credentials in the {queue} workers' environment"
        else:
            fix = f"see the {queue} workers' logs and `tidyq status {exc.job_id}`"
        return Row(f"backend {backend}", FAIL, f"{kind}: {message}", fix)
    except Exception as exc:  # noqa: BLE001 - the probe reports, never crashes the doctor
        where = f" (job {job.id})" if job is not None else ""
        return Row(f"backend {backend}", FAIL, f"{type(exc).__name__}: {exc}"[:200] + where,
                   "see the message; `tidyq doctor` needs the same TIDYQ_REDIS_URL as the workers")
    ms = (time.perf_counter() - t0) * 1000
    answer = str(outputs.get("answer", ""))[:40]
    return Row(f"backend {backend}", OK, f"answered in {ms:.0f} ms through {queue} ({answer!r})")


def check_breakers(client) -> list[Row]:
    try:
        from shared.breaker import breaker_states
    except ImportError:
        return []
    states = breaker_states(client)
    if not states:
        return []
    open_ = [f"{s['target']} ({s['state']})" for s in states if s["state"] != "closed"]
    if open_:
        return [Row("circuit breakers", WARN, "not closed: " + ", ".join(open_),
                    "check the provider's status; a breaker closes by itself after its cool-down "
                    "(or `tidyq breaker reset TARGET`)")]
    return [Row("circuit breakers", OK, f"{len(states)} closed")]


def run_checks(*, queues: Iterable[str] | None = None, backends: Iterable[str] | None = None,
               probe_timeout: float = 30.0) -> list[Row]:
    from producers.ops_state import OpsReader

    rows = check_versions()
    reader = OpsReader.from_settings()
    redis_rows = check_redis(reader.r)
    rows += redis_rows
    redis_ok = redis_rows[0].status == OK
    queues = list(queues or ALL_QUEUES)
    served: set[str] = set()
    configured: set[str] = set()
    if redis_ok:
        worker_rows, served, configured = check_workers(reader, queues)
        rows += worker_rows
    else:
        rows += [Row(f"workers {q}", SKIP, "needs Redis") for q in queues]
    rows.append(check_mlflow())
    if backends:
        wanted = list(backends)
    else:
        wanted = [b for b, q in PREDICT_QUEUES.items() if q in served and b in configured]
        rows += [Row(f"backend {b}", SKIP, f"not configured in the {q} workers' environment", "")
                 for b, q in PREDICT_QUEUES.items() if q in served and b not in configured]
    if not redis_ok:
        rows += [Row(f"backend {b}", SKIP, "needs Redis") for b in wanted]
    else:
        from producers.client import Client

        client = Client()
        probeable = [b for b in wanted if PREDICT_QUEUES[b] in served]
        rows += [Row(f"backend {b}", FAIL, f"no worker on {PREDICT_QUEUES[b]} to run the probe",
                     f"start one: celery -A workers worker -Q {PREDICT_QUEUES[b]}")
                 for b in wanted if b not in probeable]
        if probeable:
            with ThreadPoolExecutor(max_workers=len(probeable)) as pool:
                rows += list(pool.map(lambda b: probe_backend(client, b, probe_timeout), probeable))
    if redis_ok:
        rows += check_breakers(reader.r)
    return rows


def exit_code(rows: list[Row]) -> int:
    return 1 if any(r.status == FAIL for r in rows) else 0


def rows_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def render(rows: list[Row], console) -> None:
    from rich.table import Table
    from rich.text import Text

    style = {OK: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}
    table = Table(title="tidyq doctor", show_lines=False)
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(Text(r.check), Text(r.status, style=style.get(r.status, "")), Text(r.detail), Text(r.fix))
    console.print(table)
    failed = sum(r.status == FAIL for r in rows)
    console.print(f"{failed} check(s) failed" if failed else "all checks passed")
