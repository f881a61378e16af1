"""The append-only, crash-safe profile store: one JSON row per timed configuration.

Each row is written with a single `write` of a whole line on an O_APPEND descriptor and then
fsync'ed, so a killed run leaves at most one torn last line; opening the store drops such a
line (truncating the file to its last full line, with a warning) and every complete row
survives. A line that is not a row anywhere else is corruption no kill can cause: reading
raises an error naming the file and line. Rows are keyed by the spec's canonical key, so a
resumed run skips what is done and never writes a row twice.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator


def read_rows(path: str) -> list[dict]:
    """All complete rows of a profile file, in file order.

    A torn last line (a run killed mid-write, or one writing now) is ignored, and the file
    is left as it is; `ProfileStore` truncates it away.

    Raises:
        ValueError: a line other than the last is not a JSON row with a "key"; the message
            names the file and line number.
    """
    return list(_iter_complete(path))


def torn_tail_bytes(path: str) -> int:
    """The length of a torn last line of `path` (0 if it ends with a full line or is absent)."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        data = f.read()
    return len(data) - data.rfind(b"\n") - 1


def _iter_complete(path: str) -> Iterator[dict]:
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # torn by a kill mid-write
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(_corrupt(path, number, f"it is not JSON ({e})")) from e
            if not isinstance(row, dict) or "key" not in row:
                raise ValueError(_corrupt(path, number, "it is not a row with a 'key'"))
            yield row


def _corrupt(path: str, number: int, why: str) -> str:
    return (
        f"{path}:{number} is not a JSON row: {why}. Only a last line can be torn by a killed "
        "run, so this line was damaged otherwise. Fix or delete that line (its configuration "
        "will be measured again) and rerun."
    )


class ProfileStore:
    """Rows of one profiling run, on disk at `path`; `done` holds the keys already measured.

    Opening the store drops a torn last line left by a killed run (with a warning).

    Example:
        >>> store = ProfileStore("profiles/this_cpu/profile.jsonl")
        >>> store.append([{"key": "dense|...", "status": "ok", "time_us": 12.5}])
        >>> "dense|..." in store.done
        True
    """

    def __init__(self, path: str):
        self.path = path
        self._repair_torn_tail()
        self.rows = read_rows(path)
        self.done = {row["key"] for row in self.rows}

    def _repair_torn_tail(self) -> None:
        torn = torn_tail_bytes(self.path)
        if not torn:
            return
        with open(self.path, "rb+") as f:
            f.truncate(os.path.getsize(self.path) - torn)
            f.flush()
            os.fsync(f.fileno())
        warnings.warn(
            f"Dropped a torn last line of {self.path} ({torn} bytes) left by an interrupted "
            "run; that configuration will be measured again.",
            stacklevel=3,
        )

    def append(self, rows: Iterable[dict]) -> None:
        """Durably appends rows whose key is not yet stored."""
        fresh, keys = [], set()
        for row in rows:
            if row["key"] not in self.done and row["key"] not in keys:
                keys.add(row["key"])
                fresh.append(row)
        if not fresh:
            return
        payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in fresh).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows.extend(fresh)
        self.done.update(keys)


def merge_shards(shard_paths: list[str], out_path: str) -> list[dict]:
    """Merges per-device shard files into `out_path`, atomically, and returns its rows.

    The rows already in `out_path` are kept, first; then each shard's rows whose key is not
    there yet, in order (the first row of a key wins), so merging twice duplicates nothing.
    """
    merged = read_rows(out_path)
    seen = {row["key"] for row in merged}
    before = len(merged)
    for path in shard_paths:
        for row in read_rows(path):
            if row["key"] not in seen:
                seen.add(row["key"])
                merged.append(row)
    if len(merged) == before and not torn_tail_bytes(out_path):
        return merged  # nothing new: leave the file alone
    tmp = f"{out_path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in merged)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    return merged
