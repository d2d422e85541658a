"""ContainerSpec, and its translation to and from Cloud Run v2 messages (containers, revision templates,
traffic targets): the part of cloud/run.py that knows the field names of the API.

A spec read back from a revision (`spec_of`) is what would produce that revision again, so a plan can diff the
config against what runs field by field. Ingress is a service-level setting: it travels in the spec so that it
is planned like any other field, and is set on the Service message, never on a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LATEST, REVISION = 1, 2  # TrafficTargetAllocationType
INGRESS = {"all": 1, "internal": 2, "internal-and-cloud-load-balancing": 3}  # IngressTraffic
INGRESS_NAMES = {v: k for k, v in INGRESS.items()} | {4: "none"}


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
    probe_timeout: int = 1  # seconds one startup probe attempt may take
    vpc_connector: str | None = None
    egress: str = "private-ranges-only"  # or "all-traffic"
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None
    revision: str | None = None  # an explicit revision id (so traffic can name it before it exists)
    liveness_path: str | None = None  # HTTP liveness probe path; None: no liveness probe
    min_instances: int | None = None
    max_instances: int | None = None
    cloudsql_instances: list[str] = field(default_factory=list)  # connection names mounted at /cloudsql
    cpu: str | None = None  # the container's CPU limit ("1", "500m"); None: Cloud Run's default
    memory: str | None = None  # its memory limit ("512Mi"); None: Cloud Run's default
    ingress: str = "all"  # who may reach the service: all | internal | internal-and-cloud-load-balancing


@dataclass(frozen=True)
class TrafficTarget:
    percent: int
    revision: str | None = None  # a revision id; None means "the latest ready revision"
    tag: str = ""
    uri: str = ""  # read back only: a tagged target's own URL

    @property
    def latest(self) -> bool:
        return self.revision is None


def short_name(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else ""


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
    container = t.Container(image=spec.image, command=list(spec.command), args=list(spec.args), env=env,
                            ports=[t.ContainerPort(container_port=spec.port)])
    limits = {k: v for k, v in (("cpu", spec.cpu), ("memory", spec.memory)) if v}
    if limits:
        container.resources = t.ResourceRequirements(limits=limits)
    return container


def vpc_access(spec: ContainerSpec):
    from google.cloud.run_v2 import types as t

    if not spec.vpc_connector:
        return None
    egress = (t.VpcAccess.VpcEgress.ALL_TRAFFIC if spec.egress == "all-traffic"
              else t.VpcAccess.VpcEgress.PRIVATE_RANGES_ONLY)
    return t.VpcAccess(connector=spec.vpc_connector, egress=egress)


def template_message(spec: ContainerSpec):
    """The RevisionTemplate a service deploy sends: the container with its probes, scaling, volumes, access."""
    from google.cloud.run_v2 import types as t

    container = container_message(spec)
    if spec.startup_path:
        container.startup_probe = t.Probe(http_get=t.HTTPGetAction(path=spec.startup_path),
                                          period_seconds=spec.probe_period, failure_threshold=spec.probe_failures,
                                          timeout_seconds=spec.probe_timeout)
    if spec.liveness_path:
        container.liveness_probe = t.Probe(http_get=t.HTTPGetAction(path=spec.liveness_path),
                                           period_seconds=10, failure_threshold=3, timeout_seconds=1)
    template = t.RevisionTemplate(containers=[container], labels=dict(spec.labels))
    if spec.revision:
        template.revision = spec.revision
        # The template names its revision in an annotation too, so that a retry with the same config (after a
        # revision that failed to start) differs from the last template for an API that compares templates
        # without the name, as the local cloud does; Cloud Run makes a new revision for a new name anyway.
        template.annotations = {"deployctl-revision": spec.revision}
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
    return template


def spec_of(template, *, ingress: str = "all") -> ContainerSpec:
    """A revision template (or a Revision: the same field names) read back as the ContainerSpec that would
    produce it (revision name aside). `ingress` comes from the service, which holds it."""
    c = template.containers[0]
    plain, secret = split_env(c)
    startup = c.startup_probe.http_get.path if "startup_probe" in c and "http_get" in c.startup_probe else None
    liveness = c.liveness_probe.http_get.path if "liveness_probe" in c and "http_get" in c.liveness_probe else None
    egress = "all-traffic" if template.vpc_access.egress == 1 else "private-ranges-only"
    scaling = template.scaling if "scaling" in template else None
    cloudsql = [i for v in template.volumes if "cloud_sql_instance" in v for i in v.cloud_sql_instance.instances]
    limits = dict(c.resources.limits) if "resources" in c else {}
    return ContainerSpec(
        image=c.image, command=list(c.command), args=list(c.args), env=plain, secrets=secret,
        port=c.ports[0].container_port if c.ports else 8080, startup_path=startup,
        probe_period=c.startup_probe.period_seconds if startup else 2,
        probe_failures=c.startup_probe.failure_threshold if startup else 15,
        probe_timeout=(c.startup_probe.timeout_seconds or 1) if startup else 1,
        vpc_connector=template.vpc_access.connector or None, egress=egress, labels=dict(template.labels),
        service_account=template.service_account or None, liveness_path=liveness,
        min_instances=scaling.min_instance_count if scaling else None,
        max_instances=scaling.max_instance_count if scaling else None, cloudsql_instances=cloudsql,
        cpu=limits.get("cpu"), memory=limits.get("memory"), ingress=ingress)


def ingress_name(value: int) -> str:
    return INGRESS_NAMES.get(int(value), "all")  # unspecified (0) is Cloud Run's default: all


def target_message(x: TrafficTarget):
    from google.cloud.run_v2 import types as t

    if x.latest:
        return t.TrafficTarget(type_=LATEST, percent=x.percent, tag=x.tag)
    return t.TrafficTarget(type_=REVISION, revision=x.revision, percent=x.percent, tag=x.tag)
