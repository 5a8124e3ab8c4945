"""Never pay twice inside a job: rows with identical inputs are sent once.

Every item of a job runs the same program version on the same targets with the same generation
settings, so two rows with equal inputs would make the same paid call. The producer folds them
before enqueueing: the first row carries the custom_ids of its later twins (``Item.duplicates``),
and the worker that answers it writes one result per twin, ``cached`` and at no cost.

Jobs whose program follows a rollout (``models:/NAME@live``, ``NAME``) are not folded: their items
are split between two versions by custom_id, so equal inputs need not mean the same program.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

from shared.hash_log import HashLog, prefix64
from shared.jobs import Item, ItemResult
from shared.program_uri import is_import_path, parse_program_uri


def inputs_digest(inputs: dict) -> bytes:
    """Equal for equal inputs whatever their key order (16 bytes of sha256)."""
    text = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).digest()[:16]


def folds(program: str | None) -> bool:
    """False for programs whose items are split between versions by their custom_id."""
    if not program or is_import_path(program):  # a signature, or one code path for every item
        return True
    return not parse_program_uri(program).follows_rollout


def fold_duplicates(items: Callable[[], Iterator[Item]], *,
                    prefix: Callable[[bytes], int] = prefix64) -> tuple[Callable[[], Iterator[Item]], int]:
    """(a fresh-iterator factory over the unique items, twins attached; how many were folded).

    Reads the items like the file check does: once keeping 8 bytes of each digest (shared/hash_log.py),
    and only when some of those repeat once more, keeping the full digest of just those rows; memory
    then grows with the duplicates, not the file. ``prefix``: digest -> 64-bit value (any function is
    exact; one that collides only costs that extra read)."""
    prefixes = HashLog()
    for item in items():
        prefixes.add(prefix(inputs_digest(item.inputs)))
    suspects = prefixes.repeated()
    del prefixes
    if not suspects:
        return items, 0
    first_of: dict[bytes, str] = {}
    twins: dict[str, list[str]] = {}
    for item in items():
        digest = inputs_digest(item.inputs)
        if prefix(digest) not in suspects:
            continue
        first = first_of.setdefault(digest, item.custom_id)
        if first != item.custom_id:
            twins.setdefault(first, []).append(item.custom_id)
    folded = {cid for ids in twins.values() for cid in ids}
    if not folded:  # only 8-byte prefixes collided
        return items, 0

    def unique() -> Iterator[Item]:
        for item in items():
            if item.custom_id in folded:
                continue
            if item.custom_id in twins:
                item = item.model_copy(update={"duplicates": [*item.duplicates, *twins[item.custom_id]]})
            yield item

    return unique, len(folded)


def copies_for(item: Item, result: ItemResult) -> list[ItemResult]:
    """One result per twin of ``item``: its answer, marked cached, never paid again."""
    return [result.model_copy(update={"custom_id": cid, "cached": True, "latency_ms": 0.0,
                                      "cost_usd": 0.0, "attempts": 0})
            for cid in item.duplicates]


def with_copies(item: Item, result: ItemResult) -> list[ItemResult]:
    return [result, *copies_for(item, result)]


def all_ids(item: Item) -> list[str]:
    """The custom_ids whose results this item writes."""
    return [item.custom_id, *item.duplicates]
