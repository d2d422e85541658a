"""Start, find and stop the emulator process for a state directory.

One emulator per state directory. `up` is idempotent and serialised by a file lock, so two commands that both
find the local cloud down start it once. The emulator writes `emulator.json` (pid, addresses) when it serves;
we trust it only if that pid is alive and the gRPC port answers.
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

from deployctl.errors import LocalCloudError
from deployctl.osutil import atomic_write_text, pid_alive

ENDPOINT_FILE = "emulator.json"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Endpoint:
    grpc: str
    rest: str
    pid: int


@contextlib.contextmanager
def exclusive(state_dir: Path, name: str = "lifecycle.lock", timeout: float = 120.0) -> Iterator[None]:
    """One `up`/`down` at a time per state directory (an flock, released even on SIGKILL)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / name, "a+") as f:
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


def find(state_dir: Path) -> Endpoint | None:
    """The running emulator for this state directory, or None."""
    try:
        info = json.loads((state_dir / ENDPOINT_FILE).read_text())
        endpoint = Endpoint(info["grpc"], info["rest"], int(info["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid_alive(endpoint.pid) and _port_open(endpoint.grpc):
        return endpoint
    return None


def start(state_dir: Path, project_root: Path) -> Endpoint:
    """Start the emulator in the background (its own session, so Ctrl-C in this terminal leaves it be)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    stale = state_dir / ENDPOINT_FILE
    stale.unlink(missing_ok=True)
    env = dict(os.environ, GRPC_VERBOSITY="ERROR", PYTHONUNBUFFERED="1")
    with open(logs / "emulator.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployctl.emulator", "--state-dir", str(state_dir), "--port", "0",
             "--project-root", str(project_root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
            start_new_session=True, cwd=str(project_root))
    atomic_write_text(state_dir / "emulator.pid", str(proc.pid))  # `down` reads it: never half a pid
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        endpoint = find(state_dir)
        if endpoint and endpoint.pid == proc.pid:
            return endpoint
        if proc.poll() is not None:
            tail = _tail(logs / "emulator.log")
            raise LocalCloudError(f"the local cloud exited while starting (code {proc.returncode}):\n{tail}",
                                  hint=f"see {logs / 'emulator.log'}")
        time.sleep(0.05)
    proc.kill()
    raise LocalCloudError(f"the local cloud did not start within {START_TIMEOUT:.0f} s",
                          hint=f"see {logs / 'emulator.log'}")


def stop(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the emulator (it stops its processes and clusters). True if one was running."""
    pid = _recorded_pid(state_dir)
    if pid is None or not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def _recorded_pid(state_dir: Path) -> int | None:
    for source in (state_dir / ENDPOINT_FILE, state_dir / "emulator.pid"):
        try:
            text = source.read_text()
            return int(json.loads(text)["pid"]) if source.suffix == ".json" else int(text)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_running(ctx) -> Endpoint:
    """The local cloud for ctx's environment, started and provisioned if it is not (any local command)."""
    state_dir = ctx.state_dir
    endpoint = find(state_dir)
    if endpoint and (state_dir / "provisioned.json").exists():
        return endpoint
    with exclusive(state_dir):
        endpoint = find(state_dir)
        if endpoint is None:
            ctx.progress("local cloud", f"starting (state in {state_dir})")
            endpoint = start(state_dir, ctx.project_root)
        from deployctl.localcloud.provision import provision_if_needed

        provision_if_needed(ctx.config, state_dir, endpoint, progress=ctx.progress)
    return endpoint


def _emulator_tool(state_dir: Path, project_root: Path, flag: str) -> None:
    """Run the emulator's offline maintenance (--cleanup / --purge) for this state directory."""
    subprocess.run([sys.executable, "-m", "deployctl.emulator", "--state-dir", str(state_dir), flag],
                   check=False, capture_output=True, timeout=120, cwd=str(project_root))


def down(state_dir: Path, project_root: Path, purge: bool = False) -> dict:
    """Stop the local cloud and everything it started; with purge, delete its state and clusters too.

    After a SIGKILL of the emulator its children (service processes, PostgreSQL) are orphans recorded in its
    state: the emulator's --cleanup ends them.
    """
    with exclusive(state_dir):
        was_running = find(state_dir) is not None
        stop(state_dir)
        if (state_dir / "state").is_dir():
            _emulator_tool(state_dir, project_root, "--cleanup")
        if purge:
            _emulator_tool(state_dir, project_root, "--purge")
            for name in ("state", "logs", "sqladmin", "ca", ENDPOINT_FILE, "emulator.pid", "provisioned.json",
                         "terraform.tfstate", "faults.json"):
                target = state_dir / name
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
    return {"was_running": was_running, "purged": purge}
