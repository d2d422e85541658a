"""Start, find and stop the emulator process for a state directory.

One emulator per state directory: it holds an flock on `emulator.lock` for its whole life (and refuses to start
when another one holds it). That lock is the liveness test here: the kernel releases it when the emulator dies,
also on SIGKILL, so a stale `emulator.json` (pid, addresses) never makes us signal an unrelated process that
reused its pid. `up` is idempotent and serialised by a second lock, so two commands that both find the local
cloud down start it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deployctl.context import state_dir_hint
from deployctl.errors import LocalCloudError, StateDirError
from deployctl.osutil import lock_holder

ENDPOINT_FILE = "emulator.json"
LOCK_FILE = "emulator.lock"  # the emulator's own (deployctl.emulator.server.LOCK_FILE)
STALE = (ENDPOINT_FILE, "emulator.pid")  # emulator.pid: written by older versions
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Endpoint:
    grpc: str
    rest: str
    pid: int
    started: float = 0.0  # when this emulator started serving: tells one run of it from the next
    # Instances whose cluster the emulator had to make anew (data lost): ({"instance", "at", "reason"}, ...)
    recreated: tuple = ()


@contextlib.contextmanager
def exclusive(state_dir: Path, name: str = "lifecycle.lock", timeout: float = 120.0) -> Iterator[None]:
    """One `up`/`down` at a time per state directory (an flock, released even on SIGKILL)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        f = open(state_dir / name, "a+")  # noqa: SIM115 - closed by the with below
    except OSError as e:  # read-only, not ours, or under a directory that cannot be made: not a bug of ours
        raise StateDirError(f"the state directory {state_dir} cannot be used: {e.strerror or e}",
                            hint=state_dir_hint()) from None
    with f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LocalCloudError(f"another deployctl holds {state_dir / name}",
                                          hint="wait for it to finish, then retry") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _port_open(address: str, timeout: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def holder(state_dir: Path) -> int | None:
    """The pid of the emulator holding this state directory (0 if it cannot be told), or None."""
    return lock_holder(state_dir / LOCK_FILE)


def _read_endpoint(state_dir: Path) -> Endpoint | None:
    try:
        info = json.loads((state_dir / ENDPOINT_FILE).read_text())
        return Endpoint(info["grpc"], info["rest"], int(info["pid"]), float(info.get("started") or 0),
                        tuple(info.get("recreated_instances") or ()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale(state_dir: Path) -> None:
    """Delete what a dead emulator left (its endpoint file), re-checking that nobody holds the lock."""
    if holder(state_dir) is None:
        for name in STALE:
            (state_dir / name).unlink(missing_ok=True)


def find(state_dir: Path) -> Endpoint | None:
    """The running emulator for this state directory, or None."""
    endpoint = _read_endpoint(state_dir)
    pid = holder(state_dir)
    if pid is None:  # nobody serves this state dir: whatever emulator.json says is stale
        if endpoint is not None:
            _remove_stale(state_dir)
        return None
    if endpoint is None or (pid and endpoint.pid != pid):
        return None  # starting (it writes emulator.json once it serves)
    return endpoint if _port_open(endpoint.grpc) else None


def start(state_dir: Path, project_root: Path) -> Endpoint:
    """Start the emulator in the background (its own session, so Ctrl-C in this terminal leaves it be)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    other = holder(state_dir)
    if other is not None:  # one is starting (`deployctl emulator serve`?): use it once it serves
        return _wait_for(state_dir, other, lambda: None, logs)
    _remove_stale(state_dir)
    env = dict(os.environ, GRPC_VERBOSITY="ERROR", PYTHONUNBUFFERED="1")
    with open(logs / "emulator.log", "ab") as log:
        os.fchmod(log.fileno(), 0o600)  # a service may print a secret; the emulator's own log is redacted
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployctl.emulator", "--state-dir", str(state_dir), "--port", "0",
             "--project-root", str(project_root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
            start_new_session=True, cwd=str(project_root))

    def exited() -> str | None:
        if proc.poll() is None:
            return None
        return f"the local cloud exited while starting (code {proc.returncode}):\n{_tail(logs / 'emulator.log')}"

    try:
        return _wait_for(state_dir, proc.pid, exited, logs)
    except LocalCloudError:
        if proc.poll() is None:
            proc.kill()
        raise


def _wait_for(state_dir: Path, pid: int, exited, logs: Path) -> Endpoint:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        endpoint = find(state_dir)
        if endpoint and (not pid or endpoint.pid == pid):
            return endpoint
        problem = exited()
        if problem:
            raise LocalCloudError(problem, hint=f"see {logs / 'emulator.log'}")
        time.sleep(0.05)
    raise LocalCloudError(f"the local cloud (pid {pid or 'unknown'}) did not start serving within "
                          f"{START_TIMEOUT:.0f} s", hint=f"see {logs / 'emulator.log'}; `deployctl local down` "
                                                          "stops it")


def stop(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the emulator (it stops its processes and clusters). True if one was running."""
    pid = holder(state_dir)
    if pid is None:
        _remove_stale(state_dir)
        return False
    if not pid:
        raise LocalCloudError(f"{state_dir / LOCK_FILE} is locked, but by which process cannot be told",
                              hint="find the deployctl emulator process for this state dir and stop it")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _released(state_dir, timeout):
        if holder(state_dir) == pid:  # still the emulator: it holds the lock
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _released(state_dir, 5.0)
    _remove_stale(state_dir)
    return True


def _released(state_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while holder(state_dir) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_running(ctx, *, compare_config: bool = False) -> Endpoint:
    """The local cloud for ctx's environment, started and provisioned if it is not (any local command).

    Provisioning is checked again when the emulator restarted since the last check (it may have had to
    re-create a cluster whose data directory was gone), and, with compare_config (`local up`) or when this
    command starts the emulator, when the config changed since the last provisioning."""
    from deployctl.localcloud.provision import is_current, provision_if_needed

    state_dir = ctx.state_dir
    endpoint = find(state_dir)
    if endpoint and is_current(ctx.config, state_dir, endpoint, compare_config=compare_config):
        return endpoint
    with exclusive(state_dir):
        endpoint = find(state_dir)
        if endpoint is None:
            ctx.progress("local cloud", f"starting (state in {state_dir})")
            endpoint = start(state_dir, ctx.project_root)
            compare_config = True
        provision_if_needed(ctx.config, state_dir, endpoint, progress=ctx.progress, compare_config=compare_config)
    return endpoint


def _emulator_tool(state_dir: Path, project_root: Path, flag: str) -> subprocess.CompletedProcess:
    """Run the emulator's offline maintenance (--cleanup / --purge / --leftovers) for this state directory."""
    result = subprocess.run([sys.executable, "-m", "deployctl.emulator", "--state-dir", str(state_dir), flag],
                            check=False, capture_output=True, text=True, timeout=120, cwd=str(project_root))
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise LocalCloudError(f"the local cloud's {flag} step failed: {detail}",
                              hint=f"run `{sys.executable} -m deployctl.emulator --state-dir {state_dir} {flag}` "
                                   "to see why")
    return result


def leftovers(state_dir: Path, project_root: Path) -> list[dict]:
    """What a crashed emulator left running (its processes, its PostgreSQL clusters); [] when nothing."""
    if not (state_dir / "state").is_dir() or holder(state_dir) is not None:
        return []
    out = json.loads(_emulator_tool(state_dir, project_root, "--leftovers").stdout or "{}")
    return [item for items in out.values() for item in items]


def down(state_dir: Path, project_root: Path, purge: bool = False) -> dict:
    """Stop the local cloud and everything it started; with purge, delete its state and clusters too.

    After a SIGKILL of the emulator its children (service processes, PostgreSQL) are orphans recorded in its
    state: the emulator's --cleanup ends them.
    """
    with exclusive(state_dir):
        was_running = stop(state_dir)
        ended: list[dict] = []
        if (state_dir / "state").is_dir():
            out = _emulator_tool(state_dir, project_root, "--cleanup").stdout.strip().splitlines()
            with contextlib.suppress(ValueError, IndexError):
                ended = [item for items in json.loads(out[0]).values() for item in items]
        if purge:
            _emulator_tool(state_dir, project_root, "--purge")
            for name in ("state", "logs", "sqladmin", "ca", *STALE, "provisioned.json", "terraform.tfstate",
                         "faults.json"):
                target = state_dir / name
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
    # What a killed emulator had left running (none after a clean stop: it ends its own)
    return {"was_running": was_running, "purged": purge, "ended": ended}
