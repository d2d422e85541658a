"""Local processes started by the emulator (service revisions, job tasks), tracked on disk.

Every child runs in its own process group and is recorded in the Store ("processes": pid, process group and
the kernel's start time for that pid), so that after a SIGKILL of the emulator a new emulator, or
`deployctl local down`, can find and end exactly those processes and never an unrelated one that reused a pid.

The record is written just after the process starts, and a child may leave descendants behind that escaped
its process group (a daemon in a session of its own, the workers of a master process). So every child is also
started with DEPLOYCTL_LOCAL_CLOUD=<state dir> and DEPLOYCTL_LOCAL_CLOUD_CHILD=<an id of this start> in its
environment, which its descendants inherit. When a child exits, whatever carries its id goes with it (as when a
container stops); when the emulator stops, and in the sweep after a crash, whatever carries the state dir's
mark goes, recorded or not.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from deployctl.emulator.state import Store
from deployctl.osutil import cmdline, environ_has, processes

log = logging.getLogger("deployctl.emulator")

COLLECTION = "processes"
MARK = "DEPLOYCTL_LOCAL_CLOUD"
CHILD_MARK = "DEPLOYCTL_LOCAL_CLOUD_CHILD"
STOP_GRACE = 3.0
TAIL_LINES = 20

LineSink = Callable[[str, str], None]  # (stream "stdout"|"stderr", line)
ExitSink = Callable[[int], None]


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/pid/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat.rsplit(")", 1)[-1].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def is_recorded_alive(record: dict) -> bool:
    ticks = start_ticks(int(record["pid"]))
    return ticks is not None and ticks == record.get("start_ticks")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(pgid: int, grace: float = STOP_GRACE, waiter: Callable[[], bool] | None = None) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after `grace` seconds."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if (waiter() if waiter else not _group_alive(pgid)):
            break
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def mark(owner: str) -> str:
    return f"{MARK}={owner}"


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        out.add(pid)
    return out


def marked(owner: str, child_id: str | None = None) -> list[int]:
    """Live processes started (directly or not) by the emulator of `owner` (by its child `child_id`), except
    this one and its ancestors (a `deployctl local down` run from inside a task must not end itself)."""
    skip = _ancestors()
    return [pid for pid in processes() if pid not in skip and environ_has(pid, mark(owner))
            and (child_id is None or environ_has(pid, f"{CHILD_MARK}={child_id}"))]


def end_marked(owner: str, child_id: str | None = None, grace: float = STOP_GRACE) -> list[int]:
    """SIGTERM what marked() finds, SIGKILL what is left after `grace` seconds; returns the pids."""
    found = marked(owner, child_id)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    left = found
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if environ_has(p, mark(owner))]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return found


def end_recorded(store: Store, owner: str | None = None, grace: float = STOP_GRACE) -> list[dict]:
    """End every recorded process that is still the one we started, then (with `owner`, the state dir) every
    other process carrying its mark. Used after a crash and by `local down`."""
    ended = []
    records = store.list(COLLECTION)
    threads = []
    for rec in records:
        if is_recorded_alive(rec):
            ended.append(rec)
            t = threading.Thread(target=end_group, args=(int(rec["pgid"]), grace), daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join(grace + 2)
    if owner:
        known = {int(r["pid"]) for r in ended}
        names = {pid: (cmdline(pid) or ["?"])[0] for pid in marked(owner) if pid not in known}
        ended += [{"key": f"stray/{pid}", "kind": "stray", "pid": pid, "argv0": names.get(pid, "?")}
                  for pid in end_marked(owner, grace=grace) if pid in names]
    for rec in records:
        store.delete(COLLECTION, rec["key"])
    return ended


def left_running(store: Store, owner: str) -> list[dict]:
    """What end_recorded would end, without ending it (for `deployctl local ps` after a crash)."""
    found = [{k: rec.get(k) for k in ("kind", "pid", "service", "revision", "job", "execution") if rec.get(k)}
             for rec in store.list(COLLECTION) if is_recorded_alive(rec)]
    known = {r["pid"] for r in found}
    found += [{"kind": "stray", "pid": pid, "argv0": (cmdline(pid) or ["?"])[0]}
              for pid in marked(owner) if pid not in known]
    return found


@dataclass
class Child:
    key: str
    kind: str  # "revision" | "task"
    popen: subprocess.Popen
    info: dict
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    stopping: bool = False
    exit_code: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    mark_id: str = ""  # CHILD_MARK's value in its environment (and its descendants')

    @property
    def pid(self) -> int:
        return self.popen.pid


class ProcessManager:
    def __init__(self, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner  # the state dir: the mark every child carries
        self._children: dict[str, Child] = {}
        self._lock = threading.Lock()

    def spawn(self, key: str, kind: str, argv: list[str], *, env: dict[str, str], cwd: str,
              on_line: LineSink, on_exit: ExitSink | None = None, info: dict | None = None) -> Child:
        """Start argv in a new session (own process group); stream its output lines to on_line."""
        mark_id = uuid.uuid4().hex
        env = {**env, MARK: self.owner, CHILD_MARK: mark_id}
        popen = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
        child = Child(key=key, kind=kind, popen=popen, info=dict(info or {}), mark_id=mark_id)
        self.store.put(COLLECTION, key, {
            "key": key, "kind": kind, "pid": popen.pid, "pgid": popen.pid,
            "start_ticks": start_ticks(popen.pid), "started": time.time(), "argv0": argv[0],
            **child.info,
        })
        with self._lock:
            self._children[key] = child
        readers = [threading.Thread(target=self._pump, args=(child, popen.stdout, "stdout", on_line),
                                    name=f"out-{key}", daemon=True),
                   threading.Thread(target=self._pump, args=(child, popen.stderr, "stderr", on_line),
                                    name=f"err-{key}", daemon=True)]
        for r in readers:
            r.start()
        threading.Thread(target=self._reap, args=(child, readers, on_exit), name=f"reap-{key}",
                         daemon=True).start()
        return child

    @staticmethod
    def _pump(child: Child, pipe, stream: str, on_line: LineSink) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                child.tail.append(line)
                try:
                    on_line(stream, line)
                except Exception:
                    log.exception("emulator: storing a log line failed")

    def _reap(self, child: Child, readers: list[threading.Thread], on_exit: ExitSink | None) -> None:
        code = child.popen.wait()
        for r in readers:
            # A grandchild may keep the pipes open; do not wait for it forever.
            r.join(2.0)
        child.exit_code = code
        # Anything left in the group (a grandchild), or that escaped it, goes with its parent, as when a
        # container stops.
        _signal_group(child.popen.pid, signal.SIGKILL)
        for pid in marked(self.owner, child.mark_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with self._lock:
            if self._children.get(child.key) is child:
                del self._children[child.key]
                self.store.delete(COLLECTION, child.key)
        child.exited.set()
        if on_exit:
            try:
                on_exit(code)
            except Exception:
                log.exception("emulator: exit handler for %s failed", child.key)

    def get(self, key: str) -> Child | None:
        with self._lock:
            return self._children.get(key)

    def terminate(self, key: str, grace: float = STOP_GRACE) -> None:
        child = self.get(key)
        if child is not None:
            self.terminate_child(child, grace)

    @staticmethod
    def terminate_child(child: Child, grace: float = STOP_GRACE) -> None:
        """End this very child (not whichever child is now registered under its key)."""
        child.stopping = True
        end_group(child.popen.pid, grace, waiter=lambda: child.popen.poll() is not None)
        child.exited.wait(grace + 3)

    def stop_all(self, grace: float = STOP_GRACE) -> None:
        with self._lock:
            keys = list(self._children)
        threads = [threading.Thread(target=self.terminate, args=(k, grace), daemon=True) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join(grace + 5)
        end_marked(self.owner, grace=grace)  # whatever escaped its child's group: the local cloud stops

    def list(self) -> list[dict]:
        """Live children as plain dicts, for `deployctl local ps`."""
        with self._lock:
            children = list(self._children.values())
        return [{"key": c.key, "kind": c.kind, "pid": c.pid, **c.info} for c in children]
