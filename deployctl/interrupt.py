"""Ctrl-C for commands that wait on threads and long-running operations.

SIGINT raises KeyboardInterrupt in the main thread only. A command whose work runs in worker threads (deploy)
catches it there, calls `request()`, and its workers stop at their next `sleep()` (every wait loop of theirs
sleeps through here) by raising `Cancelled`. Steps with a side effect that outlives the process (a job
execution that was cancelled, a local cloud left running) say so with `record()`; the CLI prints those notes
and the command's done / not-done lists with exit 130.

Cancelled subclasses KeyboardInterrupt, so the `except Exception` guards that turn one service's failure into
its outcome never swallow it. Stdlib only: a migration job's process imports this too.
"""

from __future__ import annotations

import threading
import time

_requested = threading.Event()
_notes: list[str] = []
_lock = threading.Lock()


class Cancelled(KeyboardInterrupt):
    """The command was interrupted; `done` and `not_done` say what it had and had not finished."""

    def __init__(self, done: list[str] | None = None, not_done: list[str] | None = None) -> None:
        super().__init__("interrupted")
        self.done = list(done or [])
        self.not_done = list(not_done or [])


def request() -> None:
    """Ask every worker to stop at its next wait."""
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    if _requested.is_set():
        raise Cancelled()


def sleep(seconds: float) -> None:
    """time.sleep that ends early, raising Cancelled, once the command is interrupted."""
    if seconds <= 0:
        check()
        return
    if threading.current_thread() is threading.main_thread():
        time.sleep(seconds)  # SIGINT interrupts it directly
        check()
    elif _requested.wait(seconds):
        raise Cancelled()


def record(note: str) -> None:
    """Something an interrupted step left behind or undid, shown with the interruption."""
    with _lock:
        _notes.append(note)


def notes() -> list[str]:
    with _lock:
        return list(_notes)


def describe(exc: BaseException) -> str:
    """One message: what was done, what was not, and the notes recorded on the way."""
    parts = ["interrupted"]
    done = getattr(exc, "done", [])
    not_done = getattr(exc, "not_done", [])
    if done:
        parts.append("done: " + "; ".join(done))
    if not_done:
        parts.append("not done: " + "; ".join(not_done))
    parts += notes()
    return "\n  ".join(parts)


def reset() -> None:
    """For tests running commands in-process."""
    _requested.clear()
    with _lock:
        _notes.clear()
