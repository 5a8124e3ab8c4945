"""The item-level result cache's key, entries and write, against the session's real redis-server
(the workers' side of it runs in tests/integration/test_item_cache.py)."""

from __future__ import annotations

import json

import pytest
import redis

from shared.config import Settings
from shared.item_cache import entry, hit, item_key, scope_digest
from shared.jobs import Item, ItemResult, JobKind, JobSpec
from shared.store import JobStore
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)
from workers.item_cache import ChunkCache, enabled

GEN = {"lm": {"temperature": 0.0, "max_tokens": 256}, "adapter": "dspy.adapters.chat_adapter.ChatAdapter",
       "dspy": "3.4.1"}
BASE = ("signature:question -> answer", "direct:openai/gpt-4o-mini", GEN)


def key(program=BASE[0], target=BASE[1], generation=GEN, inputs=None) -> str:
    return item_key(scope_digest(program, target, generation), inputs or {"question": "What is 2+2?"})


def spec(**kw) -> JobSpec:
    return JobSpec(id=kw.pop("id", "j1"), kind=JobKind.BATCH, signature=kw.pop("signature", "question -> answer"),
                   backend=kw.pop("backend", "direct"), total=kw.pop("total", 3), chunk_size=10, ttl_seconds=600,
                   created_at=1.0, **kw)


def test_every_part_of_the_key_changes_it_and_nothing_else_does():
    same = key()
    assert key() == same
    assert key(inputs={"question": "What is 2+2?"}) == same
    changed = [
        key(program="signature:question -> answer: str"),
        key(program="models:/qa/2@run2:runs:/run2/program"),  # another version (or the same one re-registered)
        key(target="direct:openai/gpt-4o"),
        key(target="bedrock:openai/gpt-4o-mini"),
        key(generation={**GEN, "lm": {"temperature": 0.7, "max_tokens": 256}}),
        key(generation={**GEN, "lm": {"temperature": 0.0, "max_tokens": 256, "n": 2}}),
        key(generation={**GEN, "adapter": "dspy.adapters.json_adapter.JSONAdapter"}),
        key(generation={**GEN, "dspy": "3.5.0"}),
        key(inputs={"question": "What is 2+3?"}),
    ]
    assert len({same, *changed}) == len(changed) + 1


def test_inputs_key_order_and_settings_order_do_not_matter():
    a = key(inputs={"question": "q", "context": "c"})
    assert a == key(inputs={"context": "c", "question": "q"})
    reordered = {"dspy": "3.4.1", "adapter": GEN["adapter"], "lm": {"max_tokens": 256, "temperature": 0.0}}
    assert key(generation=reordered) == key()


def test_one_scope_shares_a_cluster_slot():
    one, two = key(inputs={"question": "a"}), key(inputs={"question": "b"})
    tag = one[one.index("{"):one.index("}") + 1]
    assert one.startswith("tidyq:item:{") and tag in two and one != two


def test_an_entry_keeps_the_answer_only_and_comes_back_cached_and_free():
    result = ItemResult(custom_id="a", status="succeeded", outputs={"answer": "4"}, backend="direct",
                        model="openai/gpt-4o-mini", latency_ms=812.0, attempts=2, cost_usd=0.0031)
    stored = json.loads(entry(result))
    assert stored == {"outputs": {"answer": "4"}, "backend": "direct", "model": "openai/gpt-4o-mini"}
    again = hit("b", entry(result))
    assert again is not None
    assert (again.custom_id, again.outputs, again.cached, again.cost_usd, again.attempts, again.status) == (
        "b", {"answer": "4"}, True, 0.0, 0, "succeeded")
    assert hit("b", None) is None and hit("b", "not json") is None and hit("b", '{"outputs": 1}') is None


def test_only_succeeded_answers_of_the_jobs_own_target_are_written():
    cache = ChunkCache(spec(), {"ok": "k1", "bad": "k2", "fb": "k3"}, ttl=60)
    cache.keep(ItemResult(custom_id="ok", status="succeeded", outputs={"answer": "x"}, backend="direct"))
    cache.keep(ItemResult.failure("bad", "LMError", "boom", backend="direct"))
    cache.keep(ItemResult(custom_id="fb", status="succeeded", outputs={"answer": "y"}, backend="bedrock",
                          skipped=[{"target": "direct:m", "reason": "open"}]))
    cache.keep(ItemResult(custom_id="twin", status="succeeded", outputs={"answer": "x"}, cached=True))  # no key
    assert [k for k, _ in cache.take()] == ["k1"] and cache.take() == []


@pytest.mark.parametrize("change, on", [({}, True), ({"item_cache": False}, False), ({"backend": "mock"}, False)])
def test_a_job_opts_out_and_the_mock_is_never_cached(change, on):
    assert enabled(spec(**change), Settings()) is on


def test_either_cache_switch_turns_it_off():
    assert not enabled(spec(), Settings(item_cache_enabled=False))
    assert not enabled(spec(), Settings(cache_enabled=False))


def test_entries_are_set_with_the_result_write_even_after_redis_lost_its_scripts(redis_url):
    r = redis.Redis.from_url(redis_url)
    store = JobStore(r)
    job = spec(id="jc")
    store.create_job(job)
    ok = ItemResult(custom_id="a", status="succeeded", outputs={"answer": "4"}, backend="direct")
    assert store.record_results("jc", [(ok, None)], cache_entries=[("tidyq:item:{s}:1", entry(ok))],
                                cache_ttl=120) == 1
    assert 0 < r.ttl("tidyq:item:{s}:1") <= 120 and hit("a", r.get("tidyq:item:{s}:1")) is not None
    r.script_flush()  # a restarted Redis: the pipelined EVALSHA meets NOSCRIPT and the script is sent again
    other = ok.model_copy(update={"custom_id": "b"})
    assert store.record_results("jc", [(other, None)], cache_entries=[("tidyq:item:{s}:2", entry(other))],
                                cache_ttl=120) == 1
    assert r.exists("tidyq:item:{s}:2") and store.status("jc").counts.succeeded == 2
    # a redelivered write is still counted once
    assert store.record_results("jc", [(other, None)], cache_entries=[("tidyq:item:{s}:2", entry(other))],
                                cache_ttl=120) == 0


def test_a_chunk_reads_its_hits_with_one_mget_per_scope_in_one_round_trip(redis_url):
    r = redis.Redis.from_url(redis_url)
    ok = ItemResult(custom_id="x", status="succeeded", outputs={"answer": "4"}, backend="direct")
    r.set("tidyq:item:{s}:1", entry(ok))
    r.set("tidyq:item:{v2}:1", entry(ok.model_copy(update={"outputs": {"answer": "four"}})))
    before = r.info("commandstats")
    cache = ChunkCache(spec(), {"a": "tidyq:item:{s}:1", "b": "tidyq:item:{s}:2", "c": "tidyq:item:{v2}:1"},
                       ttl=60).read(r)
    after = r.info("commandstats")
    assert after["cmdstat_mget"]["calls"] - before.get("cmdstat_mget", {"calls": 0})["calls"] == 2  # two scopes
    assert sorted(cache.hits) == ["a", "c"] and cache.hits["a"].custom_id == "a" and cache.hits["a"].cached
    assert cache.hits["c"].outputs == {"answer": "four"}
    assert cache.keys == {"b": "tidyq:item:{s}:2"}  # a hit is not written again


def test_a_rollout_keys_each_item_with_the_version_that_serves_it(tmp_path, redis_url, mlflow_uri):
    """Registered versions in a real sqlite MLflow store, the rollout state in the real Redis."""
    import dspy

    from shared.programs import resolve_program
    from shared.registry import get_registry
    from tests.unit.test_programs import _register

    for tag in (1, 2):
        _register(tmp_path, "qa", dspy.Predict("question -> answer"), tag)
    get_registry().start_rollout("qa", 2, 50)
    items = [Item(custom_id=f"i{n}", inputs={"question": "the same question"}) for n in range(40)]
    rollout = spec(program="qa", backend="mock", signature=None)
    cache = ChunkCache.for_items(rollout, items, Settings(item_cache_backends="mock"))
    by_version: dict[int, set[str]] = {}
    for item in items:
        by_version.setdefault(resolve_program("qa", item.custom_id).version, set()).add(cache.keys[item.custom_id])
    assert sorted(by_version) == [1, 2]  # the split, then one key per version for the same inputs
    assert all(len(keys) == 1 for keys in by_version.values()) and by_version[1] != by_version[2]
    pinned = ChunkCache.for_items(spec(program="models:/qa/2", backend="mock", signature=None), items[:1],
                                  Settings(item_cache_backends="mock"))
    assert {pinned.keys["i0"]} == by_version[2]  # the version pinned or reached through the rollout: one key


def test_without_a_key_an_item_just_runs(redis_url):
    """A program that does not load here gives its items no key (they run and report why)."""
    broken = spec(program="nopkg.mod:Prog", backend="mock", signature=None)
    cache = ChunkCache.for_items(broken, [Item(custom_id="a", inputs={"q": 1})], Settings(item_cache_backends="mock"))
    assert cache.keys == {} and cache.read(redis.Redis.from_url(redis_url)).hits == {}


def test_an_import_path_programs_identity_follows_its_source_and_its_saved_state(tmp_path, monkeypatch):
    from workers import item_cache, runtime

    package = tmp_path / "statefulprogs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    state = tmp_path / "state.json"
    (package / "qa.py").write_text(
        "import json, dspy\n\n"
        "def make():\n"
        "    program = dspy.Predict('question -> answer')\n"
        f"    program.demos = [dspy.Example(**d) for d in json.load(open({str(state)!r}))]\n"
        "    return program\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TIDYQ_PROGRAM_PACKAGES", "statefulprogs")

    def identity(demos: list[dict]) -> str:
        state.write_text(json.dumps(demos))
        runtime.reset()
        item_cache.forget_identities()
        return item_cache.code_identity("statefulprogs.qa:make")

    try:
        plain = identity([])
        assert identity([]) == plain and plain.startswith("statefulprogs.qa:make@")
        taught = identity([{"question": "2+2?", "answer": "4"}])
        assert taught != plain  # the same code with other demos is another program
    finally:
        runtime.reset()
        item_cache.forget_identities()


def test_endpoints_are_normalised_and_never_keep_a_credential():
    from shared.item_cache import endpoint_identity

    same = "https://llm.example.com/v1"
    for spelling in ("HTTPS://LLM.Example.com:443/v1/", " https://llm.example.com/v1 ",
                     "https://user:sk-secret@llm.example.com/v1?api-key=sk-secret#x"):
        assert endpoint_identity(spelling) == same
    assert endpoint_identity("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert endpoint_identity("http://[::1]:8000/v1/") == "http://[::1]:8000/v1"
    assert endpoint_identity(None) is None and endpoint_identity("  ") is None


def test_one_model_name_at_two_api_bases_is_two_scopes_and_the_api_key_is_not_in_the_key(monkeypatch):
    """The worker's real wrapper (workers/runtime.py) built from TIDYQ_API_BASE / TIDYQ_API_KEY."""
    from workers import runtime

    items = [Item(custom_id="a", inputs={"question": "What is 2+2?"})]
    job = spec(model="openai/gpt-4o-mini")

    def key_at(api_base: str | None, api_key: str = "sk-one") -> str:
        if api_base is None:
            monkeypatch.delenv("TIDYQ_API_BASE", raising=False)
        else:
            monkeypatch.setenv("TIDYQ_API_BASE", api_base)
        monkeypatch.setenv("TIDYQ_API_KEY", api_key)
        runtime.reset()  # a worker process is built from one environment: start again
        return ChunkCache.for_items(job, items, Settings()).keys["a"]

    try:
        first = key_at("http://10.0.0.1:8000/v1")
        assert key_at("http://10.0.0.2:8000/v1") != first  # another host: another scope
        assert key_at("HTTP://10.0.0.1:8000/v1/") == first  # the same endpoint spelled otherwise
        assert key_at("http://10.0.0.1:8000/v1", api_key="sk-two") == first  # credentials are not in it
        assert key_at(None) not in (first, key_at("http://10.0.0.2:8000/v1"))
    finally:
        runtime.reset()
