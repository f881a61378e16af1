import json

import pytest

from fdi_keras.profiling.store import ProfileStore, merge_shards, read_rows, torn_tail_bytes


def rows(*keys):
    return [{"key": k, "status": "ok", "time_us": 1.0} for k in keys]


def lines(*keys):
    return "".join(json.dumps(r) + "\n" for r in rows(*keys))


def test_append_skips_rows_already_stored(tmp_path):
    path = str(tmp_path / "profile.jsonl")
    store = ProfileStore(path)
    store.append(rows("a", "b"))
    store.append(rows("b", "c", "c"))
    assert [r["key"] for r in read_rows(path)] == ["a", "b", "c"]
    assert ProfileStore(path).done == {"a", "b", "c"}


def test_a_torn_last_line_is_dropped_and_the_file_truncated(tmp_path):
    path = tmp_path / "profile.jsonl"
    path.write_text(lines("a", "b") + '{"key": "c", "sta')
    assert torn_tail_bytes(str(path)) == len('{"key": "c", "sta')
    assert [r["key"] for r in read_rows(str(path))] == ["a", "b"]  # readers skip it...
    assert path.read_text().endswith('"sta')  # ...and leave the file alone
    with pytest.warns(UserWarning, match=r"torn last line of .*profile.jsonl \(17 bytes\)"):
        store = ProfileStore(str(path))
    assert path.read_text() == lines("a", "b")  # truncated to the last full line
    assert store.done == {"a", "b"}
    store.append(rows("c"))
    assert path.read_text() == lines("a", "b", "c")


@pytest.mark.parametrize(
    "middle, why",
    [
        ('{"key": "b", "sta\n', "not JSON"),  # a torn line that more rows were appended after
        ("[1, 2]\n", "not a row with a 'key'"),
        ('{"status": "ok"}\n', "not a row with a 'key'"),
    ],
)
def test_a_corrupt_middle_line_is_an_error_naming_the_line(tmp_path, middle, why):
    path = tmp_path / "profile.jsonl"
    path.write_text(lines("a") + middle + lines("c"))
    for read in (read_rows, ProfileStore):
        with pytest.raises(ValueError, match=f"profile.jsonl:2 is not a JSON row: it is {why}"):
            read(str(path))
    assert path.read_text() == lines("a") + middle + lines("c")  # nothing was dropped


def test_merge_shards_keeps_the_first_row_per_key(tmp_path):
    a, b, out = (str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "all.jsonl"))
    ProfileStore(a).append(rows("x", "y"))
    ProfileStore(b).append(rows("y", "z"))
    merged = merge_shards([a, b], out)
    assert [r["key"] for r in merged] == ["x", "y", "z"] == [r["key"] for r in read_rows(out)]


def test_merge_shards_keeps_the_rows_already_merged_and_duplicates_none(tmp_path):
    a, b, out = (str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "profile.jsonl"))
    # Rows of an earlier run (one device, or shards since deleted) are already in the output.
    ProfileStore(out).append([{"key": "old", "status": "ok", "time_us": 5.0}, *rows("y")])
    ProfileStore(a).append(rows("x", "y"))
    ProfileStore(b).append(rows("z"))
    merge_shards([a, b], out)
    assert [r["key"] for r in read_rows(out)] == ["old", "y", "x", "z"]
    assert read_rows(out)[0]["time_us"] == 5.0 and read_rows(out)[1]["time_us"] == 1.0
    ProfileStore(a).append(rows("w"))
    merge_shards([a, b], out)  # merging again adds only what is new
    assert [r["key"] for r in read_rows(out)] == ["old", "y", "x", "z", "w"]
    before = (tmp_path / "profile.jsonl").stat().st_mtime_ns
    merge_shards([a, b], out)
    assert (tmp_path / "profile.jsonl").stat().st_mtime_ns == before  # nothing new: untouched
