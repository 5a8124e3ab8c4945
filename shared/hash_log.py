"""A compact record of 64-bit hashes, one per line of a stream, to find the few values seen twice.

Why: the producer must know that a file's custom_ids are unique, and which rows have equal inputs,
before it enqueues anything. A dict or set of every custom_id (or digest) costs ~100-170 bytes per
line and made the producer's memory grow with the file; this keeps 8 bytes per line (unsigned
array buckets) and answers only "which hashes repeat". Equal hashes are candidates, not proof:
callers read the stream again and compare the real values of those few candidates, so answers stay
exact whatever collides.
"""

from __future__ import annotations

from array import array
from itertools import pairwise

MASK = (1 << 64) - 1
_BUCKET_BITS = 8  # 256 buckets by the top bits: each sorts alone, so sorting stays small


def hash64(value: str) -> int:
    """A 64-bit hash of a string, stable within this process (Python's own str hash)."""
    return hash(value) & MASK


def prefix64(digest: bytes) -> int:
    """The first 8 bytes of a digest as an unsigned 64-bit value."""
    return int.from_bytes(digest[:8], "big")


class HashLog:
    """Append 64-bit values; :meth:`repeated` names the values appended more than once."""

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(1 << _BUCKET_BITS)]

    def add(self, value: int) -> None:
        self._buckets[value >> (64 - _BUCKET_BITS)].append(value)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def repeated(self) -> set[int]:
        """Values seen at least twice (sorted one bucket at a time: ~1/256 of the lines as a list)."""
        out: set[int] = set()
        for bucket in self._buckets:
            ordered = sorted(bucket)
            out.update(a for a, b in pairwise(ordered) if a == b)
        return out
