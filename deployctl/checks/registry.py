"""Which checks run for an environment and its services, what each depends on, and how long each may take."""

from __future__ import annotations

from functools import partial

from deployctl.checks import (
    cloudrun,
    connstring,
    database,
    environment,
    migrations,
    network,
    passwords,
    secrets,
    vpcjob,
)
from deployctl.checks.engine import Check
from deployctl.checks.facts import TF_COMMAND_TIMEOUT, Facts

CONFIG, CREDENTIALS, TFSTATE = "config.valid", "cloud.credentials", "tf.state"


def environment_checks(cloud_timeout: float, *, local_cloud: bool = False) -> list[Check]:
    # The local cloud writes its Terraform-style state while it provisions, which the first call (the
    # credentials check) triggers on a fresh machine: read the state after that.
    return [
        Check(CONFIG, "configuration is valid", environment.config_valid, timeout=10),
        Check(CREDENTIALS, "credentials present / local cloud reachable", environment.credentials,
              depends=[CONFIG], timeout=cloud_timeout),
        Check(TFSTATE, "Terraform state readable", environment.terraform_state,
              depends=[CONFIG, CREDENTIALS] if local_cloud else [CONFIG],
              timeout=max(cloud_timeout, TF_COMMAND_TIMEOUT + 5)),
    ]


def service_checks(f: Facts, service: str, *, cloud_timeout: float, db_timeout: float) -> list[Check]:
    svc = f.ctx.config.services[service]
    out: list[Check] = []

    def add(id_, title, fn, depends=(), timeout=cloud_timeout):
        deps = [d if d in (CONFIG, CREDENTIALS, TFSTATE) else f"{service}:{d}" for d in depends]
        out.append(Check(id_, title, partial(fn, service=service), service=service, depends=deps,
                         timeout=timeout))

    for sid, version in secrets.referenced(f, service).items():
        add(f"secret.{sid}", f"secret {sid} exists, enabled, readable, no trailing newline",
            partial(secrets.secret_ok, secret_id=sid, version=version), [CREDENTIALS])
    if svc.database:
        db = svc.database
        add("db.user", "database user exists (admin API)", database.user_exists, [CREDENTIALS])
        add("db.database", "database exists (admin API)", database.database_exists, [CREDENTIALS])
        add("tf.match", "Terraform state matches the config", database.terraform_matches, [TFSTATE])
        add("net.private-ip", "configured private IP is the instance's", network.private_ip, [CREDENTIALS])
        add("net.vpc-connector", "VPC connector on service and migration job", network.vpc_connector,
            [CREDENTIALS])
        add("net.tcp", "database reachable over TCP", network.tcp, [CREDENTIALS], timeout=db_timeout)
        add("db.login", f"{db.user} logs in with {db.password_secret}", database.login,
            ["net.tcp", "db.user", "db.database"], timeout=db_timeout)
        add("db.passwords", "password sources agree (Terraform, Secret Manager, database)", passwords.check,
            ["net.tcp", "db.user", "db.database"], timeout=db_timeout)
        add("db.ssl", "SSL negotiated", database.ssl, ["db.login"], timeout=db_timeout)
        add("db.public-schema", "migration user may create in schema public", database.public_schema,
            ["db.login"], timeout=db_timeout)
        if db.url_secret:
            add("dsn.lint", f"connection string in {db.url_secret} is well formed", connstring.lint,
                [CREDENTIALS])
            add("dsn.login", f"connection string in {db.url_secret} logs in", connstring.login,
                ["net.tcp", "db.user", "db.database"], timeout=db_timeout)
        if db.migrations:
            add("migrations.heads", "single migration head", migrations.heads, [CONFIG])
            # read over any login that works: the password secret's, another source's, or the url secret's
            # (the credential migrate itself uses), so a failed db.login alone does not hide where it is
            add("migrations.current", "database at the migration head", migrations.current,
                ["net.tcp", "migrations.heads"], timeout=db_timeout)
            add("migrations.last-job", "last migration job succeeded", migrations.last_job, [CREDENTIALS])
    add("run.ready", "Cloud Run service Ready", cloudrun.ready, [CREDENTIALS])
    add("run.revision", "serving revision healthy", cloudrun.revision, ["run.ready"])
    add("run.pinned-secrets", "secret versions pinned by the revision still enabled", cloudrun.pinned_secrets,
        ["run.ready"])
    add("run.health", "health endpoints answer in time", cloudrun.health, ["run.ready"],
        timeout=max(cloud_timeout, f.probe_timeout * len(svc.health) + 2))
    return out


def build(f: Facts, services: list[str], *, in_vpc: bool = False) -> list[Check]:
    cloud_timeout = 30.0
    # one TCP connect, the candidates' logins in parallel, the stored string, the session: each bounded
    db_timeout = f.probe_timeout * 4 + 2
    if in_vpc:
        db_timeout = vpcjob.budget(f.probe_timeout)  # a Cloud Run Job: create or update, run, read its logs
    checks = environment_checks(cloud_timeout, local_cloud=f.ctx.config.environment.emulator)
    for s in services:
        checks += service_checks(f, s, cloud_timeout=cloud_timeout, db_timeout=db_timeout)
    if not in_vpc:
        for c in checks:  # TCP alone should fail fast on a dead address, not after the whole db budget
            if c.id == "net.tcp":
                c.timeout = f.probe_timeout + 2
    return checks
