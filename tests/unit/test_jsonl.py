"""Streaming JSONL: every bad line is refused with file, line and field; files are streamed."""

import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.jsonl import FileCheck, JsonlWriter, iter_items, parse_item, read_jsonl
from shared.dedupe import fold_duplicates
from shared.errors import BadInput
from shared.hash_log import MASK, HashLog

FIELDS = ("question",)
SIG = "question -> answer"


def check(path, **kw):
    opts = dict(input_fields=FIELDS, signature=SIG, max_items=1000, max_item_bytes=10_000) | kw
    return FileCheck(path, **opts).run()


def write(tmp_path, lines, name="in.jsonl"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return p


def test_good_file_counts_items_and_defaults_custom_id_to_line_number(tmp_path):
    p = write(tmp_path, [json.dumps({"inputs": {"question": "a"}}), "",
                         json.dumps({"custom_id": "x", "inputs": {"question": "b"}})])
    assert check(p) == 2
    assert [(i.custom_id, i.inputs["question"]) for i in iter_items(p)] == [("1", "a"), ("x", "b")]


@pytest.mark.parametrize("line, message", [
    ('{"inputs": {"question": "a"}', "in.jsonl:2: not JSON"),
    ('[1, 2]', "in.jsonl:2: expected a JSON object"),
    ('{"inputs": {"qestion": "a"}}', "in.jsonl:2: field 'inputs.qestion': unknown input field 'qestion'"),
    ('{"inputs": {}}', "in.jsonl:2: field 'inputs.question': missing input field"),
    ('{"custom_id": "a", "inputs": {"question": "b"}}',
     "in.jsonl:2: field 'custom_id': duplicate custom_id 'a' (first on line 1)"),
    ('{"custom_id": "b", "input": {"question": "b"}}', "in.jsonl:2: field 'input': unknown field 'input'"),
    ('{"custom_id": "b"}', "in.jsonl:2: field 'inputs': missing field 'inputs'"),
    ('{"custom_id": true, "inputs": {"question": "b"}}', "in.jsonl:2: field 'custom_id'"),
    ('{"custom_id": "c", "inputs": "question"}', "in.jsonl:2: field 'inputs': 'inputs' must be a JSON object"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    p = write(tmp_path, ['{"custom_id": "a", "inputs": {"question": "q"}}', line])
    with pytest.raises(BadInput) as info:
        check(p)
    assert message in str(info.value), str(info.value)


def test_missing_empty_directory_and_oversized(tmp_path):
    with pytest.raises(BadInput, match="nope.jsonl: no such file"):
        check(tmp_path / "nope.jsonl")
    with pytest.raises(BadInput, match="no items"):
        check(write(tmp_path, ["", "  "]))
    with pytest.raises(BadInput, match="is a directory"):
        check(tmp_path)
    big = write(tmp_path, [json.dumps({"inputs": {"question": "x" * 200}})], "big.jsonl")
    with pytest.raises(BadInput, match="big.jsonl:1: line is .* bytes; the limit is 100"):
        check(big, max_item_bytes=100)
    many = write(tmp_path, [json.dumps({"inputs": {"question": str(i)}}) for i in range(4)], "many.jsonl")
    with pytest.raises(BadInput, match="many.jsonl:4: more than 3 items"):
        check(many, max_items=3)


def test_bad_utf8_is_reported_with_its_line(tmp_path):
    p = tmp_path / "bin.jsonl"
    p.write_bytes(b'{"inputs": {"question": "a"}}\n{"inputs": {"question": "\xff"}}\n')
    with pytest.raises(BadInput, match="bin.jsonl:2: not UTF-8"):
        check(p)


def test_no_signature_means_no_field_check(tmp_path):
    p = write(tmp_path, [json.dumps({"inputs": {"anything": 1}})])
    assert check(p, input_fields=None, signature=None) == 1


def test_large_file_is_streamed_not_loaded(tmp_path):
    p = tmp_path / "large.jsonl"
    with open(p, "w") as fh:
        for i in range(30_000):
            row = {"custom_id": f"id-{i}", "inputs": {"question": f"question number {i} " + "x" * 60}}
            fh.write(json.dumps(row) + "\n")
    size = p.stat().st_size
    tracemalloc.start()
    try:
        n = sum(1 for _ in iter_items(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 30_000
    assert peak < size / 10, (peak, size)  # a few lines at a time, not the file


def test_the_first_duplicate_in_file_order_wins_over_a_later_bad_line(tmp_path):
    lines = [json.dumps({"custom_id": cid, "inputs": {"question": "q"}}) for cid in ("a", "b", "c", "b", "a")]
    with pytest.raises(BadInput, match=r"in.jsonl:4: field 'custom_id': duplicate custom_id 'b' \(first on line 2\)"):
        check(write(tmp_path, [*lines, "not json"]))
    with pytest.raises(BadInput, match="in.jsonl:3: not JSON"):  # the bad line comes first
        check(write(tmp_path, [*lines[:2], "not json", *lines[2:]]))
    with pytest.raises(BadInput, match="in.jsonl:4: field 'custom_id': duplicate custom_id 'b'"):
        check(write(tmp_path, lines), max_items=3)  # line 4 is both over the limit and a duplicate
    implicit = [json.dumps({"custom_id": "2", "inputs": {"question": "q"}}), json.dumps({"inputs": {"question": "r"}})]
    with pytest.raises(BadInput, match=r"in.jsonl:2: field 'custom_id': duplicate custom_id '2' \(first on line 1\)"):
        check(write(tmp_path, implicit))  # a line's number is its id when it has none


class EveryIdCollides(FileCheck):
    """The same hash for every custom_id: the re-read must tell equal ids from equal hashes."""

    id_hash = staticmethod(lambda cid: 7)


def test_colliding_hashes_are_settled_by_the_real_ids(tmp_path):
    rows = [json.dumps({"custom_id": f"id-{i}", "inputs": {"question": str(i)}}) for i in range(50)]
    opts = dict(input_fields=FIELDS, signature=SIG, max_items=1000, max_item_bytes=10_000)
    assert EveryIdCollides(write(tmp_path, rows), **opts).run() == 50
    with pytest.raises(BadInput, match=r"in.jsonl:51: field 'custom_id': duplicate custom_id 'id-7' \(first on line 8"):
        EveryIdCollides(write(tmp_path, [*rows, rows[7]]), **opts).run()
    items = [parse_item(r, where="x", line_no=i) for i, r in enumerate([*rows, rows[3].replace("id-3", "z")], 1)]
    unique, folded = fold_duplicates(lambda: iter(items), prefix=lambda digest: 0)  # every digest collides
    got = list(unique())
    assert folded == 1 and len(got) == 50 and got[3].duplicates == ["z"]
    assert [i.custom_id for i in got] == [f"id-{i}" for i in range(50)]
    unique, folded = fold_duplicates(lambda: iter(items[:50]), prefix=lambda digest: 0)
    assert folded == 0 and [i.custom_id for i in unique()] == [f"id-{i}" for i in range(50)]


def test_hash_log_names_exactly_the_repeated_values():
    log = HashLog()
    values = [0, MASK, 1 << 63, 12345, MASK - 1, 0, 12345, MASK, 99 << 40]
    for v in values:
        log.add(v)
    assert log.repeated() == {0, 12345, MASK} and len(log) == len(values)


def retained_per_line(fn, small: int, large: int, tmp_path) -> float:
    """Traced peak bytes of ``fn(path)`` per extra line between a small and a large file (same run)."""
    peaks = []
    for n in (small, large):
        p = tmp_path / f"rows-{n}.jsonl"
        with open(p, "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"custom_id": f"row-{i}", "inputs": {"question": f"What is {i} plus {i}?"}}) + "\n")
        tracemalloc.start()
        try:
            fn(p)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return (peaks[1] - peaks[0]) / (large - small)


def test_file_check_and_fold_keep_bytes_per_line_not_objects(tmp_path):
    """A dict of every custom_id (~105 B per line) or digest (~136 B) made the producer grow with the
    file; the hash log keeps 8 B per line (array growth adds a little)."""
    per_check = retained_per_line(lambda p: check(p, max_items=100_000), 5_000, 20_000, tmp_path)
    per_fold = retained_per_line(lambda p: fold_duplicates(lambda: iter_items(p)), 5_000, 20_000, tmp_path)
    assert per_check < 24 and per_fold < 24, (per_check, per_fold)


def test_writer_is_atomic_and_roundtrips(tmp_path):
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as w:
        w.write({"custom_id": "a", "outputs": {"answer": "é"}})
        assert not out.exists()  # written to a .part file until closed
    assert list(read_jsonl(out)) == [{"custom_id": "a", "outputs": {"answer": "é"}}]
    with pytest.raises(BadInput, match="output directory does not exist"):
        JsonlWriter(tmp_path / "missing" / "out.jsonl")


@settings(max_examples=60, deadline=None)
@given(cid=st.text(min_size=1, max_size=40), question=st.text(max_size=200))
def test_any_valid_row_roundtrips(cid, question):
    line = json.dumps({"custom_id": cid, "inputs": {"question": question}})
    item = parse_item(line, where="f:1", line_no=1, input_fields=FIELDS, signature=SIG)
    assert (item.custom_id, item.inputs) == (cid, {"question": question})
