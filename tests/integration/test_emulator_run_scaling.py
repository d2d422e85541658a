"""Revisions as processes over time: scaled to zero when they lose traffic (one kept warm for a rollback), started
again, behind their startup probe, when traffic comes back; and no instance left behind or left waiting when
starting one goes wrong."""

from __future__ import annotations

import threading
import time

import pytest

from deployctl import errors
from deployctl.cloud.run import ContainerSpec, RunServices, TrafficTarget
from tests.integration.test_emulator_run import APP, PROJECT, REGION, get, uid


@pytest.fixture(scope="module")
def run(clients) -> RunServices:
    return RunServices(clients, PROJECT, REGION)


def spec(v: str, **env: str) -> ContainerSpec:
    return ContainerSpec(image="local/app", command=["python"], args=APP, env={"V": v, **env},
                         startup_path="/health", probe_period=1)


def running(emulator, service_name: str) -> set[str]:
    """Revision ids with a live process."""
    return {p["revision"].rsplit("/", 1)[1] for p in emulator.component("run").list_processes()
            if p.get("service") == service_name and p["kind"] == "revision"}


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_idle_revisions_scale_to_zero_and_come_back_behind_their_probe(run, emulator):
    sid = uid("zero")
    v1 = run.deploy(sid, spec("one"))
    v2 = run.deploy(sid, spec("two"))
    v3 = run.deploy(sid, spec("three"))
    ids = [v.latest_ready for v in (v1, v2, v3)]
    # v3 serves, v2 served just before it and stays warm (rollback is a routing change); v1 is scaled to zero.
    wait_until(lambda: running(emulator, v3.name) == {ids[2], ids[1]})
    assert all(r.ready for r in run.revisions(sid))  # scaled to zero is still Ready

    ok, failures = [], []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            status, body = get(v3.uri + "/env/V")
            (ok if status == 200 and body in ("one", "three") else failures).append(f"{status} {body}")
            time.sleep(0.01)

    loop = threading.Thread(target=hammer)
    loop.start()
    try:
        # v1 has no process: it starts, passes its startup probe, and only then takes the traffic.
        back = run.set_traffic(sid, [TrafficTarget(percent=100, revision=ids[0])])
        time.sleep(0.3)
    finally:
        stop.set()
        loop.join(10)
    assert failures == [] and len(ok) >= 10, (len(ok), failures[:5])
    assert back.serving == [ids[0]] and get(back.uri + "/env/V") == (200, "one")
    # Now v3 is the previously serving one (kept warm), and v2 goes.
    wait_until(lambda: running(emulator, v3.name) == {ids[0], ids[2]})
    started = time.monotonic()
    run.set_traffic(sid, [TrafficTarget(percent=100, revision=ids[2])])
    assert time.monotonic() - started < 5 and get(v3.uri + "/env/V") == (200, "three")
    run.delete(sid)


def test_a_revision_stopped_while_booting_leaves_no_process(run, emulator, clients):
    sid = uid("race")
    svc = run.deploy(sid, spec("x"))
    runtime = emulator.component("run").runtime
    rev = clients.revisions.get_revision(name=f"{svc.name}/revisions/{svc.latest_ready}", **clients.policy.call())
    runtime.stop(rev.name)
    for _ in range(3):
        runtime.ensure_running(rev, svc.name)
        runtime.stop(rev.name)  # before its boot thread has spawned the process
    time.sleep(1.5)
    assert running(emulator, svc.name) == set()
    run.delete(sid)


def test_an_unexpected_error_while_starting_fails_the_rollout_instead_of_hanging(run):
    sid = uid("boom")
    good = run.deploy(sid, spec("good"))
    started = time.monotonic()
    with pytest.raises(errors.CloudError) as info:  # a NUL byte in env: Popen raises ValueError
        run.deploy(sid, spec("bad", BROKEN="a\x00b"), deadline=60)
    assert info.value.code == "revision-failed" and time.monotonic() - started < 30
    after = run.revision(sid, run.get(sid).latest_created)
    assert not after.ready and "could not start the revision" in after.ready_message
    assert run.get(sid).serving == [good.latest_ready] and get(good.uri + "/env/V") == (200, "good")
    run.delete(sid)


def test_what_a_task_detaches_ends_with_it(clients, emulator):
    """A process that left its task's process group (a daemon in a session of its own) still goes when the
    task ends, as everything in a container does."""
    import os

    from deployctl.cloud.run_jobs import RunJobs

    detach = ("import subprocess, sys; p = subprocess.Popen(['sleep', '300'], start_new_session=True, "
              "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid, flush=True)")
    jobs = RunJobs(clients, PROJECT, REGION)
    jid = uid("detach")
    jobs.apply(jid, ContainerSpec(image="local/task", command=["python"], args=["-c", detach]))
    ex = jobs.run(jid)
    assert ex.succeeded
    from deployctl.cloud import logs

    [line] = logs.tail(clients, PROJECT, logs.job_filter(jid, execution=ex.id))
    pid = int(line.text)

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    wait_until(gone, timeout=10)
    assert not os.path.exists(f"/proc/{pid}/cmdline") or gone()
