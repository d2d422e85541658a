"""The Cloud Run service a config entry asks for, fully resolved: secret versions pinned, the database URL as a
secret env var, probes on the health paths, resources and ingress, other services' URLs filled into env values
that reference them (`${service:NAME}`), and labels recording who deployed it from which config.

A setting Cloud Run cannot express the way the config says is a ConfigError here, in the plan: never deployed
as something else."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from deployctl import __version__
from deployctl.cloud.run import ContainerSpec
from deployctl.config import SERVICE_REF
from deployctl.context import Context
from deployctl.errors import ConfigError

VERSION_LABEL = "deployctl-version"
DIGEST_LABEL = "deployctl-config"

UrlOf = Callable[[str], "str | None"]  # service id -> its deployed URL (None: not deployed yet)


@dataclass(frozen=True)
class DesiredService:
    name: str
    spec: ContainerSpec
    health: list[str]
    depends_on: list[str]
    has_database: bool
    digest: str  # of the spec without labels: what the deployctl-config label records
    unresolved: list[str] = field(default_factory=list)  # referenced services with no URL yet (built again later)


def label_value(text: str) -> str:
    """Cloud Run label values: lowercase letters, digits, '-' and '_', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def spec_digest(spec: ContainerSpec) -> str:
    body = asdict(replace(spec, labels={}, revision=None))
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SecretPinner:
    """Resolves "secret:latest" to "secret:<number>" once per secret per deploy (shared across threads)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}  # per secret: two services sharing one ask once

    def pin(self, ref: str, config_ref: str | None = None) -> str:
        """`config_ref` names the config entry holding `ref`, so a missing secret's error points at it."""
        secret_id, _, version = ref.partition(":")
        if version and version != "latest":
            return f"{secret_id}:{version}"
        with self._lock:
            lock = self._locks.setdefault(secret_id, threading.Lock())
        with lock:
            if secret_id not in self._cache:
                from deployctl.cloud.secrets import SecretStore

                # get_version reads metadata only: the value itself is never fetched to pin it.
                self._cache[secret_id] = SecretStore(self.ctx.clients, self.ctx.project).get_version(
                    secret_id, "latest", config_ref=config_ref).number
        return f"{secret_id}:{self._cache[secret_id]}"


def resolve_service_refs(env: dict[str, str], url_of: UrlOf | None) -> tuple[dict[str, str], list[str]]:
    """env with every `${service:NAME}` replaced by NAME's URL (config.py checked NAME is a service this one
    depends on); and the names whose URL is not known yet (their references stay as written until they are
    deployed: a depends_on service is deployed first)."""
    unresolved: list[str] = []

    def one(m: re.Match) -> str:
        url = url_of(m.group(1)) if url_of else None
        if not url:
            unresolved.append(m.group(1))
            return m.group(0)
        return url

    out = {key: SERVICE_REF.sub(one, value) for key, value in env.items()}
    return out, list(dict.fromkeys(unresolved))


def _probe_timeout(name: str, probe, period: int) -> int:
    """Cloud Run takes whole seconds, at most the probe's period. An explicit timeout that cannot be sent as
    written is refused; the default adapts to a short period."""
    if "timeout" not in probe.model_fields_set:
        return max(1, min(int(probe.timeout), period))
    if probe.timeout != int(probe.timeout):
        raise ConfigError(f"services.{name}.startup_probe.timeout = {probe.timeout:g}: Cloud Run takes whole "
                          "seconds", hint=f"use {int(probe.timeout) or 1} or {int(probe.timeout) + 1}")
    if int(probe.timeout) > period:
        raise ConfigError(f"services.{name}.startup_probe.timeout ({int(probe.timeout)} s) is longer than its "
                          f"period ({period} s); Cloud Run requires timeout <= period",
                          hint=f"raise services.{name}.startup_probe.period to at least {int(probe.timeout)}")
    return int(probe.timeout)


def build(ctx: Context, name: str, pinner: SecretPinner, url_of: UrlOf | None = None) -> DesiredService:
    cfg = ctx.config
    svc = cfg.service(name)
    env, unresolved = resolve_service_refs(dict(svc.env), url_of)
    secrets = {k: pinner.pin(v, f"services.{name}.secrets.{k}") for k, v in svc.secrets.items()}
    cloudsql: list[str] = []
    if svc.database:
        db = svc.database
        if "DATABASE_URL" in env or "DATABASE_URL" in secrets:
            raise ConfigError(f"services.{name}: DATABASE_URL is set by deployctl from database.url_secret",
                              hint=f"remove DATABASE_URL from services.{name}.env/secrets")
        if db.url_secret:
            secrets["DATABASE_URL"] = pinner.pin(db.url_secret, f"services.{name}.database.url_secret")
        else:  # no stored URL: runtime.py composes one from the pieces and the password secret
            from deployctl import dbtarget

            env.update(dbtarget.pieces_env(dbtarget.resolve(ctx, name)))
            secrets["DB_PASSWORD"] = pinner.pin(db.password_secret, f"services.{name}.database.password_secret")
        if db.mode == "connector":
            cloudsql.append(cfg.instances[db.instance].connection_name)
    probe = svc.startup_probe
    period = max(1, round(probe.period))
    spec = ContainerSpec(
        image=svc.image, command=list(svc.command or []), args=list(svc.args or []), env=env, secrets=secrets,
        port=svc.port, startup_path=probe.path, probe_period=period, probe_failures=probe.failure_threshold,
        probe_timeout=_probe_timeout(name, probe, period), vpc_connector=cfg.vpc_connector_for(name),
        egress=cfg.network.egress, service_account=cfg.service_account_for(name),
        liveness_path=svc.health[0] if svc.health else None, min_instances=svc.min_instances,
        max_instances=svc.max_instances, cloudsql_instances=cloudsql, cpu=svc.cpu, memory=svc.memory,
        ingress=svc.ingress)
    digest = spec_digest(spec)
    spec = replace(spec, labels={VERSION_LABEL: label_value(__version__), DIGEST_LABEL: digest})
    return DesiredService(name=name, spec=spec, health=list(svc.health), depends_on=list(svc.depends_on),
                          has_database=svc.database is not None, digest=digest, unresolved=unresolved)
