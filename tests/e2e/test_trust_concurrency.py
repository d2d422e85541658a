"""Concurrency: two deploys of one service never lose an update silently; two `migrate` runs (job and local
runner) are serialised by the advisory lock; two `local up` start one emulator; concurrent writers never corrupt
a state file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.conftest import ROOT, Cli
from tests.e2e.test_deploy_cli import GATE, cli_for, service
from tests.e2e.test_migrate_cli import db, status_of

HOLD_UPDATE_MS = 5000  # UpdateService held this long: both runs plan before either update lands


def test_two_concurrent_deploys_of_one_service(local_cloud, tmp_path):
    """Both runs plan against the same etag before either update lands (the emulator holds UpdateService
    until both have sent theirs), so the race always happens: exactly one wins and its config serves, the other
    stops with a conflict. Without the etag the second update would silently replace the first."""
    name = "e2ec-race"
    base = cli_for(local_cloud, tmp_path / "base", service(name, env='RUN = "base"'))
    assert (first := base("deploy", name, "--no-status", *GATE)).code == 0, first.output
    clis = {k: cli_for(local_cloud, tmp_path / k, service(name, env=f'RUN = "{k}"')) for k in ("a", "b")}
    faults = local_cloud.state_dir / "faults.json"
    faults.write_text(json.dumps({"latency_ms": {"UpdateService": HOLD_UPDATE_MS}}))
    logs = {k: tmp_path / f"{k}.err" for k in clis}
    procs = {}
    try:
        for k, cli in clis.items():  # two processes started together, as two engineers (or CI jobs) would
            procs[k] = subprocess.Popen([sys.executable, "-m", "deployctl", "deploy", name, "--no-status", *GATE],
                                        env=cli.env, cwd=str(ROOT), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=logs[k].open("w"))
        deadline = time.monotonic() + 60
        while not all("creating revision" in log.read_text() for log in logs.values()):  # both have planned
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), \
                {k: log.read_text() for k, log in logs.items()}
            time.sleep(0.05)
        faults.unlink()  # the held calls keep their delay; the winner's traffic shift is not slowed
        codes = {k: p.wait(timeout=120) for k, p in procs.items()}
    finally:
        faults.unlink(missing_ok=True)
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = {k: log.read_text() for k, log in logs.items()}
    assert sorted(codes.values()) == [0, 1], (codes, outputs)
    [winner] = [k for k, code in codes.items() if code == 0]
    [loser] = [k for k, code in codes.items() if code == 1]
    assert "conflict" in outputs[loser].lower() and "another deploy changed it" in outputs[loser], outputs[loser]
    for out in outputs.values():
        assert "Traceback" not in out and "unexpected error" not in out, out
    # What serves is the winner's config: never a silent mix or a lost update.
    env = _serving_env(local_cloud, name)
    assert env["RUN"] == winner, (env, outputs)


def test_two_migrate_runs_are_serialised_by_the_advisory_lock(local_cloud, tmp_path):
    """A job run and a local run of the same service at once, both made to wait on the service's advisory lock:
    each revision is applied exactly once, by one of them (test_migrate_cli runs five job runs at once)."""
    cli, svc = local_cloud, "fiat-gateway"
    assert cli("--yes", "migrate", svc, "--to", "base").code == 0
    pending = status_of(cli, svc)["pending"]
    assert pending, "nothing to migrate"
    from deployctl.migrate_env import advisory_lock_key

    conn = db(cli, svc)
    assert conn.run("SELECT pg_try_advisory_lock(:k)", k=advisory_lock_key(svc)) == [[True]]
    logs = {runner: tmp_path / f"{runner}.err" for runner in ("job", "local")}
    procs = {runner: subprocess.Popen([sys.executable, "-m", "deployctl", "migrate", svc, "--runner", runner],
                                      env=cli.env, cwd=str(ROOT), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=log.open("w"))
             for runner, log in logs.items()}
    try:
        deadline = time.monotonic() + 90
        while not all("waiting up to" in log.read_text() for log in logs.values()):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), \
                {k: log.read_text() for k, log in logs.items()}
            time.sleep(0.1)
        conn.close()  # release the lock: one run takes it, migrates, releases; the other finds nothing to do
        codes = {runner: p.wait(timeout=120) for runner, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = {k: log.read_text() for k, log in logs.items()}
    assert codes == {"job": 0, "local": 0}, outputs
    for rev in pending:
        assert sum(out.count(f"-> {rev},") for out in outputs.values()) == 1, (rev, outputs)
    assert status_of(cli, svc)["pending"] == []


def _serving_env(local_cloud: Cli, name: str) -> dict[str, str]:
    """The env of the revision that takes 100% of traffic, read through the real Cloud Run client."""
    code = f"""
import json, os
from deployctl.cloud.clients import Clients
from deployctl.cloud.run import RunServices
c = Clients(emulator_host=os.environ["HOST"])
run = RunServices(c, "deployctl-local", "us-central1")
svc = run.get({name!r})
[rev] = [t.revision for t in svc.traffic if t.percent == 100]
print(json.dumps(run.revision({name!r}, rev).env))
"""
    info = json.loads((local_cloud.state_dir / "emulator.json").read_text())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                         env={**os.environ, "HOST": info["grpc"]})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_two_local_up_at_once_start_one_emulator(tmp_path):
    state = tmp_path / "fresh"
    cli = Cli(state)
    try:
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: cli("local", "up", timeout=240), range(2)))
        for r in runs:
            assert r.code == 0, r.output
        endpoint = json.loads((state / "emulator.json").read_text())
        emulators = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_emulator_for(p, state)]
        assert len(emulators) == 1, emulators
        assert int(emulators[0].name) == endpoint["pid"]
    finally:
        down = cli("--yes", "local", "down", "--purge", timeout=120)
        assert down.code == 0, down.output


def _is_emulator_for(proc: Path, state: Path) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        environ = (proc / "environ").read_bytes()
    except OSError:
        return False
    text = b" ".join(cmdline)
    return b"deployctl.emulator" in text and (str(state).encode() in text or str(state).encode() in environ)


def test_concurrent_writers_never_corrupt_a_state_file(tmp_path):
    """The emulator's state store under eight threads writing at once, and four processes replacing one state
    file at once (osutil.atomic_write_text, as every state file deployctl writes), with a reader parsing the file
    all along: every read parses, no thread's write is lost, and no temporary file is left behind."""
    from deployctl.emulator.state import Store

    store = Store(tmp_path / "store")
    path = tmp_path / "store" / "things.json"
    stop = threading.Event()
    bad_reads: list[str] = []

    def read_all_along() -> None:
        while not stop.is_set():
            followed = path  # read once: the test points `path` at the shared file midway
            try:
                if followed.exists():
                    json.loads(followed.read_text("utf-8"))
            except (ValueError, FileNotFoundError) as e:  # FileNotFoundError: the name was ever missing
                bad_reads.append(repr(e))

    def write(t: int) -> None:
        for i in range(40):
            store.put("things", f"t{t}-{i}", {"writer": t, "i": i, "pad": "x" * 2000})

    reader = threading.Thread(target=read_all_along)
    reader.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
        shared = tmp_path / "shared.json"
        code = ("import json, sys; from pathlib import Path; from deployctl.osutil import atomic_write_text\n"
                "n = int(sys.argv[1])\n"
                "for i in range(60):\n"
                "    atomic_write_text(Path(sys.argv[2]), json.dumps({'writer': n, 'i': i, 'pad': 'y' * 50000}))\n")
        path = shared  # the reader follows the shared file now
        writers = [subprocess.Popen([sys.executable, "-c", code, str(n), str(shared)], cwd=str(ROOT))
                   for n in range(4)]
        assert [w.wait(timeout=120) for w in writers] == [0] * 4
    finally:
        stop.set()
        reader.join()
    assert bad_reads == []
    assert len(Store(tmp_path / "store").list("things")) == 8 * 40  # a fresh reader sees every write
    last = json.loads(shared.read_text())
    assert last["i"] == 59 and last["pad"] == "y" * 50000  # one writer's whole document
    assert sorted(p.name for p in tmp_path.rglob(".*")) == [], "temporary files left behind"
