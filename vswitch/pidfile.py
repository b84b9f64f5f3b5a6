"""One daemon per rundir, enforced with a locked pidfile.

An advisory ``flock`` (not the mere existence of the file) decides: a daemon
killed with -9 leaves a stale file that the next start simply re-locks, while a
live one keeps the lock and the second start is refused with its pid.
"""

from __future__ import annotations

import errno
import fcntl
import os


class AlreadyRunning(RuntimeError):
    pass


class Pidfile:
    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> "Pidfile":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise AlreadyRunning(
                    f"pyvswitch is already running on {os.path.dirname(self.path)}"
                    f" (pid {read_pid(self.path) or '?'}, pidfile {self.path})"
                ) from None
            raise
        self._fd = fd
        self.write(os.getpid())
        return self

    def write(self, pid: int) -> None:
        """Record pid (after --detach forks, the child rewrites its own)."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None
