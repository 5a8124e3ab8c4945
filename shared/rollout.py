"""Which version serves an item during a rollout: a deterministic split by a hash of the item id.

Why a hash and not a random draw: the same item always lands on the same version (a retried or
redelivered item is not served by both), every worker agrees without talking to the others, and
raising the percentage only moves items from live to candidate, never back. The model name salts
the hash so two rollouts do not pick the same slice of ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shared.errors import BadInput


@dataclass(frozen=True)
class RolloutState:
    """``live`` serves everything except ``percent`` % of items, which go to ``candidate``."""

    live: int | None = None
    candidate: int | None = None
    percent: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.percent) <= 100.0:
            raise BadInput(f"rollout percent {self.percent} is not between 0 and 100", where="--percent")

    @property
    def active(self) -> bool:
        return self.candidate is not None and self.percent > 0

    def as_dict(self) -> dict:
        return {"live": self.live, "candidate": self.candidate, "percent": self.percent}


def bucket(name: str, item_id: str) -> float:
    """A uniform position in [0, 100) for this item of this model."""
    digest = hashlib.sha256(f"{name}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def choose(state: RolloutState, name: str, item_id: str) -> tuple[int, str]:
    """(version, 'live' | 'candidate') for one item; BadInput when the model has no live version."""
    if state.candidate is not None and state.active and bucket(name, item_id) < state.percent:
        return state.candidate, "candidate"
    if state.live is None:
        if state.candidate is not None and state.percent >= 100:
            return state.candidate, "candidate"
        raise BadInput(f"model {name!r} has no live version; register one or pass models:/{name}/VERSION",
                       where="program")
    return state.live, "live"
