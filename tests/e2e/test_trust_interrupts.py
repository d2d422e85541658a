"""Ctrl-C (SIGINT to the CLI's process group, as a terminal sends it) during `local up`, `deploy` and `migrate`,
at more than one moment each: the command ends within 2 s with exit 130, says what was done and what was not,
leaves no process of its own behind and no migration lock held, and running it again finishes the job.

The moment is chosen from the command's own stderr progress; a migration is held at the moment we want by
holding its advisory lock from here (the run waits for it, and says so); a rollout by a revision that takes
its time to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deployctl.migrate_env import advisory_lock_key

from .conftest import ROOT, Cli
from .test_deploy_cli import GATE, cli_for, service
from .test_migrate_cli import FIAT_HEAD, db, status_of
from .test_trust_deadlines import SilentListener, dead_cli

STOP_WITHIN = 2.0  # what the commands promise, and about what they take here on a quiet machine (0.1-0.6 s)
# On a loaded 2-core CI machine a Python process's own exit (threads, the interpreter's teardown) can take a
# few seconds more; the bound stays far below what a command that waits for its work would take (38 s seen).
STOP_BOUND = STOP_WITHIN * 3


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    cli = Cli(tmp_path_factory.mktemp("interrupts"))
    yield cli
    cli("--yes", "local", "down", "--purge")


def session_processes(sid: int) -> list[str]:
    """Processes still in the CLI's session (it was started in a new one): its orphans, if any."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                out.append(f"{entry.name}: {cmdline}")
        except (OSError, IndexError, ValueError):
            continue
    return out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(cli: Cli, argv: list[str], marker: str | Callable[[], bool], tmp_path: Path, *,
                   wait: float = 90) -> tuple[int, str]:
    """Run the CLI, send SIGINT once `marker` shows on its stderr (or, a callable, once it returns True); returns
    (exit code, stderr)."""
    err_path = tmp_path / "stderr.txt"
    ready = marker if callable(marker) else lambda: marker in err_path.read_text()
    with err_path.open("w") as err:
        # As a terminal's foreground job: SIGINT at its default. A test run started in the background (`&`)
        # ignores SIGINT, and a child inherits that (Python then never raises KeyboardInterrupt).
        proc = subprocess.Popen([sys.executable, "-m", "deployctl", *argv], env=cli.env, cwd=str(ROOT),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + wait
        while not ready():
            assert proc.poll() is None, f"exited before {marker!r}: {err_path.read_text()}"
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err_path.read_text()
    print(f"{' '.join(argv)}: stopped {took:.2f}s after SIGINT")  # shown with -s (the figure in the notes)
    assert took < STOP_BOUND, f"took {took:.1f}s to stop (promised: {STOP_WITHIN:g}s): {stderr}"
    assert session_processes(proc.pid) == [], "orphans of the interrupted run"
    return code, stderr


def migration_sessions(conn, service: str) -> list:
    return conn.run("SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE :p",
                    p=f"deployctl-migrate {service}%")


def no_migration_session_within(conn, service: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while migration_sessions(conn, service):
        assert time.monotonic() < deadline, migration_sessions(conn, service)
        time.sleep(0.1)


def test_local_up_interrupted_then_finished(cloud, tmp_path):
    code, err = interrupt_when(cloud, ["local", "up"], "creating Cloud SQL instance", tmp_path)
    assert code == 130, err
    assert "interrupted" in err and "not done: provisioning" in err and "the emulator is running" in err
    assert "Traceback" not in err
    again = cloud("local", "up")
    assert again.code == 0, again.output
    assert cloud("secrets", "get", "fiat-gateway-db-password").code == 0


def test_local_up_interrupted_while_the_emulator_starts_then_finished(tmp_path):
    """Another moment of `local up`: before provisioning, while the emulator starts (a fresh state dir)."""
    fresh = Cli(tmp_path / "fresh-state")
    try:
        code, err = interrupt_when(fresh, ["local", "up"], "starting (state in", tmp_path)
        assert code == 130, err
        assert "interrupted" in err and "Traceback" not in err
        again = fresh("local", "up")
        assert again.code == 0, again.output
        assert fresh("secrets", "get", "api-key-pepper").code == 0
    finally:
        fresh("--yes", "local", "down", "--purge")


def test_deploy_interrupted_while_a_revision_starts_then_finished(cloud, tmp_path):
    """Another moment of `deploy`: the rollout, waiting for a revision that takes seconds to pass its startup
    probe (the wait polls the operation through the policy, and stops at Ctrl-C instead of finishing it)."""
    assert cloud("local", "up").code == 0
    name = "e2ei-slow"
    slow = cli_for(cloud, tmp_path / "slow", service(name, command='["python", "tests/fixtures/run_app.py"]',
                                                      env='APP_START_DELAY = "6"'))
    code, err = interrupt_when(slow, ["deploy", name, "--no-status", *GATE], "creating revision", tmp_path)
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err and "health gate" not in err, err
    again = slow("deploy", name, "--no-status", *GATE)
    assert again.code == 0, again.output


def test_deploy_interrupted_during_a_migration_then_finished(cloud, tmp_path):
    assert cloud("local", "up").code == 0
    conn = db(cloud, "fiat-gateway")
    try:
        assert conn.run("SELECT pg_try_advisory_lock(:k)", k=advisory_lock_key("fiat-gateway")) == [[True]]
        code, err = interrupt_when(cloud, ["deploy", "fiat-gateway", "--no-status"], "waiting up to", tmp_path)
        assert code == 130, err
        assert "fiat-gateway stopped before moving traffic; serving stays on no revision" in err, err
        assert "execution fiat-gateway-migrate-" in err and "cancelled" in err, err
        assert "run the same command again" in err and "Traceback" not in err
        no_migration_session_within(conn, "fiat-gateway")  # the cancelled job's session (and lock) ended
    finally:
        conn.close()
    again = cloud("--json", "deploy", "fiat-gateway", "--no-status")
    assert again.code == 0, again.output
    assert status_of(cloud, "fiat-gateway")["current"] == [FIAT_HEAD]


@pytest.mark.parametrize("runner", ["job", "local"])
def test_migrate_interrupted_while_waiting_for_the_lock_then_finished(cloud, tmp_path, runner):
    conn = db(cloud, "fiat-gateway")
    try:
        assert conn.run("SELECT pg_try_advisory_lock(:k)", k=advisory_lock_key("fiat-gateway")) == [[True]]
        code, err = interrupt_when(cloud, ["migrate", "fiat-gateway", "--runner", runner], "waiting up to",
                                   tmp_path)
        assert code == 130, err
        assert "not done: fiat-gateway: interrupted" in err, err
        if runner == "job":
            assert "cancelled" in err, err
        no_migration_session_within(conn, "fiat-gateway")
    finally:
        conn.close()
    again = cloud("migrate", "fiat-gateway", "--runner", runner)  # a run takes the lock even at head
    assert again.code == 0, again.output
    assert status_of(cloud, "fiat-gateway")["current"] == [FIAT_HEAD]


def test_interrupted_while_calls_get_no_answer(tmp_path):
    """Ctrl-C while worker threads are inside cloud calls that never answer (DEPLOYCTL_EMULATOR_HOST is a listener
    that accepts and never replies; each attempt would wait 10 s): deploy, migrate and status still end promptly
    with exit 130 and the report, instead of waiting for their threads (7-28 s seen)."""
    commands = [["deploy", "--all"], ["migrate", "fiat-gateway"], ["status"]]
    listeners = [SilentListener() for _ in commands]

    def one(argv: list[str], listener: SilentListener) -> tuple[int, str]:
        where = tmp_path / argv[0]
        where.mkdir()
        connected: list[float] = []

        def in_a_call() -> bool:  # the command is in its cloud calls for a second: its threads are busy there
            if listener.conns and not connected:
                connected.append(time.monotonic())
            return bool(connected) and time.monotonic() - connected[0] > 1.0

        return interrupt_when(dead_cli(where, listener.port), argv, in_a_call, where, wait=60)

    try:
        with ThreadPoolExecutor(len(commands)) as pool:
            runs = list(pool.map(one, commands, listeners))
    finally:
        for listener in listeners:
            listener.close()
    for argv, (code, err) in zip(commands, runs, strict=True):
        assert code == 130, (argv, err)
        assert "interrupted" in err and "run the same command again" in err, (argv, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (argv, err)
