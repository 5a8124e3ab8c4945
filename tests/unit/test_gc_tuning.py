"""workers/gc_tuning.py: a pool process freezes its import-time heap and collects young objects
in larger batches (run in a child interpreter: freezing the test process's heap would outlive the test)."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, json, sys
import dspy  # the import-time heap a worker carries
from workers.gc_tuning import tune_gc
before = gc.get_threshold()
tune_gc(int(sys.argv[1]))
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def child(threshold: int) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", CHILD, str(threshold)], capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_young_threshold_is_raised_and_the_import_heap_frozen():
    got = child(10_000)
    assert got["after"] == [10_000, got["before"][1], got["before"][2]]
    assert got["frozen"] > 50_000  # DSPy's, pydantic's and the standard library's objects (~87,000)


def test_zero_keeps_pythons_threshold():
    got = child(0)
    assert got["after"] == got["before"]
    assert got["frozen"] > 0
