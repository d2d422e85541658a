"""The Cloud Run service a config entry asks for, fully resolved: secret versions pinned, the database URL as a
secret env var, probes on the health paths, and labels recording who deployed it from which config."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import asdict, dataclass, replace

from deployctl import __version__
from deployctl.cloud.run import ContainerSpec
from deployctl.context import Context
from deployctl.errors import ConfigError

VERSION_LABEL = "deployctl-version"
DIGEST_LABEL = "deployctl-config"


@dataclass(frozen=True)
class DesiredService:
    name: str
    spec: ContainerSpec
    health: list[str]
    depends_on: list[str]
    has_database: bool
    digest: str  # of the spec without labels: what the deployctl-config label records


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


def build(ctx: Context, name: str, pinner: SecretPinner) -> DesiredService:
    cfg = ctx.config
    svc = cfg.service(name)
    env = dict(svc.env)
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
    spec = ContainerSpec(
        image=svc.image, command=list(svc.command or []), args=list(svc.args or []), env=env, secrets=secrets,
        port=svc.port, startup_path=probe.path, probe_period=max(1, round(probe.period)),
        probe_failures=probe.failure_threshold, vpc_connector=cfg.vpc_connector_for(name),
        egress=cfg.network.egress, service_account=svc.service_account or cfg.environment.service_account,
        liveness_path=svc.health[0] if svc.health else None, min_instances=svc.min_instances,
        max_instances=svc.max_instances, cloudsql_instances=cloudsql)
    digest = spec_digest(spec)
    spec = replace(spec, labels={VERSION_LABEL: label_value(__version__), DIGEST_LABEL: digest})
    return DesiredService(name=name, spec=spec, health=list(svc.health), depends_on=list(svc.depends_on),
                          has_database=svc.database is not None, digest=digest)
