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

    def deploy(self, service_id: str, spec: ContainerSpec, *, etag: str | None = None, create: bool = False,
               traffic: list[TrafficTarget] | None = None, on_progress: Callable[[Service], None] | None = None,
               deadline: float | None = None, annotations: dict[str, str] | None = None) -> Service:
        """Create the service or roll out a new revision of it; returns once the revision is Ready.

        A revision that fails its startup probe raises CloudError(code="revision-failed"); traffic then stays
        on the previous revision. The caller says what it planned against: `create=True` (it found no service)
        always creates, so a service someone created meanwhile is AlreadyExists; `etag` updates only the service
        as it was read (else Conflict). With neither, whatever is there is updated. The service's annotations
        are kept (an update replaces the whole service), with `annotations` merged over them.
        """
        from google.cloud.run_v2 import types as t

        name = self.service_name(service_id)
        # Deploying shifts traffic to the new revision once Ready unless told otherwise (a rollback's pin
        # is not kept: the next deploy is the roll forward).
        svc = t.Service(name=name, template=template_message(spec), labels=dict(spec.labels),
                        ingress=INGRESS[spec.ingress],
                        traffic=[target_message(x) for x in (traffic or [TrafficTarget(percent=100)])])
        current = None if create else self.find(service_id)
        if current is None and etag:
            raise errors.Conflict(f"service {service_id} was deleted since it was read",
                                  hint="check what is deployed with `deployctl status`, then deploy again")
        merged = {**(current.annotations if current else {}), **(annotations or {})}
        svc.annotations = {k: v for k, v in merged.items() if v}
        policy = self.clients.policy
        with translated(name, permission="run.services.create" if current is None else "run.services.update",
                        service_account=spec.service_account):
            if current is None:
                svc.name = ""
                op = self.clients.services.create_service(parent=self.parent, service=svc, service_id=service_id,
                                                          **policy.call(mutation=True))
            else:
                svc.etag = etag or ""
                op = self.clients.services.update_service(service=svc, **policy.call(mutation=True))
        return self._finish(op, name, on_progress, deadline, starting=[spec.revision] if spec.revision else [])

    def set_traffic(self, service_id: str, targets: list[TrafficTarget], *, etag: str | None = None,
                    deadline: float | None = None, annotations: dict[str, str] | None = None) -> Service:
        """Route traffic (e.g. a rollback to a retained revision) without a new revision; `annotations` are
        merged into the service's in the same update (an empty value removes a key). A retained revision that was
        scaled to zero starts again first; one that cannot start raises CloudError(code="revision-failed")."""
        return self._update(service_id, targets, annotations, etag=etag, deadline=deadline)

    def annotate(self, service_id: str, annotations: dict[str, str], *, etag: str | None = None,
                 deadline: float | None = None) -> Service:
        """Merge `annotations` into the service's (an empty value removes a key), its traffic and template as
        they are (e.g. deployctl's history, once the traffic change it records has succeeded)."""
        return self._update(service_id, None, annotations, etag=etag, deadline=deadline)

    def _update(self, service_id: str, targets: list[TrafficTarget] | None, annotations: dict[str, str] | None,
                *, etag: str | None, deadline: float | None) -> Service:
        name = self.service_name(service_id)
        with translated(name, permission="run.services.update"):
            msg = self.clients.services.get_service(name=name, **self.clients.policy.call())
            if targets is not None:
                msg.traffic = [target_message(x) for x in targets]
            if annotations:
                merged = {**dict(msg.annotations), **annotations}
                msg.annotations = {k: v for k, v in merged.items() if v}
            if etag:
                msg.etag = etag
            op = self.clients.services.update_service(service=msg, **self.clients.policy.call(mutation=True))
        starting = [x.revision for x in targets or [] if x.revision and (x.percent or x.tag)]
        return self._finish(op, name, None, deadline, starting=starting, cold_start=True)

    def _finish(self, op, name: str, on_progress, deadline, *, starting: list[str] | None = None,
                cold_start: bool = False) -> Service:
        """Wait for a rollout. When it fails, the revision named is the one that did not start: one of
        `starting` (what the change asked to run: a new revision, or retained ones started again for traffic,
        `cold_start`) that is not Ready, else the latest created; where the traffic stayed comes from a fresh
        read of the service."""
        from google.api_core import exceptions as gexc

        with translated(name, permission="run.operations.get"):
            try:
                return to_service(wait_operation(self.clients, op, on_progress=on_progress,
                                                 deadline=deadline, convert=to_service))
            except gexc.FailedPrecondition:
                failed = self._failed_revision(short_name(name), starting or [])
            except gexc.InternalServerError:
                # Real Cloud Run has also answered "Revision ... is not ready and cannot serve traffic" with
                # INTERNAL (13): that is the same failed rollout when a revision it started is not Ready.
                failed = self._failed_revision(short_name(name), starting or [])
                if failed is None:
                    raise
        svc = self.get(short_name(name))
        rev_id = failed.id if failed else svc.latest_created
        reason = (failed.ready_message if failed else "") or svc.ready_message
        what = f"revision {rev_id} could not start" if cold_start else \
            f"the new revision {rev_id} did not become ready"
        raise errors.CloudError(
            f"service {svc.id}: {what}; traffic stays on {', '.join(svc.serving) or 'no revision'}. {reason}",
            hint=f"read its log lines ({'' if cold_start else 'shown above, or '}in Cloud Logging for revision "
                 f"{rev_id}), fix the cause and deploy again",
            code="revision-failed", details={"service": svc.name, "revision": rev_id})

    def _failed_revision(self, service_id: str, starting: list[str]) -> Revision | None:
        """The first of `starting` (else the latest created revision) that is not Ready, or None."""
        for rev_id in starting or [self.get(service_id).latest_created]:
            if rev_id:
                rev = self.revision(service_id, rev_id)
                if not rev.ready:
                    return rev
        return None

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
