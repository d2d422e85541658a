"""The emulator killed with SIGKILL (mid-rollout, mid-execution, mid-create of a Cloud SQL instance) and started
again: everything comes back as it was, interrupted work is finished or failed, and `deployctl local down`
leaves no process of that local cloud behind. Also: one emulator per state directory.

These tests run the emulator as a subprocess of their own, on a state directory of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from google.api_core import exceptions as gexc
from google.api_core import operation as gop
from google.cloud.run_v2 import types as t

from deployctl.cloud.clients import Clients
from deployctl.cloud.run import ContainerSpec, RunServices
from deployctl.cloud.run_jobs import RunJobs
from deployctl.cloud.secrets import SecretStore
from deployctl.cloud.sqladmin import SqlAdmin
from deployctl.emulator.postgres import cluster_base_path
from tests.conftest import ROOT
from tests.integration.test_emulator_run import APP, PROJECT, REGION, get, task_spec


def _start_emulator(state_dir):
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    proc = subprocess.Popen([sys.executable, "-m", "deployctl.emulator", "--state-dir", str(state_dir),
                             "--port", "0", "--project-root", str(ROOT)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT, text=True)
    line = proc.stdout.readline()
    assert line, "the emulator did not print its address"
    return proc, json.loads(line)


def _recorded(state_dir) -> dict[str, dict]:
    path = state_dir / "state" / "processes.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _recorded_pids(state_dir) -> set[int]:
    return {int(r["pid"]) for r in _recorded(state_dir).values()}


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its (killed) parent's reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _of_this_cloud(state_dir) -> list[str]:
    """Every live process that belongs to the local cloud of `state_dir`: carrying its mark, or naming the state
    dir or its clusters' directory on its command line (PostgreSQL, an initdb)."""
    mark = f"DEPLOYCTL_LOCAL_CLOUD={state_dir}".encode()
    needles = (str(state_dir), str(cluster_base_path(str(state_dir))))
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or not _alive(int(entry.name)):
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if mark in environ or any(n in argv for n in needles):
            found.append(f"{entry.name}: {argv}")
    return found


def _local_down_purge(state_dir) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYCTL_")}
    env.update(DEPLOYCTL_STATE_DIR=str(state_dir), CI="true", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "deployctl", "--yes", "local", "down", "--purge"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _wait(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _spec(v: str, **env: str) -> ContainerSpec:
    return ContainerSpec(image="a", command=["python"], args=APP, env={"V": v, **env}, startup_path="/health",
                         probe_period=1)


def _update(c: Clients, name: str, **env: str):
    svc = c.services.get_service(name=name, **c.policy.call())
    svc.template.containers[0].env[:] = [t.EnvVar(name=k, value=v) for k, v in env.items()]
    return c.services.update_service(service=svc, **c.policy.call())


def test_sigkill_mid_deploy_then_restart(tmp_path):
    state = (tmp_path / "emu").resolve()
    proc, address = _start_emulator(state)
    c = Clients(emulator_host=address["grpc"])
    try:
        run, jobs = RunServices(c, PROJECT, REGION), RunJobs(c, PROJECT, REGION)
        secrets = SecretStore(c, PROJECT)
        first = run.deploy("keep", _spec("one"))
        # "busy" has an idle revision (scaled to zero), then two rollouts in flight, the first one superseded.
        idle = run.deploy("busy", _spec("a"))
        run.deploy("busy", _spec("b"))
        serving = run.deploy("busy", _spec("c"))
        _wait(lambda: not [r for r in _recorded(state).values() if r.get("revision", "").endswith(idle.latest_ready)],
              what="the idle revision to be scaled to zero")
        superseded = _update(c, serving.name, V="d", APP_START_DELAY="1.5")
        newest = _update(c, serving.name, V="e", APP_START_DELAY="1.5")
        secrets.create_secret("kept-secret", exist_ok=True)
        secrets.add_version("kept-secret", "the value")
        jobs.apply("long", task_spec(0, "60"))
        running = c.jobs.run_job(name=jobs.job_name("long"), **c.policy.call())
        rollout = _update(c, first.name, V="two", APP_START_DELAY="1.5")
        # keep: old + new revision; busy: b (warm), c (serving), d, e; the task
        _wait(lambda: len(_recorded(state)) >= 7, what="every process to start")
        orphans = _recorded_pids(state)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        c.close()
        assert all(_alive(p) for p in orphans)  # nobody ended them yet

        proc, address = _start_emulator(state)
        c = Clients(emulator_host=address["grpc"])
        run, jobs, secrets = RunServices(c, PROJECT, REGION), RunJobs(c, PROJECT, REGION), SecretStore(c, PROJECT)
        assert not [p for p in orphans if _alive(p)]
        # The interrupted rollout's operation, polled by name on the new emulator, completes.
        from google.cloud.run_v2.types import Service

        ops = c.services._transport.operations_client
        op = gop.from_gapic(rollout.operation, ops, Service, metadata_type=Service)
        after = c.policy.wait(op, deadline=30)
        assert after.uri == first.uri and after.generation == 2
        assert after.latest_ready_revision == after.latest_created_revision
        assert get(first.uri + "/env/V") == (200, "two")
        assert [r.id for r in run.revisions("keep")][1] == first.latest_ready
        ex = jobs.execution(running.metadata.name)
        assert ex.done and not ex.succeeded and "emulator restarted" in ex.message
        assert jobs.get("long").execution_count == 1 and [e.name for e in jobs.executions("long")] == [ex.name]
        assert secrets.access("kept-secret", "latest").text == "the value"

        # The superseded rollout's operation ends too (nothing follows it any more); the newest one completes.
        stale = gop.from_gapic(superseded.operation, ops, Service, metadata_type=Service)
        try:
            c.policy.wait(stale, deadline=10)
            raise AssertionError("a superseded rollout must not report success")
        except gexc.Aborted as e:
            assert "Superseded" in e.message
        busy = c.policy.wait(gop.from_gapic(newest.operation, ops, Service, metadata_type=Service), deadline=30)
        assert get(busy.uri + "/env/V") == (200, "e")
        # After the restart only what is needed runs: the idle revision stays scaled to zero.
        assert not [r for r in _recorded(state).values() if r.get("revision", "").endswith(idle.latest_ready)]
        children = _recorded_pids(state)
        assert children
    finally:
        c.close()
        down = _local_down_purge(state)  # also when an assertion failed: leave nothing running
        proc.wait(20)
    assert down.returncode == 0, down.stderr
    assert not [p for p in children if _alive(p)]
    assert _of_this_cloud(state) == []
    assert not cluster_base_path(str(state)).exists()  # nothing left under /var/tmp/deployctl-pg-*


def test_sigkill_while_creating_a_sql_instance(tmp_path):
    state = (tmp_path / "emu").resolve()
    proc, address = _start_emulator(state)
    c = Clients(emulator_host=address["grpc"], sqladmin_endpoint=address["rest"])
    try:
        creating = threading.Thread(target=lambda: _ignore(lambda: SqlAdmin(c, PROJECT).insert_instance(
            "crashy", REGION)), daemon=True)
        creating.start()
        path = state / "state" / "sql_instances.json"
        _wait(lambda: path.exists() and "PENDING_CREATE" in path.read_text(), what="the create to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        c.close()  # the insert in flight ends with the channel (its client would retry for a while)
        creating.join(10)

        proc, address = _start_emulator(state)
        c = Clients(emulator_host=address["grpc"], sqladmin_endpoint=address["rest"])
        admin = SqlAdmin(c, PROJECT)
        inst = admin.get_instance("crashy")  # the create was finished on restart, not left stuck
        assert inst.state == "RUNNABLE" and inst.private_ip
        admin.insert_database("crashy", "works")
        assert "works" in admin.list_databases("crashy")
    finally:
        c.close()
        down = _local_down_purge(state)
        proc.wait(20)
    assert down.returncode == 0, down.stderr
    assert _of_this_cloud(state) == []  # neither the first initdb nor the cluster
    assert not cluster_base_path(str(state)).exists()


def _ignore(fn) -> None:
    try:
        fn()
    except Exception:  # the emulator is killed under it
        pass


def test_a_second_emulator_on_the_same_state_dir_refuses_to_start(emulator, clients):
    run = RunServices(clients, PROJECT, REGION)
    svc = run.deploy("only-one", _spec("x"))
    before = sorted(p["pid"] for p in emulator.component("run").list_processes() if p["pid"])
    endpoint = (emulator.state_dir / "emulator.json").read_text()
    second = subprocess.run([sys.executable, "-m", "deployctl.emulator", "--state-dir", str(emulator.state_dir),
                             "--port", "0"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    assert second.returncode == 2
    assert f"in use by another local cloud emulator (pid {os.getpid()})" in second.stderr
    assert "Traceback" not in second.stderr
    # The first one's processes, endpoint file and service are untouched.
    assert sorted(p["pid"] for p in emulator.component("run").list_processes() if p["pid"]) == before
    assert (emulator.state_dir / "emulator.json").read_text() == endpoint
    assert get(svc.uri + "/env/V") == (200, "x")
    run.delete("only-one")
