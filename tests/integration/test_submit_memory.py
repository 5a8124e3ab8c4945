"""The producer's submit path keeps memory flat in the file's length (bench scenario 5b's goal),
measured with tracemalloc against a real redis-server: per extra line, not in MB or seconds."""

import json
import tracemalloc

import redis

from producers import Client

SIG = "question -> answer"


def write_rows(path, n: int, tag: str) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"{tag}-{i}", "inputs": {"question": f"[{tag}] What is {i}?"}}) + "\n")


def submit_peak(client: Client, path) -> int:
    tracemalloc.start()
    try:
        client.submit_file(path, SIG, backend="mock")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_submit_file_peak_grows_by_bytes_per_line_not_objects(redis_url, tmp_path):
    """The file check and the duplicate fold once kept a dict entry per line (~140 B per line by this
    measure); now an 8-byte hash, and the enqueue holds one chunk at a time."""
    client = Client(on_warning=lambda message: None)  # no worker serves predict.mock here: only a warning
    small, large = 5_000, 20_000
    for n, tag in ((200, "warm"), (small, "small"), (large, "large")):
        write_rows(tmp_path / f"{tag}.jsonl", n, tag)
    submit_peak(client, tmp_path / "warm.jsonl")  # first-use imports and connections are not the file's
    peaks = {n: submit_peak(client, tmp_path / f"{tag}.jsonl") for n, tag in ((small, "small"), (large, "large"))}
    per_line = (peaks[large] - peaks[small]) / (large - small)
    assert per_line < 24, (per_line, peaks)
    chunks = sum(-(-n // client.settings.chunk_size) for n in (200, small, large))
    assert redis.Redis.from_url(redis_url).llen("predict.mock") == chunks  # every chunk was sent
