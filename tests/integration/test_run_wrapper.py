"""deployctl.cloud.run against the in-process emulator, through the real Google clients: the fields a deploy sets
(resources, probe timeout, ingress, annotations) read back as they were sent, and a failed rollout reported the
same way whether Cloud Run answers FAILED_PRECONDITION (9) or INTERNAL (13)."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
from google.api_core import operation as gop
from google.cloud.run_v2 import types as t
from google.longrunning import operations_pb2
from google.rpc import status_pb2

from deployctl import errors
from deployctl.cloud.run import ContainerSpec, RunServices, TrafficTarget

PROJECT, REGION = "run-wrap", "us-central1"
APP = ContainerSpec(image="local/app", command=["python"], args=["tests/fixtures/run_app.py"], startup_path="/health",
                    probe_period=1, probe_failures=10)


@pytest.fixture(scope="module")
def run(clients) -> RunServices:
    return RunServices(clients, PROJECT, REGION)


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def done_with_error(run: RunServices, code: int, message: str):
    """A finished operation carrying `code`, as the real API returns it (api_core's Operation over a real proto)."""
    proto = operations_pb2.Operation(name=f"projects/{PROJECT}/locations/{REGION}/operations/x", done=True,
                                     error=status_pb2.Status(code=code, message=message))
    return gop.from_gapic(proto, run.clients.services._transport.operations_client, t.Service,
                          metadata_type=t.Service)


def test_resources_probe_timeout_ingress_and_annotations_round_trip(run):
    sid = uid("wrap-fields")
    spec = replace(APP, cpu="2", memory="1Gi", probe_timeout=2, probe_period=2, ingress="internal")
    svc = run.deploy(sid, spec, annotations={"deployctl-gated": "x"}, deadline=30)
    assert svc.ingress == "internal" and svc.annotations == {"deployctl-gated": "x"}
    assert (svc.spec.cpu, svc.spec.memory, svc.spec.probe_timeout, svc.spec.ingress) == ("2", "1Gi", 2, "internal")
    rev = run.revision(sid, svc.latest_created)
    assert (rev.spec.cpu, rev.spec.memory, rev.spec.probe_period) == ("2", "1Gi", 2)
    # A later deploy keeps the service's annotations; set_traffic merges into them (an empty value removes one).
    svc = run.deploy(sid, replace(spec, env={"V": "2"}), deadline=30)
    assert svc.annotations == {"deployctl-gated": "x"}
    svc = run.set_traffic(sid, [TrafficTarget(percent=100)], deadline=30,
                          annotations={"deployctl-gated": "", "deployctl-rolled-back": "a"})
    assert svc.annotations == {"deployctl-rolled-back": "a"}
    run.delete(sid, deadline=30)


@pytest.mark.parametrize("code", [9, 13])
def test_a_failed_revision_is_revision_failed_with_code_9_or_13(run, code):
    sid = uid("wrap-fail")
    with pytest.raises(errors.CloudError) as first:
        run.deploy(sid, replace(APP, env={"APP_EXIT_AT_START": "3"}), deadline=30)
    assert first.value.code == "revision-failed"
    # The same failed rollout, answered with `code` (real Cloud Run has answered both for it).
    message = "Revision 'x' is not ready and cannot serve traffic."
    with pytest.raises(errors.CloudError) as err:
        run._finish(done_with_error(run, code, message), run.service_name(sid), None, 10)
    assert err.value.code == "revision-failed" and "did not become ready" in err.value.message
    run.delete(sid, deadline=30)


def test_internal_is_not_a_revision_failure_when_the_latest_revision_is_ready(run):
    sid = uid("wrap-ok")
    run.deploy(sid, APP, deadline=30)
    with pytest.raises(errors.CloudError) as err:
        run._finish(done_with_error(run, 13, "internal error"), run.service_name(sid), None, 10)
    assert err.value.code != "revision-failed"
    run.delete(sid, deadline=30)
