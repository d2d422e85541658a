"""Where a service's database is: the config's database entry joined with its instance, the instance's private
IP (from the config, or asked of the Cloud SQL Admin API where the config leaves it out, as for the local cloud),
and the password from Secret Manager. dsn, migrate, doctor and status all resolve a database through here."""

from __future__ import annotations

from dataclasses import dataclass

from deployctl.context import Context
from deployctl.errors import ConfigError


@dataclass(frozen=True)
class DatabaseTarget:
    service: str
    instance_key: str
    instance_name: str
    connection_name: str
    host: str | None
    configured_ip: str | None  # what the config says (None: not given)
    port: int
    database: str
    user: str
    password_secret: str
    url_secret: str | None
    ssl: str
    driver: str
    mode: str
    ip_type: str
    iam_auth: bool


def resolve(ctx: Context, service: str, *, ask_admin: bool = True) -> DatabaseTarget:
    cfg = ctx.config
    svc = cfg.service(service)
    if svc.database is None:
        raise ConfigError(f"service {service!r} has no database",
                          hint=f"add [services.{service}.database] to {cfg.path}")
    db = svc.database
    inst = cfg.instances[db.instance]
    host = inst.private_ip if db.ip_type == "private" else inst.public_ip
    if host is None and ask_admin and db.mode == "direct":
        from deployctl.cloud.sqladmin import SqlAdmin

        live = SqlAdmin(ctx.clients, ctx.project).get_instance(inst.name)
        host = live.private_ip if db.ip_type == "private" else live.public_ip
    return DatabaseTarget(service=service, instance_key=db.instance, instance_name=inst.name,
                          connection_name=inst.connection_name, host=host, configured_ip=inst.private_ip,
                          port=inst.port, database=db.name, user=db.user, password_secret=db.password_secret,
                          url_secret=db.url_secret, ssl=inst.ssl, driver=db.driver, mode=db.mode,
                          ip_type=db.ip_type, iam_auth=db.iam_auth)


def with_database(ctx: Context, names: list[str] | None) -> list[str]:
    """The named services (or all), keeping those that have a database."""
    chosen = ctx.config.select(names)
    return [n for n in chosen if ctx.config.services[n].database is not None]


def database_url(ctx: Context, service: str, *, driver: str | None = None) -> str:
    """The service's DSN built from the config and its password secret (what `deployctl dsn` prints)."""
    from deployctl.cloud.secrets import SecretStore

    target = resolve(ctx, service)
    password = SecretStore(ctx.clients, ctx.project).access(
        target.password_secret, config_ref=f"services.{service}.database.password_secret")
    return build_dsn(target, password.text, driver=driver).url


def pieces_env(target: DatabaseTarget) -> dict[str, str]:
    """The DB_* variables deployctl.runtime.database_url_from_env composes a DSN from, where no url_secret is
    stored (the password goes separately, as the secret DB_PASSWORD)."""
    env = {"DB_NAME": target.database, "DB_USER": target.user, "DB_DRIVER": target.driver}
    if target.mode == "connector":
        env.update(INSTANCE_CONNECTION_NAME=target.connection_name, DB_IP_TYPE=target.ip_type)
        if target.iam_auth:  # IAM database login: no password, the connector gets the token
            env["DB_IAM_AUTH"] = "true"
    else:
        env.update(DB_HOST=target.host or "", DB_PORT=str(target.port), DB_SSLMODE=target.ssl)
    return env


def build_dsn(target: DatabaseTarget, password: str, *, driver: str | None = None):
    from deployctl import dsn

    if target.mode == "connector":
        return dsn.build(driver=driver or target.driver, user=target.user, password=password,
                         database=target.database, instance_connection_name=target.connection_name,
                         ip_type=target.ip_type, iam_auth=target.iam_auth)
    if not target.host:
        raise ConfigError(f"no {target.ip_type} IP known for instance {target.instance_name}",
                          hint=f"set private_ip in [instances.{target.instance_key}]")
    return dsn.build(driver=driver or target.driver, user=target.user, password=password,
                     database=target.database, host=target.host, port=target.port, sslmode=target.ssl)
