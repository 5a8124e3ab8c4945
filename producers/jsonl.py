"""Streaming JSONL: read and check input files line by line, write result files line by line.

A 100k-line file is never held in memory: the producer reads the file twice (pass 1 checks every
line, pass 2 enqueues), keeping an 8-byte hash per line to prove the custom_ids unique, so bad
input is refused before anything is enqueued. Every error names the file, the line and the field.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from shared.errors import BadInput
from shared.hash_log import HashLog, hash64
from shared.jobs import Item, check_inputs

TOP_LEVEL_KEYS = ("custom_id", "inputs")


def _open_input(path: str | Path) -> IO[bytes]:
    p = Path(path)
    if str(path) == "-":
        raise BadInput("reading items from stdin is not supported (the file is read twice); give a file path",
                       where="FILE")
    if not p.exists():
        raise BadInput("no such file", where=str(path))
    if p.is_dir():
        raise BadInput("is a directory, expected a JSONL file", where=str(path))
    try:
        return open(p, "rb")
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror}", where=str(path)) from None


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line. Lines are decoded one by one (binary
    reads), so a bad UTF-8 byte is reported on its own line."""
    with _open_input(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                               where=f"{path}:{line_no}") from None
            if line.strip():
                yield line_no, line


def parse_item(text: str, *, where: str, line_no: int, input_fields: tuple[str, ...] | None = None,
               signature: str | None = None, max_item_bytes: int | None = None) -> Item:
    """One input line -> Item, or BadInput naming ``where`` (file:line) and the field."""
    if max_item_bytes is not None and len(text.encode()) > max_item_bytes:
        raise BadInput(f"line is {len(text.encode())} bytes; the limit is {max_item_bytes} (TIDYQ_MAX_ITEM_BYTES)",
                       where=where)
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"not JSON: {exc.msg} at column {exc.colno}", where=where) from None
    if not isinstance(row, dict):
        raise BadInput('expected a JSON object like {"custom_id": ..., "inputs": {...}}, '
                       f"got {type(row).__name__}",
                       where=where)
    return item_from_row(row, where=where, line_no=line_no, input_fields=input_fields, signature=signature)


def item_from_row(row: dict, *, where: str, line_no: int | None, input_fields: tuple[str, ...] | None = None,
                  signature: str | None = None) -> Item:
    for key in row:
        if key not in TOP_LEVEL_KEYS:
            raise BadInput(f"unknown field {key!r} (a line has 'custom_id' and 'inputs')",
                           where=f"{where}: field '{key}'")
    if "inputs" not in row:
        raise BadInput("missing field 'inputs'", where=f"{where}: field 'inputs'")
    inputs = row["inputs"]
    if not isinstance(inputs, dict):
        raise BadInput(f"'inputs' must be a JSON object, got {type(inputs).__name__}", where=f"{where}: field 'inputs'")
    cid = row.get("custom_id")
    if cid is None:
        if line_no is None:
            raise BadInput("missing field 'custom_id'", where=f"{where}: field 'custom_id'")
        cid = str(line_no)
    elif isinstance(cid, bool) or not isinstance(cid, (str, int)):
        raise BadInput(f"'custom_id' must be a string, got {type(cid).__name__}", where=f"{where}: field 'custom_id'")
    cid = str(cid)
    if not cid or len(cid) > 512:
        raise BadInput("'custom_id' must be 1 to 512 characters", where=f"{where}: field 'custom_id'")
    check_inputs(inputs, input_fields, signature, where)
    return Item(custom_id=cid, inputs=inputs)


class FileCheck:
    """Pass 1 over an input file: every line checked, custom_ids unique, limits respected.

    Uniqueness keeps a 64-bit hash per line (shared/hash_log.py), not the ids: when hashes repeat,
    the lines read so far are read again to compare the real ids, so the first duplicate in file
    order is still the one reported, also ahead of a later bad line."""

    id_hash = staticmethod(hash64)  # any str -> 64-bit function is exact; a poor one only costs re-reads

    def __init__(self, path: str | Path, *, input_fields: tuple[str, ...] | None, signature: str | None,
                 max_items: int, max_item_bytes: int):
        self.path = str(path)
        self.input_fields, self.signature = input_fields, signature
        self.max_items, self.max_item_bytes = max_items, max_item_bytes

    def run(self) -> int:
        ids = HashLog()
        count = last = 0
        try:
            for line_no, text in iter_lines(self.path):
                item = self._parse(line_no, text)
                ids.add(self.id_hash(item.custom_id))
                count, last = count + 1, line_no
                if count > self.max_items:
                    raise BadInput(f"more than {self.max_items} items (TIDYQ_MAX_ITEMS_PER_JOB)",
                                   where=f"{self.path}:{line_no}")
        except BadInput:
            self._refuse_duplicates(ids, last)  # an earlier duplicate is the first error in the file
            raise
        if count == 0:
            raise BadInput("no items (the file is empty)", where=self.path)
        self._refuse_duplicates(ids, last)
        return count

    def _parse(self, line_no: int, text: str) -> Item:
        return parse_item(text, where=f"{self.path}:{line_no}", line_no=line_no, input_fields=self.input_fields,
                          signature=self.signature, max_item_bytes=self.max_item_bytes)

    def _refuse_duplicates(self, ids: HashLog, last: int) -> None:
        """BadInput at the first line (up to ``last``) whose custom_id an earlier line had."""
        suspects = ids.repeated()
        if not suspects:
            return
        first_line: dict[str, int] = {}  # only the ids whose hash repeats
        for line_no, text in iter_lines(self.path):
            if line_no > last:
                return
            cid = self._parse(line_no, text).custom_id
            if self.id_hash(cid) not in suspects:
                continue
            first = first_line.setdefault(cid, line_no)
            if first != line_no:
                raise BadInput(f"duplicate custom_id {cid!r} (first on line {first})",
                               where=f"{self.path}:{line_no}: field 'custom_id'")


def iter_items(path: str | Path, *, max_item_bytes: int | None = None) -> Iterator[Item]:
    """Pass 2: the items of an already checked file, one at a time."""
    for line_no, text in iter_lines(path):
        yield parse_item(text, where=f"{path}:{line_no}", line_no=line_no, max_item_bytes=max_item_bytes)


class JsonlWriter:
    """Writes dicts as JSON lines to a file (created atomically at close) or to stdout."""

    def __init__(self, path: str | Path | None):
        self.path = None if path in (None, "-") else Path(path)
        self.count = 0
        if self.path is None:
            self._fh: IO[str] = sys.stdout
            self._tmp = None
        else:
            if self.path.parent and not self.path.parent.exists():
                raise BadInput("the output directory does not exist", where=str(self.path))
            self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
            self._fh = open(self._tmp, "w", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.count += 1

    def write_all(self, rows: Iterable[dict[str, Any]]) -> int:
        for row in rows:
            self.write(row)
        return self.count

    def close(self, *, keep: bool = True) -> None:
        if self._tmp is None:
            self._fh.flush()
            return
        self._fh.close()
        if keep:
            assert self.path is not None  # a temporary file exists only when writing to a path
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
        self._tmp = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # An interrupted download keeps what was read: partial results are still results.
        self.close(keep=True)


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Plain JSONL reading for result files (tests, tools)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
