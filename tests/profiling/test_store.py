import json

import pytest

from fdi_keras.profiling.store import ProfileStore, merge_shards, read_rows


def rows(*keys):
    return [{"key": k, "status": "ok", "time_us": 1.0} for k in keys]


def test_append_skips_rows_already_stored(tmp_path):
    path = str(tmp_path / "profile.jsonl")
    store = ProfileStore(path)
    store.append(rows("a", "b"))
    store.append(rows("b", "c"))
    assert [r["key"] for r in read_rows(path)] == ["a", "b", "c"]
    assert ProfileStore(path).done == {"a", "b", "c"}


def test_a_torn_last_line_is_dropped_and_the_rest_kept(tmp_path):
    path = tmp_path / "profile.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows("a", "b")) + '{"key": "c", "sta')
    with pytest.warns(UserWarning, match="torn last line"):
        store = ProfileStore(str(path))
    assert store.done == {"a", "b"}
    store.append(rows("c"))
    assert [r["key"] for r in read_rows(str(path))] == ["a", "b", "c"]


def test_a_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "profile.jsonl"
    path.write_text('{"key": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="profile.jsonl:2 is not a JSON row"):
        read_rows(str(path))


def test_merge_shards_keeps_the_first_row_per_key(tmp_path):
    a, b, out = (str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "all.jsonl"))
    ProfileStore(a).append(rows("x", "y"))
    ProfileStore(b).append(rows("y", "z"))
    merged = merge_shards([a, b], out)
    assert [r["key"] for r in merged] == ["x", "y", "z"] == [r["key"] for r in read_rows(out)]
