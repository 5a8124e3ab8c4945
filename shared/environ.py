"""Values derived from ``os.environ``, recomputed only when the environment changed.

Why: the settings and the log redaction's secret list are read per chunk and per log line, and
decoding and filtering every variable costs ~150 us each time; a C-level comparison of the
process's raw environment with the copy seen last costs ~1 us and still sees any change
(``os.environ[...] =``, ``monkeypatch.setenv``, ``mock.patch.dict``) at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class EnvMemo(Generic[T]):
    """``compute()``'s last value while the environment equals the one it was computed from."""

    def __init__(self, compute: Callable[[], T]):
        self._compute = compute
        self._seen: dict | None = None
        self._value: T | None = None

    def get(self) -> T:
        raw = getattr(os.environ, "_data", None)  # CPython's raw mapping behind os.environ
        if not isinstance(raw, dict):  # os.environ replaced by a plain mapping: no memo
            return self._compute()
        seen = self._seen
        if seen is not None and seen == raw:
            return self._value  # type: ignore[return-value]
        snapshot = dict(raw)
        value = self._compute()
        self._seen, self._value = snapshot, value
        return value

    def clear(self) -> None:
        self._seen = self._value = None
