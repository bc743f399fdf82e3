"""One writer per embedding store: an OS file lock beside the store folder, released by the kernel on exit.

``mmrec embed`` takes ``<cache>/<name>/<fingerprint>.lock`` before it builds, resumes or merges the store
``<cache>/<name>/<fingerprint>/``. The lock is ``flock(2)`` on that file, so it belongs to the running
process: a run that crashes or is killed (even with SIGKILL) releases it without any clean-up, and a lock
file left on disk means nothing by itself. The holder writes who it is into the file (pid, host, start
time, command line); a second run on the same store waits, printing that, or gives up after ``timeout``
seconds with a :class:`StoreLockedError` that names the holder. Different stores (another encoder, another
input) have other fingerprints, hence other locks, and are built concurrently.

The holder removes the lock file on release. A waiter that opened the file before it was removed would
then hold a lock on a deleted file; it notices (the path no longer names the inode it locked) and retries.

``flock`` works on local filesystems and on NFS (Linux emulates it with NFS byte-range locks); on a
filesystem without working locks, two runs on one store are not prevented from racing (they would still
not corrupt it: every file is written under a temporary name and renamed, and a complete store is never
overwritten).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "abc.lock"
    >>> with StoreLock(path) as lock:
    ...     holder = read_holder(path)
    ...     holder.pid == os.getpid(), try_lock(path) is None
    (True, True)
    >>> path.exists(), try_lock(path) is not None
    (False, True)
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrec.store.reader import StoreError

_DEFAULT_ANNOUNCE_S = 60.0


class StoreLockedError(StoreError):
    """Another run holds a store's lock (it is writing that store) and did not release it within the timeout."""


@dataclass
class LockHolder:
    """Who holds a lock, as the holder wrote it into the lock file."""

    pid: int | None
    host: str | None
    started: str | None
    command: str | None

    def describe(self) -> str:
        """``pid 4242 on host gpu-07 since 2024-05-01T10:00:00+0000 (`mmrec embed --config ...`)``."""
        if self.pid is None:
            return "a process that has not written its name yet"
        text = f"pid {self.pid} on host {self.host or '?'} since {self.started or '?'}"
        return text + (f" (`{_short(self.command)}`)" if self.command else "")


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_holder(path: str | os.PathLike[str]) -> LockHolder:
    """What the current (or last) holder wrote into the lock file; fields are ``None`` when unknown."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid = data.get("pid")
    return LockHolder(
        pid=int(pid) if isinstance(pid, int) else None,
        host=data.get("host"),
        started=data.get("started"),
        command=data.get("command"),
    )


def _holder_record() -> bytes:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else None,
    }
    return (json.dumps(record) + "\n").encode("utf-8")


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """Take the lock without waiting: the locked file descriptor, or ``None`` when someone holds it.

    The caller owns the descriptor (closing it releases the lock); :class:`StoreLock` is the usual way in.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    try:  # the holder we waited for may have removed the file meanwhile: then this lock guards nothing
        st_path = os.stat(path)
    except FileNotFoundError:
        st_path = None
    st_fd = os.fstat(fd)
    if st_path is None or (st_path.st_ino, st_path.st_dev) != (st_fd.st_ino, st_fd.st_dev):
        os.close(fd)
        return try_lock(path)
    return fd


class StoreLock:
    """An exclusive, crash-safe lock on one store (use as a context manager).

    Args:
        path: the lock file, ``<cache>/<name>/<fingerprint>.lock``.
        timeout: seconds to wait for another holder; ``None`` waits as long as it takes, ``0`` fails at once.
        what: how messages name the locked thing (default: the lock file's path).
        echo: where the "waiting for ..." lines go (default: stderr); called when the wait starts and then
            every ``announce_every`` seconds.
        poll: seconds between attempts.
        announce_every: seconds between two "still waiting" lines.

    Raises:
        StoreLockedError: on :meth:`acquire`, when the lock is still held after ``timeout`` seconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        what: str | None = None,
        echo: Callable[[str], None] | None = None,
        poll: float = 0.2,
        announce_every: float = _DEFAULT_ANNOUNCE_S,
    ) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout}")
        self.path = Path(path)
        self.timeout = timeout
        self.what = what or str(self.path)
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.poll = poll
        self.announce_every = announce_every
        self._fd: int | None = None
        self.waited_s = 0.0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StoreLock:
        """Wait for the lock (see the class arguments) and write this process's name into it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this StoreLock")
        t0 = time.monotonic()
        next_note = t0
        while True:
            fd = try_lock(self.path)
            if fd is not None:
                break
            now = time.monotonic()
            holder = read_holder(self.path)
            if self.timeout is not None and now - t0 >= self.timeout:
                waited = f"after waiting {self.timeout:g} s" if self.timeout else "and --lock_timeout is 0"
                raise StoreLockedError(
                    f"{self.what} is being written by another run: {holder.describe()}, {waited}. "
                    "Let that run finish (a second run then finds the store complete), stop it, or raise "
                    "`lock_timeout`; a run that crashed releases its lock by itself."
                )
            if now >= next_note:
                limit = "" if self.timeout is None else f" (up to {self.timeout:g} s)"
                self.echo(
                    f"waiting for {self.what}{limit}: another run holds {self.path.name}: {holder.describe()}"
                )
                next_note = now + self.announce_every
            time.sleep(self.poll)
        self.waited_s = time.monotonic() - t0
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_record(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: waiters then retry on a fresh file
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
