"""One run at a time per profile directory: a lock file holding its owner's pid.

Two runs appending to one store would each measure what the other is measuring, and one's
merge or refit could replace the other's files. `ProfileLock(out_dir)` creates
`out_dir/profile.lock` atomically (O_CREAT | O_EXCL) with the owner's pid, host and start time;
a second run finds it and stops with `ProfileLockedError` naming the file and the pid. A lock
whose pid no longer runs on this host (the run was killed) is stale: the next run takes it over
with a warning. A lock written from another host cannot be checked and is always respected.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings

from fdi_keras.errors import ProfileLockedError

LOCK_NAME = "profile.lock"
# A lock file whose content cannot be read yet is being written, unless it is older than this.
_UNWRITTEN_GRACE_SECONDS = 5.0

_guard = threading.Lock()
_held: dict[tuple[str, int], int] = {}  # (lock path, thread) -> depth


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _read_owner(path: str) -> dict | None:
    """The lock's content, {} if unreadable, None if the lock is gone."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else {}


class ProfileLock:
    """Context manager holding `directory/profile.lock` for one run.

    Re-entrant within a thread (the profiling tool holds it while `run_profile` takes it
    again); another thread or process is refused.

    Args:
        directory: the profile directory (`--out_dir`); it must exist.

    Raises:
        ProfileLockedError: another live run holds the lock.

    Example:
        >>> with ProfileLock("profiles/this_cpu"):
        ...     ...  # profile, merge, refit
    """

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LOCK_NAME)
        self._key = (os.path.realpath(self.path), threading.get_ident())

    def __enter__(self) -> ProfileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        with _guard:
            if self._key in _held:
                _held[self._key] += 1
                return
            self._create()
            _held[self._key] = 1

    def release(self) -> None:
        with _guard:
            _held[self._key] -= 1
            if _held[self._key]:
                return
            del _held[self._key]
            owner = _read_owner(self.path)
            if owner and owner.get("pid") == os.getpid():
                os.unlink(self.path)

    def _create(self) -> None:
        content = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            try:
                os.write(fd, (content + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        raise ProfileLockedError(
            f"Could not take the lock {self.path}: other runs keep creating it. Wait for them "
            "to finish."
        )

    def _take_over_if_stale(self) -> None:
        owner = _read_owner(self.path)
        if owner is None:
            return  # released meanwhile: try again
        if not owner:
            try:
                age = time.time() - os.path.getmtime(self.path)
            except FileNotFoundError:
                return
            if age < _UNWRITTEN_GRACE_SECONDS:
                raise ProfileLockedError(
                    f"{self.path} exists: another run is starting on this directory. Wait for "
                    "it to finish, or profile into another --out_dir."
                )
            why = "holds no pid (a run was killed while creating it)"
        else:
            pid, host = owner["pid"], owner.get("host")
            if host != socket.gethostname() or _alive(pid):
                where = "" if host == socket.gethostname() else f" on host {host!r}"
                raise ProfileLockedError(
                    f"Another run (pid {pid}{where}, started {owner.get('started')}) holds "
                    f"the lock {self.path}: one run at a time per profile directory. Wait for "
                    "it to finish or stop it, or profile into another --out_dir. If no such "
                    "run exists, delete the lock file."
                )
            why = f"belongs to pid {pid}, which is no longer running (a killed run)"
        warnings.warn(f"Taking over the stale lock {self.path}: it {why}.", stacklevel=5)
        # Between reading and removing, another run may have taken it over first; removing
        # only a lock whose content is unchanged narrows that window to a few instructions.
        if _read_owner(self.path) == owner:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
