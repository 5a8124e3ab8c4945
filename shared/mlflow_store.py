"""MLflow database set-up: once per store per process, serialized across processes, the known
race retried.

Why: MLflow 3.17's tracking and registry SqlAlchemyStores create a fresh database's schema
without any lock (only its jobs and workspace stores take one). Two processes opening a new
sqlite store at once (a worker pool process and `tidyq mcp`, or two pool processes) then both
run the migrations and one fails with ``duplicate column name`` / ``table ... already exists``:
list_programs failed in 2 of 6 runs on a fresh store. Here the first use of a database URI in a
process builds both stores under MLflow's own init file lock (the one its other stores use), and
retries the set-up a few times when it meets a database error someone outside the lock caused.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Callable

DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
ATTEMPTS = 4

_ready: set[str] = set()
_lock = threading.Lock()


def is_database_uri(uri: str | None) -> bool:
    return uri is not None and uri.split(":", 1)[0].split("+", 1)[0] in DB_SCHEMES


def init_lock_path(uri: str) -> str:
    """The file MLflow's ``_safe_initialize_tables`` locks for this database (same name, so both
    wait for each other). MLflow hashes the engine URL, which is the URI for these schemes."""
    digest = hashlib.md5(uri.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{tempfile.gettempdir()}/db_init_lock-{digest}"


def is_setup_race(exc: BaseException) -> bool:
    """A database error of a concurrent schema set-up (worth one more try), not a bad URI."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("duplicate column", "already exists", "database is locked", "operationalerror",
                                   "integrityerror", "can't locate revision"))


def ensure_store(uri: str | None, touch: Callable[[], object], *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Run ``touch`` (a call that builds the tracking and registry stores of ``uri``) once per
    process, under MLflow's init lock, retrying the set-up race. Other URIs: nothing to do."""
    if uri is None or not is_database_uri(uri) or uri in _ready:
        return
    from mlflow.utils.file_utils import ExclusiveFileLock

    with _lock:
        if uri in _ready:
            return
        for attempt in range(ATTEMPTS):
            try:
                with ExclusiveFileLock(init_lock_path(uri)):
                    touch()
                break
            except Exception as exc:
                if attempt == ATTEMPTS - 1 or not is_setup_race(exc):
                    raise
                sleep(0.2 * 2 ** attempt)
        _ready.add(uri)


def forget() -> None:
    """Tests: set up again on the next use."""
    with _lock:
        _ready.clear()
