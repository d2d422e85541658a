"""Cloud Run services and revisions, typed: what deployctl's commands read and change.

    run = RunServices(clients, project="acme-dev", region="us-central1")
    svc = run.deploy("api", ContainerSpec(image=..., env={...}, secrets={"DB_PASSWORD": "db-pw:latest"}))
    run.set_traffic("api", [TrafficTarget(revision="api-00003-abc", percent=100)])

Every call passes the client policy's retry and timeout and every operation is waited with a bounded deadline;
Google errors come back as DeployctlErrors (cloud/errors.py). Jobs and executions live in cloud/run_jobs.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from deployctl import errors, interrupt
from deployctl.cloud.clients import Clients
from deployctl.cloud.errors import translated

LATEST, REVISION = 1, 2  # TrafficTargetAllocationType
SUCCEEDED, FAILED = 4, 3  # Condition.State


@dataclass(frozen=True)
class ContainerSpec:
    """What a service's or job's container runs. `secrets` maps env name -> "secret-id:version"."""

    image: str
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    port: int = 8080
    startup_path: str | None = None  # HTTP startup probe path; None: TCP on the port
    probe_period: int = 2
    probe_failures: int = 15
    vpc_connector: str | None = None
    egress: str = "private-ranges-only"  # or "all-traffic"
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None
    revision: str | None = None  # an explicit revision id (so traffic can name it before it exists)
    liveness_path: str | None = None  # HTTP liveness probe path; None: no liveness probe
    min_instances: int | None = None
    max_instances: int | None = None
    cloudsql_instances: list[str] = field(default_factory=list)  # connection names mounted at /cloudsql


@dataclass(frozen=True)
class TrafficTarget:
    percent: int
    revision: str | None = None  # a revision id; None means "the latest ready revision"
    tag: str = ""
    uri: str = ""  # read back only: a tagged target's own URL

    @property
    def latest(self) -> bool:
        return self.revision is None


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


def short_name(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else ""


def _ready(conditions: list) -> tuple[bool, str]:
    for c in conditions:
        if c.type_ == "Ready":
            return c.state == SUCCEEDED, c.message
    return False, ""


def split_env(container) -> tuple[dict[str, str], dict[str, str]]:
    """(plain env, secret env as "secret:version") of a container message."""
    plain, secret = {}, {}
    for e in container.env:
        ref = e.value_source.secret_key_ref
        if ref.secret:
            secret[e.name] = f"{short_name(ref.secret)}:{ref.version or 'latest'}"
        else:
            plain[e.name] = e.value
    return plain, secret


def container_message(spec: ContainerSpec):
    from google.cloud.run_v2 import types as t

    env = [t.EnvVar(name=k, value=v) for k, v in spec.env.items()]
    for name, ref in spec.secrets.items():
        secret, _, version = ref.partition(":")
        env.append(t.EnvVar(name=name, value_source=t.EnvVarSource(
            secret_key_ref=t.SecretKeySelector(secret=secret, version=version or "latest"))))
    return t.Container(image=spec.image, command=list(spec.command), args=list(spec.args), env=env,
                       ports=[t.ContainerPort(container_port=spec.port)])


def vpc_access(spec: ContainerSpec):
    from google.cloud.run_v2 import types as t

    if not spec.vpc_connector:
        return None
    egress = (t.VpcAccess.VpcEgress.ALL_TRAFFIC if spec.egress == "all-traffic"
              else t.VpcAccess.VpcEgress.PRIVATE_RANGES_ONLY)
    return t.VpcAccess(connector=spec.vpc_connector, egress=egress)


def to_service(msg) -> Service:
    ready, message = _ready([msg.terminal_condition])
    container = msg.template.containers[0] if msg.template.containers else None
    plain, secret = split_env(container) if container else ({}, {})
    return Service(
        name=msg.name, id=short_name(msg.name), uri=msg.uri, generation=msg.generation,
        observed_generation=msg.observed_generation, etag=msg.etag,
        latest_ready=short_name(msg.latest_ready_revision), latest_created=short_name(msg.latest_created_revision),
        ready=ready, ready_message=message, reconciling=msg.reconciling,
        traffic=[TrafficTarget(percent=s.percent, revision=s.revision or None, tag=s.tag, uri=s.uri)
                 for s in msg.traffic_statuses],
        labels=dict(msg.labels), image=container.image if container else "", template_env=plain,
        template_secrets=secret, spec=spec_of(msg.template) if container else None)


def spec_of(template) -> ContainerSpec:
    """A revision template read back as the ContainerSpec that would produce it (revision name aside)."""
    c = template.containers[0]
    plain, secret = split_env(c)
    startup = c.startup_probe.http_get.path if "startup_probe" in c and "http_get" in c.startup_probe else None
    liveness = c.liveness_probe.http_get.path if "liveness_probe" in c and "http_get" in c.liveness_probe else None
    egress = "all-traffic" if template.vpc_access.egress == 1 else "private-ranges-only"
    scaling = template.scaling if "scaling" in template else None
    cloudsql = [i for v in template.volumes if "cloud_sql_instance" in v for i in v.cloud_sql_instance.instances]
    return ContainerSpec(
        image=c.image, command=list(c.command), args=list(c.args), env=plain, secrets=secret,
        port=c.ports[0].container_port if c.ports else 8080, startup_path=startup,
        probe_period=c.startup_probe.period_seconds if startup else 2,
        probe_failures=c.startup_probe.failure_threshold if startup else 15,
        vpc_connector=template.vpc_access.connector or None, egress=egress, labels=dict(template.labels),
        service_account=template.service_account or None, liveness_path=liveness,
        min_instances=scaling.min_instance_count if scaling else None,
        max_instances=scaling.max_instance_count if scaling else None, cloudsql_instances=cloudsql)


def to_revision(msg) -> Revision:
    ready, message = _ready(list(msg.conditions))
    container = msg.containers[0] if msg.containers else None
    plain, secret = split_env(container) if container else ({}, {})
    return Revision(name=msg.name, id=short_name(msg.name), service=msg.service, generation=msg.generation,
                    ready=ready, ready_message=message, create_time=msg.create_time or None,
                    image=container.image if container else "", env=plain, secrets=secret,
                    command=list(container.command) if container else [],
                    args=list(container.args) if container else [])


def wait_operation(clients: Clients, op, *, on_progress: Callable | None, deadline: float | None,
                   convert: Callable):
    """Wait for `op` within the policy's operation deadline, calling on_progress(convert(metadata)) per poll."""
    policy = clients.policy
    limit = deadline or policy.operation_deadline
    if on_progress is None:
        return policy.wait(op, deadline=limit)
    end, delay = time.monotonic() + limit, 0.2
    while not op.done(retry=policy.retry()):
        if op.metadata is not None:
            on_progress(convert(op.metadata))
        if time.monotonic() > end:
            raise errors.CloudError(f"operation {op.operation.name} did not finish within {limit:g}s",
                                    hint="check its state in the console or with `deployctl status`",
                                    code="timeout")
        interrupt.sleep(delay)  # a deploy's worker thread stops here on Ctrl-C
        delay = min(delay * 1.5, 2.0)
    return op.result(timeout=0.1)


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
               deadline: float | None = None) -> Service:
        """Create the service or roll out a new revision of it; returns once the revision is Ready.

        A revision that fails its startup probe raises CloudError(code="revision-failed"); traffic then stays
        on the previous revision. With `etag`, a service changed since it was read raises Conflict.
        """
        from google.cloud.run_v2 import types as t

        name = self.service_name(service_id)
        container = container_message(spec)
        if spec.startup_path:
            container.startup_probe = t.Probe(http_get=t.HTTPGetAction(path=spec.startup_path),
                                              period_seconds=spec.probe_period,
                                              failure_threshold=spec.probe_failures, timeout_seconds=1)
        if spec.liveness_path:
            container.liveness_probe = t.Probe(http_get=t.HTTPGetAction(path=spec.liveness_path),
                                               period_seconds=10, failure_threshold=3, timeout_seconds=1)
        template = t.RevisionTemplate(containers=[container], labels=dict(spec.labels))
        if spec.revision:
            template.revision = spec.revision
        if spec.min_instances is not None or spec.max_instances is not None:
            template.scaling = t.RevisionScaling(min_instance_count=spec.min_instances or 0,
                                                 max_instance_count=spec.max_instances or 0)
        if spec.cloudsql_instances:
            template.volumes = [t.Volume(name="cloudsql", cloud_sql_instance=t.CloudSqlInstance(
                instances=list(spec.cloudsql_instances)))]
            container.volume_mounts = [t.VolumeMount(name="cloudsql", mount_path="/cloudsql")]
        if spec.service_account:
            template.service_account = spec.service_account
        access = vpc_access(spec)
        if access is not None:
            template.vpc_access = access
        # Deploying shifts traffic to the new revision once Ready unless told otherwise (a rollback's pin
        # is not kept: the next deploy is the roll forward).
        svc = t.Service(name=name, template=template, labels=dict(spec.labels),
                        traffic=[_target(x) for x in (traffic or [TrafficTarget(percent=100)])])
        current = self.find(service_id)
        policy = self.clients.policy
        with translated(name, permission="run.services.create" if current is None else "run.services.update"):
            if current is None:
                svc.name = ""
                op = self.clients.services.create_service(parent=self.parent, service=svc, service_id=service_id,
                                                          **policy.call())
            else:
                svc.etag = etag or ""
                op = self.clients.services.update_service(service=svc, **policy.call())
        return self._finish(op, name, on_progress, deadline)

    def set_traffic(self, service_id: str, targets: list[TrafficTarget], *, etag: str | None = None,
                    deadline: float | None = None) -> Service:
        """Route traffic (e.g. a rollback to a retained revision) without a new revision."""
        name = self.service_name(service_id)
        with translated(name, permission="run.services.update"):
            msg = self.clients.services.get_service(name=name, **self.clients.policy.call())
            msg.traffic = [_target(x) for x in targets]
            if etag:
                msg.etag = etag
            op = self.clients.services.update_service(service=msg, **self.clients.policy.call())
        return self._finish(op, name, None, deadline)

    def _finish(self, op, name: str, on_progress, deadline) -> Service:
        from google.api_core import exceptions as gexc

        with translated(name, permission="run.operations.get"):
            try:
                return to_service(wait_operation(self.clients, op, on_progress=on_progress,
                                                 deadline=deadline, convert=to_service))
            except gexc.FailedPrecondition:
                pass  # the revision failed: say which one, and where traffic stayed
        svc = self.get(short_name(name))
        raise errors.CloudError(
            f"service {svc.id}: the new revision {svc.latest_created} did not become ready; traffic stays on "
            f"{', '.join(svc.serving) or 'no revision'}. {svc.ready_message}",
            hint=f"read its logs (`deployctl logs {svc.id}`), fix the cause and deploy again",
            code="revision-failed", details={"service": svc.name, "revision": svc.latest_created})

    def delete(self, service_id: str, *, deadline: float | None = None) -> None:
        name = self.service_name(service_id)
        with translated(name, permission="run.services.delete"):
            op = self.clients.services.delete_service(name=name, **self.clients.policy.call())
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


def _target(x: TrafficTarget):
    from google.cloud.run_v2 import types as t

    if x.latest:
        return t.TrafficTarget(type_=LATEST, percent=x.percent, tag=x.tag)
    return t.TrafficTarget(type_=REVISION, revision=x.revision, percent=x.percent, tag=x.tag)

