"""Cloud Run services and revisions, typed: what deployctl's commands read and change.

    run = RunServices(clients, project="acme-dev", region="us-central1")
    svc = run.deploy("api", ContainerSpec(image=..., env={...}, secrets={"DB_PASSWORD": "db-pw:latest"}))
    run.set_traffic("api", [TrafficTarget(revision="api-00003-abc", percent=100)])

Every call passes the client policy's retry and timeout and every operation is waited through the policy
(each poll bounded, Ctrl-C stops it); Google errors come back as DeployctlErrors (cloud/errors.py). The
message building lives in cloud/run_messages.py; jobs and executions in cloud/run_jobs.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from deployctl import errors
from deployctl.cloud.clients import Clients
from deployctl.cloud.errors import translated
from deployctl.cloud.run_messages import (
    INGRESS,
    ContainerSpec,
    TrafficTarget,
    container_message,
    ingress_name,
    short_name,
    spec_of,
    split_env,
    target_message,
    template_message,
    vpc_access,
)

SUCCEEDED, FAILED = 4, 3  # Condition.State

__all__ = ["ContainerSpec", "TrafficTarget", "Service", "Revision", "RunServices", "container_message",
           "short_name", "spec_of", "split_env", "vpc_access", "wait_operation", "SUCCEEDED", "FAILED"]


@dataclass(frozen=True)
class Service:
    name: str
    id: str
    uri: str
    generation: int
    observed_generation: int
    etag: str
    latest_ready: str  # revision id ("" if none)
    latest_created: str
    ready: bool
    ready_message: str
    reconciling: bool
    traffic: list[TrafficTarget]  # as it is routed now (statuses), LATEST resolved into `revision`
    labels: dict[str, str]
    image: str
    template_env: dict[str, str]
    template_secrets: dict[str, str]  # env name -> "secret:version"
    spec: ContainerSpec | None = None  # the template as a ContainerSpec (for plans)
    annotations: dict[str, str] = field(default_factory=dict)  # service-level (deployctl's deploy history)
    ingress: str = "all"

    @property
    def serving(self) -> list[str]:
        """Revision ids that receive traffic now."""
        return [t.revision for t in self.traffic if t.percent and t.revision]


@dataclass(frozen=True)
class Revision:
    name: str
    id: str
    service: str
    generation: int
    ready: bool
    ready_message: str
    create_time: datetime | None
    image: str
    env: dict[str, str]
    secrets: dict[str, str]
    command: list[str]
    args: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    spec: ContainerSpec | None = None  # what it runs, as a ContainerSpec (ingress: "all"; it is the service's)


def _ready(conditions: list) -> tuple[bool, str]:
    for c in conditions:
        if c.type_ == "Ready":
            return c.state == SUCCEEDED, c.message
    return False, ""


def to_service(msg) -> Service:
    ready, message = _ready([msg.terminal_condition])
    container = msg.template.containers[0] if msg.template.containers else None
    plain, secret = split_env(container) if container else ({}, {})
    ingress = ingress_name(msg.ingress)
    return Service(
        name=msg.name, id=short_name(msg.name), uri=msg.uri, generation=msg.generation,
        observed_generation=msg.observed_generation, etag=msg.etag,
        latest_ready=short_name(msg.latest_ready_revision), latest_created=short_name(msg.latest_created_revision),
        ready=ready, ready_message=message, reconciling=msg.reconciling,
        traffic=[TrafficTarget(percent=s.percent, revision=s.revision or None, tag=s.tag, uri=s.uri)
                 for s in msg.traffic_statuses],
        labels=dict(msg.labels), image=container.image if container else "", template_env=plain,
        template_secrets=secret, spec=spec_of(msg.template, ingress=ingress) if container else None,
        annotations=dict(msg.annotations), ingress=ingress)


def to_revision(msg) -> Revision:
    ready, message = _ready(list(msg.conditions))
    container = msg.containers[0] if msg.containers else None
    plain, secret = split_env(container) if container else ({}, {})
    return Revision(name=msg.name, id=short_name(msg.name), service=msg.service, generation=msg.generation,
                    ready=ready, ready_message=message, create_time=msg.create_time or None,
                    image=container.image if container else "", env=plain, secrets=secret,
                    command=list(container.command) if container else [],
                    args=list(container.args) if container else [], labels=dict(msg.labels),
                    spec=spec_of(msg) if container else None)


def wait_operation(clients: Clients, op, *, on_progress: Callable | None, deadline: float | None,
                   convert: Callable):
    """Wait for `op` through the policy (every poll bounded, Ctrl-C stops it), within `deadline` or the
    policy's operation deadline, calling on_progress(convert(metadata)) after each poll that finds it running."""
    def on_poll(operation) -> None:
        if on_progress is not None and operation.metadata is not None:
            on_progress(convert(operation.metadata))

    return clients.policy.wait(op, deadline=deadline or clients.policy.operation_deadline, on_poll=on_poll)


class RunServices:
    def __init__(self, clients: Clients, project: str, region: str) -> None:
        self.clients = clients
        self.parent = f"projects/{project}/locations/{region}"

    def service_name(self, service_id: str) -> str:
        return f"{self.parent}/services/{service_id}"

    def get(self, service_id: str) -> Service:
        name = self.service_name(service_id)
        with translated(name, permission="run.services.get"):
            return to_service(self.clients.services.get_service(name=name, **self.clients.policy.call()))

    def find(self, service_id: str) -> Service | None:
        try:
            return self.get(service_id)
        except errors.NotFound:
            return None

    def list(self) -> list[Service]:
        with translated(self.parent, permission="run.services.list"):
            pager = self.clients.services.list_services(parent=self.parent, **self.clients.policy.call())
            return [to_service(s) for s in pager]

    def deploy(self, service_id: str, spec: ContainerSpec, *, etag: str | None = None,
               traffic: list[TrafficTarget] | None = None, on_progress: Callable[[Service], None] | None = None,
               deadline: float | None = None, annotations: dict[str, str] | None = None) -> Service:
        """Create the service or roll out a new revision of it; returns once the revision is Ready.

        A revision that fails its startup probe raises CloudError(code="revision-failed"); traffic then stays
        on the previous revision. With `etag`, a service changed since it was read raises Conflict. The service's
        annotations are kept (an update replaces the whole service), with `annotations` merged over them.
        """
        from google.cloud.run_v2 import types as t

        name = self.service_name(service_id)
        # Deploying shifts traffic to the new revision once Ready unless told otherwise (a rollback's pin
        # is not kept: the next deploy is the roll forward).
        svc = t.Service(name=name, template=template_message(spec), labels=dict(spec.labels),
                        ingress=INGRESS[spec.ingress],
                        traffic=[target_message(x) for x in (traffic or [TrafficTarget(percent=100)])])
        current = self.find(service_id)
        merged = {**(current.annotations if current else {}), **(annotations or {})}
        svc.annotations = {k: v for k, v in merged.items() if v}
        policy = self.clients.policy
        with translated(name, permission="run.services.create" if current is None else "run.services.update"):
            if current is None:
                svc.name = ""
                op = self.clients.services.create_service(parent=self.parent, service=svc, service_id=service_id,
                                                          **policy.call(mutation=True))
            else:
                svc.etag = etag or ""
                op = self.clients.services.update_service(service=svc, **policy.call(mutation=True))
        return self._finish(op, name, on_progress, deadline)

    def set_traffic(self, service_id: str, targets: list[TrafficTarget], *, etag: str | None = None,
                    deadline: float | None = None, annotations: dict[str, str] | None = None) -> Service:
        """Route traffic (e.g. a rollback to a retained revision) without a new revision; `annotations` are
        merged into the service's in the same update (an empty value removes a key)."""
        name = self.service_name(service_id)
        with translated(name, permission="run.services.update"):
            msg = self.clients.services.get_service(name=name, **self.clients.policy.call())
            msg.traffic = [target_message(x) for x in targets]
            if annotations:
                merged = {**dict(msg.annotations), **annotations}
                msg.annotations = {k: v for k, v in merged.items() if v}
            if etag:
                msg.etag = etag
            op = self.clients.services.update_service(service=msg, **self.clients.policy.call(mutation=True))
        return self._finish(op, name, None, deadline)

    def _finish(self, op, name: str, on_progress, deadline) -> Service:
        from google.api_core import exceptions as gexc

        with translated(name, permission="run.operations.get"):
            try:
                return to_service(wait_operation(self.clients, op, on_progress=on_progress,
                                                 deadline=deadline, convert=to_service))
            except gexc.FailedPrecondition:
                pass  # the revision failed: say which one, and where traffic stayed
            except gexc.InternalServerError:
                # Real Cloud Run has also answered "Revision ... is not ready and cannot serve traffic" with
                # INTERNAL (13): that is the same failed rollout when the latest revision is not Ready.
                if not self._latest_failed(short_name(name)):
                    raise
        svc = self.get(short_name(name))
        raise errors.CloudError(
            f"service {svc.id}: the new revision {svc.latest_created} did not become ready; traffic stays on "
            f"{', '.join(svc.serving) or 'no revision'}. {svc.ready_message}",
            hint=f"read its log lines (shown above, or in Cloud Logging for revision {svc.latest_created}), fix "
                 "the cause and deploy again",
            code="revision-failed", details={"service": svc.name, "revision": svc.latest_created})

    def _latest_failed(self, service_id: str) -> bool:
        svc = self.get(service_id)
        return bool(svc.latest_created) and not self.revision(service_id, svc.latest_created).ready

    def delete(self, service_id: str, *, deadline: float | None = None) -> None:
        name = self.service_name(service_id)
        with translated(name, permission="run.services.delete"):
            op = self.clients.services.delete_service(name=name, **self.clients.policy.call(mutation=True))
            self.clients.policy.wait(op, deadline=deadline)

    def revisions(self, service_id: str) -> list[Revision]:
        """Newest first."""
        name = self.service_name(service_id)
        with translated(name, permission="run.revisions.list"):
            pager = self.clients.revisions.list_revisions(parent=name, **self.clients.policy.call())
            return sorted((to_revision(r) for r in pager), key=lambda r: r.generation, reverse=True)

    def revision(self, service_id: str, revision_id: str) -> Revision:
        name = f"{self.service_name(service_id)}/revisions/{revision_id}"
        with translated(name, permission="run.revisions.get"):
            return to_revision(self.clients.revisions.get_revision(name=name, **self.clients.policy.call()))
