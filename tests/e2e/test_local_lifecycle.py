"""`deployctl local up|ps|down` as a user runs them: idempotent, and no orphan process ever, also after the
emulator was killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.e2e.conftest import Cli


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def postmasters(state_dir: Path) -> set[int]:
    """PostgreSQL daemonises (pg_ctl), so its postmaster is nobody's child: find it by its data directory."""
    from deployctl.emulator.postgres import cluster_base

    pids = set()
    for pidfile in cluster_base(str(state_dir.resolve())).glob("*/postmaster.pid"):
        pids.add(int(pidfile.read_text().split("\n", 1)[0]))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_ps_kill9_down_leaves_no_orphans(tmp_path):
    cli = Cli(tmp_path / "state")
    try:
        _up_ps_kill9_down(cli)
    finally:  # a failed assertion must not leave a local cloud running after the test
        cli("--yes", "local", "down", "--purge")


def _up_ps_kill9_down(cli: Cli) -> None:
    up = cli("--json", "local", "up")
    assert up.code == 0, up.output
    first = json.loads(up.stdout)["data"]
    again = json.loads(cli("--json", "local", "up").stdout)["data"]
    assert again["pid"] == first["pid"], "a second `local up` must reuse the running local cloud"

    deploy = cli("deploy", "api-key-service", "--no-status")
    assert deploy.code == 0, deploy.output
    ps = json.loads(cli("--json", "local", "ps").stdout)["data"]
    assert ps["running"] and [s["name"] for s in ps["services"]] == ["api-key-service"]
    assert ps["instances"][0]["state"] == "RUNNABLE"

    started = descendants(first["pid"]) | postmasters(cli.state_dir)
    assert len(started) >= 2, "expected PostgreSQL and the service's process"
    os.kill(first["pid"], signal.SIGKILL)
    time.sleep(0.5)
    assert any(alive(p) for p in started), "the children outlive a SIGKILLed emulator (orphans)"

    down = cli("local", "down")
    assert down.code == 0, down.output
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if alive(p)], "`local down` must end what the killed emulator started"

    # The state survived: up again finds the service, then purge removes everything.
    up2 = cli("--json", "local", "up")
    assert up2.code == 0, up2.output
    ps2 = json.loads(cli("--json", "local", "ps").stdout)["data"]
    assert [s["name"] for s in ps2["services"]] == ["api-key-service"]
    pid2 = json.loads(up2.stdout)["data"]["pid"]
    children2 = descendants(pid2) | postmasters(cli.state_dir)
    assert children2
    purge = cli("--yes", "local", "down", "--purge")
    assert purge.code == 0, purge.output
    assert not alive(pid2) and not [p for p in children2 if alive(p)]
    assert not (cli.state_dir / "state").exists()
    gone = cli("--json", "local", "ps")
    assert json.loads(gone.stdout)["data"]["running"] is False
