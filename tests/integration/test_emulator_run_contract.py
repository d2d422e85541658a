"""More of the emulated Cloud Run v2 and Logging contract through the real Google clients over gRPC: WaitOperation,
listing across all services and jobs with paging, RunJob's task_count and timeout overrides, NOT_FOUND on delete,
the Logging timestamp filter, traffic tags with a uri of their own, and what Cloud Run refuses to delete.

Each test works in a project of its own on the session's emulator, so listings see only what it made.
"""

from __future__ import annotations

import stat
import time
import urllib.error
from datetime import UTC, datetime

import pytest
from google.api_core import exceptions as gexc
from google.cloud.run_v2 import types as t
from google.longrunning import operations_pb2

from deployctl import errors
from deployctl.cloud import logs
from deployctl.cloud.run import ContainerSpec, RunServices, TrafficTarget
from deployctl.cloud.run_jobs import RunJobs
from tests.integration.test_emulator_run import APP, app_container, get, task_spec, uid

REGION = "us-central1"


def parent(project: str) -> str:
    return f"projects/{project}/locations/{REGION}"


def app_spec(**env: str) -> ContainerSpec:
    return ContainerSpec(image="local/app", command=["python"], args=APP, env=env, startup_path="/health",
                         probe_period=1)


def test_wait_operation_returns_pending_then_done(clients):
    project = uid("waitop")
    svc = t.Service(template=t.RevisionTemplate(containers=[app_container({"APP_START_DELAY": "1.5"})]))
    op = clients.services.create_service(parent=parent(project), service=svc, service_id="slow",
                                         **clients.policy.call())
    name = op.operation.name

    def wait(timeout_s: float) -> operations_pb2.Operation:
        limit = {"seconds": int(timeout_s), "nanos": int(timeout_s % 1 * 1e9)}
        raw = clients.services.wait_operation(request={"name": name, "timeout": limit}, timeout=timeout_s + 10)
        # The generated client has no deserializer for WaitOperation: it hands back the wire bytes.
        return raw if isinstance(raw, operations_pb2.Operation) else operations_pb2.Operation.FromString(raw)

    started = time.monotonic()
    pending = wait(0.3)
    assert pending.name == name and not pending.done and time.monotonic() - started < 5
    done = wait(20)
    assert done.done and not done.HasField("error")
    served = t.Service.deserialize(done.response.value)
    assert served.name == f"{parent(project)}/services/slow" and served.latest_ready_revision
    clients.policy.wait(clients.services.delete_service(name=served.name, **clients.policy.call()))


def test_list_across_all_services_and_jobs_with_paging(clients):
    project = uid("listall")
    run, jobs = RunServices(clients, project, REGION), RunJobs(clients, project, REGION)
    for sid in ("alpha", "beta"):
        run.deploy(sid, app_spec())
    run.deploy("alpha", app_spec(V="2"))  # alpha has two revisions
    for jid in ("job-a", "job-b"):
        jobs.apply(jid, task_spec(0))
        jobs.run(jid)

    def pages(method, field: str, **request) -> list[list]:
        pager = method(request={**request, "page_size": 1}, **clients.policy.call())
        return [list(getattr(p, field)) for p in pager.pages]

    services = pages(clients.services.list_services, "services", parent=parent(project))
    assert [len(p) for p in services] == [1, 1]
    assert sorted(s.name.rsplit("/", 1)[1] for p in services for s in p) == ["alpha", "beta"]
    revisions = pages(clients.revisions.list_revisions, "revisions", parent=f"{parent(project)}/services/-")
    assert [len(p) for p in revisions] == [1, 1, 1]
    assert sorted(r.service for p in revisions for r in p) == ["alpha", "alpha", "beta"]
    assert [len(p) for p in pages(clients.jobs.list_jobs, "jobs", parent=parent(project))] == [1, 1]
    executions = pages(clients.executions.list_executions, "executions", parent=f"{parent(project)}/jobs/-")
    assert sorted(e.job for p in executions for e in p) == ["job-a", "job-b"] and len(executions) == 2
    with pytest.raises(gexc.InvalidArgument):
        list(clients.services.list_services(request={"parent": parent(project), "page_token": "nonsense"},
                                            **clients.policy.call()))
    for sid in ("alpha", "beta"):
        run.delete(sid)


def test_run_job_task_count_and_timeout_overrides(clients, jobs):
    jid = uid("override")
    jobs.apply(jid, task_spec(0, "0.2"), task_count=1, timeout_s=600)
    three = jobs.run(jid, task_count=3)
    assert three.succeeded and three.task_count == 3 and three.succeeded_count == 3
    lines = logs.tail(clients, "run-test", logs.job_filter(jid, execution=three.id))
    assert sorted(x.text.split()[1] for x in lines if x.text.startswith("task ")) == ["0", "1", "2"]

    jobs.apply(jid, task_spec(0, "30"), timeout_s=600)
    started = time.monotonic()
    cut = jobs.run(jid, timeout_s=1)
    assert not cut.succeeded and "timed out after 1s" in cut.message and time.monotonic() - started < 15


def test_deleting_what_does_not_exist_is_not_found(clients):
    missing = f"{parent('run-test')}/services/{uid('ghost')}"
    with pytest.raises(gexc.NotFound):
        clients.services.delete_service(name=missing, **clients.policy.call())
    with pytest.raises(gexc.NotFound):
        clients.jobs.delete_job(name=f"{parent('run-test')}/jobs/{uid('ghost')}", **clients.policy.call())
    with pytest.raises(gexc.NotFound):
        clients.revisions.delete_revision(name=missing + "/revisions/x", **clients.policy.call())


def test_logging_timestamp_filter_over_the_wire(clients, jobs):
    jid = uid("stamp")
    jobs.apply(jid, task_spec(0))
    first = jobs.run(jid)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    second = jobs.run(jid)
    everything = logs.tail(clients, "run-test", logs.job_filter(jid))
    since = logs.tail(clients, "run-test", logs.with_bounds(logs.job_filter(jid), since=between))
    assert len(everything) == 4 and len(since) == 2
    assert all(line.timestamp >= between for line in since)
    assert {line.text for line in since} >= {f"task 0 of {second.id} starting"}
    assert f"task 0 of {first.id} starting" not in {line.text for line in since}
    before = logs.tail(clients, "run-test", f'{logs.job_filter(jid)} AND timestamp<"{between.isoformat()}"')
    assert [line.text for line in before if line.text.startswith("task")] == [f"task 0 of {first.id} starting"]


def test_traffic_tags_get_their_own_uri(run, clients):
    from deployctl.emulator.netaddr import ephemeral_range

    sid = uid("tags")
    one = run.deploy(sid, app_spec(V="one"))
    two = run.deploy(sid, app_spec(V="two"))
    tagged = run.set_traffic(sid, [TrafficTarget(percent=100), TrafficTarget(percent=0, revision=one.latest_ready,
                                                                            tag="old")])
    msg = clients.services.get_service(name=tagged.name, **clients.policy.call())
    [status] = [s for s in msg.traffic_statuses if s.tag == "old"]
    assert status.revision == one.latest_ready and status.uri and status.uri != msg.uri
    assert get(status.uri + "/env/V") == (200, "one")
    assert get(msg.uri + "/env/V") == (200, "two") and two.latest_ready == msg.latest_ready_revision.rsplit("/")[-1]
    low, _ = ephemeral_range()
    ports = [int(u.rsplit(":", 1)[1]) for u in (msg.uri, status.uri)]
    assert all(p < low for p in ports), "front proxies must not take ports from the ephemeral range"

    untagged = run.set_traffic(sid, [TrafficTarget(percent=100)])
    assert not [x for x in untagged.traffic if x.tag]
    with pytest.raises(urllib.error.URLError):  # its proxy is closed
        get(status.uri + "/env/V", timeout=2)
    run.delete(sid)


def test_the_latest_revision_cannot_be_deleted(run, clients):
    sid = uid("latest")
    first = run.deploy(sid, app_spec(V="one"))
    with pytest.raises(errors.CloudError):
        run.deploy(sid, ContainerSpec(image="local/app", command=["python"], args=APP,
                                      env={"APP_EXIT_AT_START": "3"}))
    svc = run.get(sid)
    latest = f"{svc.name}/revisions/{svc.latest_created}"
    assert svc.latest_created != first.latest_ready  # it failed, serves nothing, and is still the latest
    with pytest.raises(gexc.FailedPrecondition, match="latest revision"):
        clients.revisions.delete_revision(name=latest, **clients.policy.call())
    run.delete(sid)


def test_log_files_are_private(emulator, run):
    sid = uid("private")
    run.deploy(sid, app_spec())
    files = list((emulator.state_dir / "logs").glob("*.jsonl"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    run.delete(sid)


@pytest.fixture(scope="module")
def run(clients) -> RunServices:
    return RunServices(clients, "run-test", REGION)


@pytest.fixture(scope="module")
def jobs(clients) -> RunJobs:
    return RunJobs(clients, "run-test", REGION)
