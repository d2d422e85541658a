"""Small OS helpers shared by the local-cloud lifecycle and the emulator (which must not import each other)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def pid_alive(pid: int) -> bool:
    """Whether `pid` names a live process (a zombie is not alive; another user's process is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --- a lock held for a process's whole life ---------------------------------------------------------------
# An flock belongs to the open file: the kernel releases it when the holder exits, also on SIGKILL. So "the lock
# is held" is a liveness test that a stale pid file can never fake, and a reused pid can never pass.

class LockHeld(Exception):
    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is held by pid {pid or 'unknown'}")
        self.path = path
        self.pid = pid


def hold_lock(path: Path, wait: float = 0.0) -> int:
    """Take an exclusive flock on `path` and write our pid into it; returns the fd, to keep open for as long
    as the lock must be held (close it to release). Raises LockHeld naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            # lock_holder() probes with a brief shared lock: a short wait rides over such a probe.
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockHeld(path, lock_holder(path) or 0) from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder(path: Path) -> int | None:
    """The pid holding the flock on `path` (0 when it cannot be told), or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    # No such file (a path below a file has none either), or another user's state directory: no holder that we
    # could tell, and using the directory then fails with a clear state-dir error.
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _flock_owner(fd) or _pid_in(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _flock_owner(fd: int) -> int:
    """The owner of an exclusive flock on fd's file according to /proc/locks (Linux), else 0."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError):
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == ident:
                    return int(fields[4])
    return 0


def _pid_in(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


# --- finding processes ------------------------------------------------------------------------------------

def processes() -> Iterator[int]:
    """Every pid in /proc, except ours."""
    me = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != me:
                yield int(entry.name)


def environ_has(pid: int, entry: str) -> bool:
    """Whether process `pid` was started with `entry` ("NAME=value") in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry.encode() in f.read().split(b"\0")
    except OSError:
        return False


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []
