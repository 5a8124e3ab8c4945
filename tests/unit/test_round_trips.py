"""The folded store scripts, in a real redis-server: a chunk's start learns which items are already
stored, its end leaves the ledger in the same call, and a one-item job's end message carries the
result, so a reader subscribed before the send reads nothing. Round trips are counted by the
server's own command statistics (INFO commandstats)."""

import json
import time

import pytest
import redis

from producers.target_check import LiveWorkers
from shared import keys
from shared.config import Settings
from shared.jobs import ItemResult, JobSpec, JobState
from shared.ledger import ChunkLedger, chunk_task_id
from shared.store import JobStore, WakeUp


@pytest.fixture
def store(redis_url):
    return JobStore(redis.Redis.from_url(redis_url))


def make_job(store, job_id, total, kind="batch"):
    spec = JobSpec(id=job_id, kind=kind, signature="question -> answer", backend="mock", total=total,
                   chunk_size=total, ttl_seconds=60, created_at=time.time())
    store.create_job(spec)
    return spec


def ok(cid):
    return ItemResult(custom_id=cid, status="succeeded", outputs={"answer": f"a-{cid}"}, backend="mock",
                      attempts=1), None


def calls(r) -> dict[str, int]:
    """Commands the server ran since the last CONFIG RESETSTAT, by name (EVALSHA's own calls count)."""
    return {name[len("cmdstat_"):]: int(v["calls"]) for name, v in r.info("commandstats").items()}


def test_start_chunk_returns_the_stored_ids_in_the_same_call_and_pages_long_chunks(store):
    ids = [f"i{n}" for n in range(2500)]  # more than one HMGET page (1000) inside the script
    make_job(store, "rt1", total=len(ids))
    assert store.record_results("rt1", [ok("i3"), ok("i1999"), ok("i2400")]) == 3
    store.start_chunk("other", "0", [])  # the script is loaded (a first EVALSHA may miss)
    store.r.config_resetstat()
    gate, done = store.start_chunk("rt1", "0", ids)
    assert (gate, done) == ("run", {"i3", "i1999", "i2400"})
    assert calls(store.r).get("evalsha") == 1 and "hmget" in calls(store.r)  # the HMGET ran inside the script
    assert store.status("rt1").status is JobState.RUNNING
    assert store.r.smembers(keys.job_running_chunks("rt1")) == {b"0"}
    assert store.start_chunk("rt1", "1", []) == ("run", set())
    store.cancel("rt1")
    assert store.start_chunk("rt1", "2", ids) == ("cancelling", set())
    assert store.start_chunk("nope", "0", ids) == ("missing", set())


def test_chunk_end_leaves_the_ledger_only_for_the_live_copy(store):
    make_job(store, "rt2", total=2)
    ledger = ChunkLedger(store.r)
    old, new = chunk_task_id("rt2", 0), chunk_task_id("rt2", 0)
    for chunk, tid in ((0, old), (1, chunk_task_id("rt2", 1))):
        ledger.sent("rt2", chunk, tid, "predict.mock", "{}", 60)
        store.chunk_start("rt2", str(chunk))
    ledger.sent("rt2", 0, new, "predict.mock", "{}", 60)  # requeued: a newer copy is live
    assert store.chunk_end("rt2", "0", old) == "running"
    assert ledger.outstanding("rt2") == 2  # the old copy's end leaves the chunk in the ledger
    assert store.chunk_end("rt2", "0", new) == "running"
    assert ledger.outstanding("rt2") == 1
    store.cancel("rt2")
    assert store.chunk_end("rt2", "1", None) == "cancelled"  # no copy named (a rejected message): ledger kept
    assert ledger.outstanding("rt2") == 1 and store.r.scard(keys.job_running_chunks("rt2")) == 0


def test_the_end_message_of_a_one_item_job_carries_its_result_and_a_batch_only_counts(store):
    make_job(store, "rt3", total=1, kind="predict")
    sub = store.subscribe("rt3")
    store.record_results("rt3", [ok("1")])
    message = None
    while message is None or message["type"] != "message":
        message = sub.get_message(timeout=2)
    sub.close()
    note = WakeUp.parse(message["data"])
    assert (note.new, note.final) == (1, "completed")
    assert note.row == json.loads(store.r.hget(keys.job_results("rt3"), "1"))
    make_job(store, "rt4", total=3)
    sub = store.subscribe("rt4")
    store.record_results("rt4", [ok("a")])
    store.record_results("rt4", [ok("b"), ok("c")])
    notes = []
    while len(notes) < 2:
        message = sub.get_message(timeout=2)
        if message and message["type"] == "message":
            notes.append(WakeUp.parse(message["data"]))
    sub.close()
    assert notes == [WakeUp(1), WakeUp(2, "completed")]  # rows only for a one-item job


def test_a_reader_subscribed_before_the_send_reads_nothing_for_a_one_item_job(store):
    make_job(store, "rt5a", total=1, kind="predict")
    store.r.config_resetstat()
    store.record_results("rt5a", [ok("1")])
    script_only = calls(store.r)  # what the record script itself runs (the stats count its calls too)
    make_job(store, "rt5", total=1, kind="predict")
    sub = store.subscribe("rt5")
    store.r.config_resetstat()
    store.record_results("rt5", [ok("1")])
    rows = list(store.iter_results("rt5", timeout=5, sub=sub))
    assert [r["outputs"] for r in rows] == [{"answer": "a-1"}]
    ran = calls(store.r)
    reader = {name: ran.get(name, 0) - script_only.get(name, 0) for name in ("hget", "lrange", "hmget", "exists",
                                                                             "evalsha")}
    assert reader == dict.fromkeys(reader, 0), (ran, script_only)


def test_a_reader_subscribed_too_late_still_ends_by_reading(store):
    make_job(store, "rt6", total=1, kind="predict")
    store.record_results("rt6", [ok("1")])  # published before anyone listened
    rows = list(store.iter_results("rt6", timeout=5, sub=store.subscribe("rt6")))
    assert [r["custom_id"] for r in rows] == ["1"]


def test_live_workers_are_read_once_per_max_age(store):
    seen = LiveWorkers(store.r, Settings(), max_age=0.3)
    store.r.config_resetstat()
    seen()
    seen()
    first = calls(store.r)
    time.sleep(0.35)
    seen()
    again = calls(store.r)
    assert again["zrangebyscore"] == 2 * first["zrangebyscore"] == 2


def test_the_items_numbers_ride_with_their_results_and_never_fail_them(store):
    make_job(store, "rt7", total=2)
    assert store.record_results("rt7", [ok("a")], counters={"items": 1.0, "latency_ms_sum": 2.5}) == 1
    store.r.hset(keys.job_tracking("rt7"), "cached_items", "x")  # HINCRBYFLOAT refuses this field
    assert store.record_results("rt7", [ok("b")], counters={"cached_items": 1.0, "items": 1.0}) == 1
    agg = {k.decode(): v.decode() for k, v in store.r.hgetall(keys.job_tracking("rt7")).items()}
    assert (float(agg["items"]), float(agg["latency_ms_sum"]), agg["cached_items"]) == (2.0, 2.5, "x")
    st = store.status("rt7")
    assert st.status is JobState.COMPLETED and st.usage is not None
    assert store.r.ttl(keys.job_tracking("rt7")) > 0


def test_the_last_results_end_the_chunk_in_the_same_call(store):
    make_job(store, "rt8", total=3)
    ledger = ChunkLedger(store.r)
    first, second = chunk_task_id("rt8", 0), chunk_task_id("rt8", 1)
    ledger.sent("rt8", 0, first, "predict.mock", "{}", 60)
    ledger.sent("rt8", 1, second, "predict.mock", "{}", 60)
    store.start_chunk("rt8", "0", ["a", "b"])
    store.start_chunk("rt8", "1", ["c"])
    assert store.record_results("gone", [ok("x")], end=("0", "t")) == -1  # (and the script is loaded)
    store.r.config_resetstat()
    assert store.record_results("rt8", [ok("a"), ok("b")], counters={"items": 2.0}, end=("0", first)) == 2
    assert calls(store.r)["evalsha"] == 1
    assert ledger.outstanding("rt8") == 1 and store.r.smembers(keys.job_running_chunks("rt8")) == {b"1"}
    store.cancel("rt8")  # chunk 1 still runs: cancelling until it ends, with its last result kept
    assert store.record_results("rt8", [ok("c")], end=("1", "an-older-copy")) == 1
    assert store.status("rt8").status is JobState.COMPLETED  # its last result completed the job first
    assert ledger.outstanding("rt8") == 1  # an older copy's end leaves the live copy's entry
