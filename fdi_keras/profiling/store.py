"""The append-only, crash-safe profile store: one JSON row per timed configuration.

Each row is written with a single `write` of a whole line on an O_APPEND descriptor and then
fsync'ed, so a killed run leaves at most one torn last line; opening the store drops such a
line (truncating it away) and every complete row survives. Rows are keyed by the spec's
canonical key, so a resumed run skips what is done and never writes a row twice.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator


def read_rows(path: str) -> list[dict]:
    """All complete rows of a profile file (a torn last line is ignored)."""
    return list(_iter_complete(path))


def _iter_complete(path: str) -> Iterator[dict]:
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # torn by a kill mid-write
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{number} is not a JSON row ({e}); fix or remove it."
                ) from e


class ProfileStore:
    """Rows of one profiling run, on disk at `path`; `done` holds the keys already measured."""

    def __init__(self, path: str):
        self.path = path
        self._repair_torn_tail()
        self.rows = read_rows(path)
        self.done = {row["key"] for row in self.rows}

    def _repair_torn_tail(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                warnings.warn(
                    f"Dropping a torn last line of {self.path} ({len(data) - end} bytes) left by "
                    "an interrupted run; that configuration will be measured again.",
                    stacklevel=3,
                )
                f.truncate(end)

    def append(self, rows: Iterable[dict]) -> None:
        """Durably appends rows whose key is not yet stored."""
        fresh = [r for r in rows if r["key"] not in self.done]
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
        self.done.update(r["key"] for r in fresh)


def merge_shards(shard_paths: list[str], out_path: str) -> list[dict]:
    """Merges per-device shard files into one file (first row per key wins), atomically."""
    merged, seen = [], set()
    for path in shard_paths:
        for row in read_rows(path):
            if row["key"] not in seen:
                seen.add(row["key"])
                merged.append(row)
    tmp = f"{out_path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in merged)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    return merged
