"""The emulated Cloud Run v2 API and Logging ListLogEntries, through the real Google clients over gRPC.

Services run tests/fixtures/run_app.py (a stdlib HTTP server) and jobs run tests/fixtures/run_task.py, as real
local processes behind the emulator.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request

import pytest
from google.api_core import exceptions as gexc
from google.cloud.run_v2 import types as t

from deployctl import errors
from deployctl.cloud import logs
from deployctl.cloud.run import ContainerSpec, RunServices, TrafficTarget
from deployctl.cloud.run_jobs import RunJobs

PROJECT, REGION = "run-test", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
APP = ["tests/fixtures/run_app.py"]
TASK = "tests/fixtures/run_task.py"


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def app_container(env: dict[str, str] | None = None, *, period: int = 1, failures: int = 10) -> t.Container:
    return t.Container(image="local/app", command=["python"], args=APP,
                       env=[t.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
                       startup_probe=t.Probe(http_get=t.HTTPGetAction(path="/health"), period_seconds=period,
                                             failure_threshold=failures))


def create_service(clients, sid: str, env: dict[str, str] | None = None):
    svc = t.Service(template=t.RevisionTemplate(containers=[app_container(env)]))
    op = clients.services.create_service(parent=PARENT, service=svc, service_id=sid, **clients.policy.call())
    return clients.policy.wait(op, deadline=30)


@pytest.fixture(scope="module")
def run(clients) -> RunServices:
    return RunServices(clients, PROJECT, REGION)


@pytest.fixture(scope="module")
def jobs(clients) -> RunJobs:
    return RunJobs(clients, PROJECT, REGION)


# --- Services and Revisions: contracts ---------------------------------------------------------------
def test_service_rpcs_contract(clients, emulator):
    sid = uid("contract")
    created = create_service(clients, sid, {"GREETING": "hello"})
    name = f"{PARENT}/services/{sid}"
    assert created.name == name and created.generation == 1 and created.observed_generation == 1
    assert created.terminal_condition.state == t.Condition.State.CONDITION_SUCCEEDED
    assert created.latest_ready_revision == created.latest_created_revision
    assert created.latest_ready_revision.rsplit("/", 1)[1].startswith(f"{sid}-00001-")
    assert created.traffic_statuses[0].percent == 100
    assert get(created.uri + "/env/GREETING") == (200, "hello")
    assert get(created.uri + "/env/K_SERVICE") == (200, sid)

    got = clients.services.get_service(name=name, **clients.policy.call())
    assert got.etag == created.etag and got.uri == created.uri
    assert name in [s.name for s in clients.services.list_services(parent=PARENT, **clients.policy.call())]
    with pytest.raises(gexc.AlreadyExists):
        clients.services.create_service(parent=PARENT, service=got, service_id=sid, **clients.policy.call())
    with pytest.raises(gexc.NotFound):
        clients.services.get_service(name=name + "-missing", **clients.policy.call())
    with pytest.raises(gexc.NotFound):
        clients.services.update_service(service=t.Service(name=name + "-missing", template=got.template),
                                        **clients.policy.call())
    stale = t.Service(got)
    stale.etag = '"stale"'
    with pytest.raises(gexc.Aborted):
        clients.services.update_service(service=stale, **clients.policy.call())

    revs = list(clients.revisions.list_revisions(parent=name, **clients.policy.call()))
    assert [r.name for r in revs] == [created.latest_ready_revision]
    rev = clients.revisions.get_revision(name=revs[0].name, **clients.policy.call())
    assert any(c.type_ == "Ready" and c.state == c.State.CONDITION_SUCCEEDED for c in rev.conditions)
    with pytest.raises(gexc.FailedPrecondition):  # it serves traffic
        clients.revisions.delete_revision(name=rev.name, **clients.policy.call())
    with pytest.raises(gexc.NotFound):
        clients.revisions.get_revision(name=name + "/revisions/nope", **clients.policy.call())

    # The front proxy streams bodies both ways, chunked or not.
    body = secrets.token_bytes(3 * 1024 * 1024)
    req = urllib.request.Request(created.uri + "/echo", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == body
    chunks = [body[i:i + 65536] for i in range(0, 300000, 65536)]
    req = urllib.request.Request(created.uri + "/echo", data=iter(chunks), method="POST",
                                 headers={"Transfer-Encoding": "chunked"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == b"".join(chunks)

    # What the revision printed is in Logging, newest first when asked, one page at a time.
    lines = logs.tail(clients, PROJECT, logs.service_filter(sid, revision=rev.name.rsplit("/", 1)[1]))
    assert lines[0].text.startswith("listening on ") and lines[0].severity == "INFO"
    assert any(line.text.startswith('"POST /echo') for line in lines)  # a JSON line's message
    page = clients.logging.list_log_entries(request={
        "resource_names": [f"projects/{PROJECT}"], "filter": logs.service_filter(sid), "page_size": 2,
        "order_by": "timestamp desc"}, **clients.policy.call())
    first_page = list(page.pages)[0].entries
    assert len(first_page) == 2 and first_page[0].timestamp >= first_page[1].timestamp
    assert first_page[0].resource.type == "cloud_run_revision"
    assert first_page[0].resource.labels["service_name"] == sid

    pids = [p["pid"] for p in emulator.component("run").list_processes() if p.get("service") == name and p["pid"]]
    assert pids
    clients.policy.wait(clients.services.delete_service(name=name, **clients.policy.call()), deadline=30)
    with pytest.raises(gexc.NotFound):
        clients.services.get_service(name=name, **clients.policy.call())
    assert not [p for p in emulator.component("run").list_processes() if p.get("service") == name]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(created.uri + "/health", timeout=2)


def test_update_makes_new_revision_and_rollback_is_instant(run):
    sid = uid("roll")
    first = run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP, env={"V": "one"},
                                          startup_path="/health", probe_period=1))
    assert first.ready and get(first.uri + "/env/V") == (200, "one")
    second = run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP, env={"V": "two"},
                                           startup_path="/health", probe_period=1), etag=first.etag)
    assert second.uri == first.uri and second.latest_ready != first.latest_ready and second.generation == 2
    assert second.serving == [second.latest_ready] and second.template_env == {"V": "two"}
    assert get(second.uri + "/env/V") == (200, "two")
    revisions = run.revisions(sid)
    assert [r.id for r in revisions] == [second.latest_ready, first.latest_ready]
    assert all(r.ready for r in revisions)  # the old one is retained

    with pytest.raises(errors.Conflict):
        run.set_traffic(sid, [TrafficTarget(percent=100, revision=first.latest_ready)], etag=first.etag)
    started = time.monotonic()
    rolled = run.set_traffic(sid, [TrafficTarget(percent=100, revision=first.latest_ready)])
    assert time.monotonic() - started < 5  # no new revision to start: only a routing change
    assert rolled.serving == [first.latest_ready] and rolled.latest_created == second.latest_ready
    assert get(rolled.uri + "/env/V") == (200, "one")
    split = run.set_traffic(sid, [TrafficTarget(percent=50, revision=first.latest_ready),
                                  TrafficTarget(percent=50)])
    assert sorted(split.serving) == sorted([first.latest_ready, second.latest_ready])
    seen = {get(split.uri + "/env/V")[1] for _ in range(40)}
    assert seen == {"one", "two"}
    run.delete(sid)
    with pytest.raises(errors.NotFound):
        run.get(sid)


def test_unhealthy_revision_never_takes_traffic(run, clients):
    sid = uid("gate")
    good = run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP, env={"V": "good"},
                                         startup_path="/health", probe_period=1))
    failures: list[str] = []
    served: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                status, body = get(good.uri + "/env/V")
            except OSError as e:  # refused, reset, timed out: a failed request too
                status, body = 0, repr(e)
            if (status, body) != (200, "good"):
                failures.append(f"{status} {body}")
            else:
                served.append(status)
            time.sleep(0.02)

    loop = threading.Thread(target=hammer)
    loop.start()
    try:
        with pytest.raises(errors.CloudError) as info:
            run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP,
                                          env={"V": "bad", "APP_HEALTH": "fail"}, startup_path="/health",
                                          probe_period=1, probe_failures=2))
    finally:
        stop.set()
        loop.join(10)
    assert info.value.code == "revision-failed"
    assert failures == []
    # The loop really ran throughout the ~2 s rollout (a hung request would make "no failure" mean nothing).
    assert len(served) >= 20, len(served)
    after = run.get(sid)
    assert after.serving == [good.latest_ready] and after.latest_ready == good.latest_ready
    assert after.latest_created != good.latest_ready and not after.ready
    assert "is not ready and cannot serve traffic" in after.ready_message
    bad = run.revision(sid, after.latest_created)
    assert not bad.ready and "startup probe" in bad.ready_message and "Logs for this revision" in bad.ready_message

    # A container that exits at start: the reason is in the revision's condition, which points to its logs (as
    # Cloud Run's does) and never carries log lines (a revision may print a secret); the lines are in Logging.
    svc = clients.services.get_service(name=good.name, **clients.policy.call())
    svc.template.containers[0].env.append(t.EnvVar(name="APP_EXIT_AT_START", value="4"))
    op = clients.services.update_service(service=svc, **clients.policy.call())
    with pytest.raises(gexc.FailedPrecondition) as crashed:
        clients.policy.wait(op, deadline=30)
    assert "exited with code 4" in crashed.value.message and "refusing to start" not in crashed.value.message
    exited = clients.services.get_service(name=good.name, **clients.policy.call()).latest_created_revision
    lines = logs.tail(clients, PROJECT, logs.service_filter(sid, revision=exited.rsplit("/", 1)[1]), limit=10)
    assert any("refusing to start" in line.text for line in lines), lines
    assert get(good.uri + "/env/V") == (200, "good")
    run.delete(sid)


def test_update_allow_missing_creates_and_operations_are_listed(clients):
    sid = uid("upsert")
    name = f"{PARENT}/services/{sid}"
    op = clients.services.update_service(request=t.UpdateServiceRequest(service=t.Service(
        name=name, template=t.RevisionTemplate(containers=[app_container()])), allow_missing=True),
        **clients.policy.call())
    svc = clients.policy.wait(op, deadline=30)
    assert svc.name == name and svc.latest_ready_revision
    ops = clients.services._transport.operations_client
    assert op.operation.name in [o.name for o in ops.list_operations(PARENT, "")]
    assert ops.get_operation(op.operation.name).done
    ops.delete_operation(op.operation.name)
    with pytest.raises(gexc.NotFound):
        ops.get_operation(op.operation.name)
    clients.policy.wait(clients.services.delete_service(name=name, **clients.policy.call()))


def test_unhealthy_revisions_fault(run, emulator):
    sid = uid("fault")
    faults = emulator.state_dir / "faults.json"
    faults.write_text(json.dumps({"unhealthy_revisions": [sid]}))
    try:
        with pytest.raises(errors.CloudError, match="forced by unhealthy_revisions"):
            run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP,
                                          startup_path="/health", probe_period=1, probe_failures=1))
    finally:
        faults.unlink()
    assert run.get(sid).serving == []
    run.delete(sid)


def test_secret_env_is_resolved(run, clients):
    sid, secret_id = uid("secret"), uid("app-key")
    sm = clients.secret_manager
    sm.create_secret(parent=f"projects/{PROJECT}", secret_id=secret_id,
                     secret={"replication": {"automatic": {}}}, **clients.policy.call())
    sm.add_secret_version(parent=f"projects/{PROJECT}/secrets/{secret_id}", payload={"data": b"v-one"},
                          **clients.policy.call())
    svc = run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP,
                                        secrets={"APP_KEY": f"{secret_id}:latest"}, startup_path="/health",
                                        probe_period=1))
    assert get(svc.uri + "/env/APP_KEY") == (200, "v-one")
    assert svc.template_secrets == {"APP_KEY": f"{secret_id}:latest"}
    with pytest.raises(errors.CloudError, match="not accessible"):
        run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP,
                                      secrets={"APP_KEY": f"{secret_id}:7"}))
    run.delete(sid)


# --- Jobs and Executions -----------------------------------------------------------------------------
def task_spec(code: int, *extra: str) -> ContainerSpec:
    return ContainerSpec(image="local/task", command=["python"], args=[TASK, str(code), *extra])


def tasks_of(emulator, execution: str) -> list[dict]:
    """The live task processes of an execution (or, given a job's name + "/", of all its executions)."""
    return [p for p in emulator.component("run").list_processes()
            if p.get("execution") == execution or (execution.endswith("/") and
                                                    p.get("execution", "").startswith(execution))]


def wait_for_tasks(emulator, execution: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not tasks_of(emulator, execution):
        assert time.monotonic() < deadline, f"no task of {execution} started within {timeout:g}s"
        time.sleep(0.05)


def test_job_rpcs_contract(clients, jobs):
    jid = uid("jobc")
    job = jobs.apply(jid, task_spec(0))
    assert job.generation == 1 and job.args == [TASK, "0"]
    name = jobs.job_name(jid)
    with pytest.raises(gexc.AlreadyExists):
        clients.jobs.create_job(parent=PARENT, job=clients.jobs.get_job(name=name), job_id=jid,
                                **clients.policy.call())
    with pytest.raises(gexc.NotFound):
        clients.jobs.get_job(name=name + "-missing", **clients.policy.call())
    with pytest.raises(errors.Conflict):
        jobs.apply(jid, task_spec(1), etag='"stale"')
    updated = jobs.apply(jid, task_spec(1), etag=job.etag)
    assert updated.generation == 2 and updated.args == [TASK, "1"] and updated.etag != job.etag
    assert name in [j.name for j in clients.jobs.list_jobs(parent=PARENT, **clients.policy.call())]
    with pytest.raises(gexc.NotFound):
        clients.executions.get_execution(name=name + "/executions/nope", **clients.policy.call())
    clients.policy.wait(clients.jobs.delete_job(name=name, **clients.policy.call()))
    with pytest.raises(errors.NotFound):
        jobs.get(jid)


def test_job_success_and_failure_with_logs(clients, jobs):
    jid = uid("task")
    jobs.apply(jid, task_spec(0))
    seen = []
    ok = jobs.run(jid, env={"GREETING": "hey"}, on_progress=seen.append)
    assert ok.done and ok.succeeded and ok.succeeded_count == 1 and ok.failed_count == 0
    assert ok.completion_time is not None and ok.job == jid

    op = clients.jobs.run_job(request=t.RunJobRequest(name=jobs.job_name(jid), overrides={
        "container_overrides": [{"args": [TASK, "3"]}]}), **clients.policy.call())
    with pytest.raises(gexc.FailedPrecondition) as info:
        clients.policy.wait(op, deadline=30)
    assert "exited with code 3" in info.value.message
    failed = op.metadata
    assert failed.failed_count == 1 and failed.succeeded_count == 0
    completed = next(c for c in failed.conditions if c.type_ == "Completed")
    assert completed.state == t.Condition.State.CONDITION_FAILED and "code 3" in completed.message

    exec_id = failed.name.rsplit("/", 1)[1]
    lines = logs.tail(clients, PROJECT, logs.job_filter(jid, execution=exec_id), limit=10)
    texts = [line.text for line in lines]
    # stdout and stderr are read separately, so only lines of one stream keep their relative order
    assert any(x.startswith("task 0 of ") for x in texts) and len(lines) == 3
    assert [line.severity for line in lines if line.text == "task failing with exit code 3"] == ["ERROR"]
    assert "a structured line" in texts and any(line.severity == "WARNING" for line in lines)
    errors_only = logs.tail(clients, PROJECT, logs.with_bounds(logs.job_filter(jid), min_severity="ERROR"))
    assert [line.text for line in errors_only] == ["task failing with exit code 3"]
    first_exec = ok.id
    ok_lines = logs.tail(clients, PROJECT, logs.job_filter(jid, execution=first_exec))
    assert len(ok_lines) == 2 and all(line.severity != "ERROR" for line in ok_lines)
    listed = jobs.executions(jid)
    assert [e.id for e in listed] == [exec_id, first_exec]
    assert jobs.get(jid).execution_count == 2


def test_job_retries_timeout_and_failing_fault(jobs, emulator):
    jid = uid("retry")
    jobs.apply(jid, task_spec(2), max_retries=1)
    ex = jobs.run(jid)
    assert not ex.succeeded and ex.failed_count == 1 and "code 2" in ex.message

    jobs.apply(jid, task_spec(0, "30"), timeout_s=1)
    started = time.monotonic()
    slow = jobs.run(jid)
    assert not slow.succeeded and "timed out" in slow.message and time.monotonic() - started < 10

    jobs.apply(jid, task_spec(0))
    faults = emulator.state_dir / "faults.json"
    faults.write_text(json.dumps({"failing_jobs": [jid]}))
    try:
        forced = jobs.run(jid)
    finally:
        faults.unlink()
    assert not forced.succeeded and "code 1" in forced.message


def test_cancel_kills_the_task(clients, jobs, emulator):
    jid = uid("cancel")
    jobs.apply(jid, task_spec(0, "60"))
    op = clients.jobs.run_job(name=jobs.job_name(jid), **clients.policy.call())
    name = op.metadata.name
    wait_for_tasks(emulator, name)
    cancelled = jobs.cancel(name)
    assert cancelled.done and not cancelled.succeeded and cancelled.cancelled_count == 1
    with pytest.raises(gexc.Cancelled):
        clients.policy.wait(op, deadline=10)
    assert not tasks_of(emulator, name)


def test_a_job_being_deleted_takes_no_new_run(clients, jobs, emulator):
    """DeleteJob stops the job's executions, which may take their grace period: the job is gone for RunJob
    from the start, or an execution started meanwhile outlives the deleted job, running with no owner."""
    jid = uid("delete-running")
    stubborn = ContainerSpec(image="local/task", command=["python"], args=[
        "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
              "time.sleep(60)"])
    jobs.apply(jid, stubborn)
    name = jobs.job_name(jid)
    first = clients.jobs.run_job(name=name, **clients.policy.call()).metadata.name
    wait_for_tasks(emulator, name + "/")
    deleting = threading.Thread(target=lambda: clients.jobs.delete_job(name=name, **clients.policy.call())
                                .result(timeout=30))
    deleting.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                clients.jobs.get_job(name=name, **clients.policy.call())
            except gexc.NotFound:
                break
            assert time.monotonic() < deadline, "the job stayed visible while it was being deleted"
            time.sleep(0.02)
        assert tasks_of(emulator, first), "expected the delete still stopping the task"
        with pytest.raises(gexc.NotFound):
            clients.jobs.run_job(name=name, **clients.policy.call())
    finally:
        deleting.join(30)
    assert not tasks_of(emulator, name + "/")


def test_a_cancel_right_after_the_run_ends_the_execution(clients, jobs, emulator):
    """Cancelled while its task is being spawned (Ctrl-C just after `migrate` started its job): the task that
    was starting is stopped too, instead of running to its end."""
    jid = uid("cancel-early")
    jobs.apply(jid, task_spec(0, "60"))
    for _ in range(3):  # the race is in the first tens of milliseconds: try it a few times
        op = clients.jobs.run_job(name=jobs.job_name(jid), **clients.policy.call())
        name = op.metadata.name
        started = time.monotonic()
        cancelled = jobs.cancel(name)
        assert cancelled.done and not cancelled.succeeded, cancelled
        assert time.monotonic() - started < 5
        with pytest.raises(gexc.Cancelled):
            clients.policy.wait(op, deadline=10)
        assert not tasks_of(emulator, name)


def test_a_cancel_whose_reply_is_lost_is_not_resent(clients, jobs, emulator):
    """A mutation (review 2, trust finding 9): one attempt, and the error says to check whether it was made."""
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.policy import CallPolicy

    jid = uid("cancel-lost")
    jobs.apply(jid, task_spec(0, "60"))
    op = clients.jobs.run_job(name=jobs.job_name(jid), **clients.policy.call())
    name = op.metadata.name
    wait_for_tasks(emulator, name)
    c = Clients(emulator_host=emulator.address, policy=CallPolicy(attempt_timeout=1.0, deadline=4.0))
    faults = emulator.state_dir / "faults.json"
    faults.write_text(json.dumps({"drop_response_rate": 1.0, "drop_response_methods": ["CancelExecution"],
                                  "drop_response_code": "DEADLINE_EXCEEDED"}))
    try:
        with pytest.raises(errors.DeployctlError) as info:
            RunJobs(c, PROJECT, REGION).cancel(name)
    finally:
        faults.unlink()
        c.close()
    assert "check whether it was made" in info.value.hint, info.value
    deadline = time.monotonic() + 10  # the one attempt was made: the execution ends cancelled
    while not (ended := jobs.execution(name)).done:
        assert time.monotonic() < deadline, ended
        time.sleep(0.1)
    assert ended.cancelled_count == 1


def test_a_crashed_revision_is_restarted(run, emulator):
    import os
    import signal

    sid = uid("crash")
    svc = run.deploy(sid, ContainerSpec(image="a", command=["python"], args=APP, env={"V": "x"},
                                        startup_path="/health", probe_period=1))
    [before] = [p for p in emulator.component("run").list_processes() if p.get("service") == svc.name and p["pid"]]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while get(svc.uri + "/env/V")[0] != 200 or not [
            p for p in emulator.component("run").list_processes()
            if p.get("service") == svc.name and p["pid"] and p["pid"] != before["pid"]]:
        assert time.monotonic() < deadline, "the revision was not restarted"
        time.sleep(0.1)
    assert get(svc.uri + "/env/V") == (200, "x") and run.get(sid).ready
    run.delete(sid)
