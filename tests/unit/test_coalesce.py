"""Reads of one event-loop turn share one round trip: shared/steps/coalesce.py alone, then the
async cache step over a real redis-server (its shared-tier lookups become one MGET)."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_lib
from dspy import lm15
from dspy.lm15 import Message, Request, Response, TextPart, Usage

from shared.config import CacheConfig
from shared.steps import stats
from shared.steps.async_steps import AsyncCache
from shared.steps.cache import CacheStep
from shared.steps.coalesce import Coalescer


def test_reads_of_one_turn_are_one_fetch_and_later_reads_another():
    fetches: list[list[str]] = []

    def fetch_many(names):
        fetches.append(list(names))
        return [name.upper() for name in names]

    reads = Coalescer(fetch_many)

    async def main():
        first = await asyncio.gather(*(reads.get(f"k{i}") for i in range(50)))
        second = await reads.get("late")
        return first, second

    first, second = asyncio.run(main())
    assert first == [f"K{i}" for i in range(50)] and second == "LATE"
    assert fetches == [[f"k{i}" for i in range(50)], ["late"]]


def test_a_cancelled_reader_drops_out_and_an_error_reaches_every_reader():
    fetches: list[list[str]] = []

    def fetch_many(names):
        fetches.append(list(names))
        if "bad" in names:
            raise ConnectionError("down")
        return names

    reads = Coalescer(fetch_many)

    async def main():
        gone = asyncio.ensure_future(reads.get("gone"))
        kept = asyncio.ensure_future(reads.get("kept"))
        await asyncio.sleep(0)  # both joined the batch
        gone.cancel()
        assert await kept == "kept"
        results = await asyncio.gather(reads.get("a"), reads.get("bad"), return_exceptions=True)
        return results

    results = asyncio.run(main())
    assert fetches[0] == ["kept"]
    assert all(isinstance(r, ConnectionError) for r in results)


def _request(text: str) -> Request:
    return Request(model="openai/m", messages=(Message.user(text),), config=lm15.Config())


def _response(text: str) -> Response:
    return Response(id=None, model="m", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                    usage=Usage(input_tokens=1, output_tokens=1))


def _calls(client, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.mark.parametrize("cached", [False, True])
def test_async_cache_lookups_of_one_turn_are_one_mget(redis_url, cached):
    raw = redis_lib.Redis.from_url(redis_url)
    writer = CacheStep("direct", CacheConfig(), redis_url=redis_url, cache_dir=None)
    provider_calls: list[str] = []

    async def provider(request: Request) -> Response:
        provider_calls.append(request.messages[0].text)
        return _response("answer to " + request.messages[0].text)

    texts = [f"q{i} cached={cached}" for i in range(40)]
    if cached:  # another worker answered these before: they are in Redis, not in this process's memory
        for text in texts:
            writer(_request(text), lambda req: _response("answer to " + req.messages[0].text))
        writer.flush()
    step = AsyncCache(CacheStep("direct", CacheConfig(), redis_url=redis_url, cache_dir=None))
    before_get, before_mget = _calls(raw, "get"), _calls(raw, "mget")

    async def one(text):
        with stats.track() as call:
            answer = await step(_request(text), provider)
        return answer.message.text, call.cache_hits

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(one(t) for t in texts)), 10)

    got = asyncio.run(main())
    assert [text for text, _ in got] == ["answer to " + t for t in texts]
    assert [hits for _, hits in got] == [1 if cached else 0] * len(texts)
    assert provider_calls == ([] if cached else texts)
    assert _calls(raw, "mget") - before_mget == 1 and _calls(raw, "get") - before_get == 0
    raw.close()
