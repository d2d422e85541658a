"""Where a service's database is: the config's database entry joined with its instance, the instance's private
IP (from the config, or asked of the Cloud SQL Admin API where the config leaves it out, as for the local cloud),
and the password from Secret Manager. dsn, migrate, doctor and status all resolve a database through here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from deployctl import redact
from deployctl.context import Context
from deployctl.errors import ConfigError, NotFound


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
    # The instance's server CA for verify-ca / verify-full: as configured (relative to the project root, which
    # is the image's WORKDIR: what a DSN stored for Cloud Run names) and resolved here (for our own logins).
    server_ca: str | None = None
    server_ca_here: str | None = None


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
                          ip_type=db.ip_type, iam_auth=db.iam_auth,
                          server_ca=str(inst.server_ca) if inst.server_ca else None,
                          server_ca_here=str(cfg.resolve(inst.server_ca)) if inst.server_ca else None)


def with_database(ctx: Context, names: list[str] | None) -> list[str]:
    """The named services (or all), keeping those that have a database."""
    chosen = ctx.config.select(names)
    return [n for n in chosen if ctx.config.services[n].database is not None]


@dataclass(frozen=True, repr=False)
class Credential:
    """The one login migrate uses for its status read, the local runner and the job: the url_secret's latest
    version when one is configured and stored, else the config's pieces with the password secret's latest."""

    url: str  # the DSN (holds the password)
    secret: str  # the secret it came from
    version: int
    kind: str  # "url" (the stored connection string) | "pieces" (built from the config and password_secret)

    @property
    def source(self) -> str:
        return f"{self.secret} v{self.version}"

    def __repr__(self) -> str:
        return f"Credential({self.kind}, {self.source})"


def credential(ctx: Context, service: str, *, on_warning=None) -> Credential:
    """Read (and register) the service's credential; a stored connection string is linted first, and one that
    would misparse or cannot work raises DsnError naming the secret's version and the repair, before any
    connection is attempted (a raw '@' in it puts password text into the driver's error messages).
    `on_warning(message)` hears when a configured url_secret has no version and the pieces are used, and when
    the stored string ends with a newline (ignored, as deployctl.runtime does: the caller says so)."""
    from deployctl.cloud.secrets import SecretStore

    target = resolve(ctx, service, ask_admin=False)
    store = SecretStore(ctx.clients, ctx.project)
    if target.url_secret:
        try:
            stored = store.access(target.url_secret, config_ref=f"services.{service}.database.url_secret")
        except NotFound:
            stored = None
            if on_warning:
                on_warning(f"{target.url_secret} has no readable version; using the config's pieces and "
                            f"{target.password_secret}")
        if stored is not None:
            text = stored.data.decode("utf-8", "surrogateescape")
            label = f"{target.url_secret} v{stored.version}"
            register_url(text)
            check_stored_url(service, target, text, label)
            if on_warning and text != text.rstrip("\r\n"):
                on_warning(f"{label} ends with a newline; it was ignored (as deployctl.runtime does), every other "
                           f"reader fails: deployctl doctor {service} --fix stores it without")
            return Credential(text.rstrip("\r\n"), target.url_secret, stored.version, "url")
    password = store.access(target.password_secret, config_ref=f"services.{service}.database.password_secret")
    if target.host is None and target.mode == "direct":
        target = resolve(ctx, service)  # only now is the live IP worth an admin call
    return Credential(build_dsn(target, password.text, here=True).url, target.password_secret, password.version,
                      "pieces")


def register_url(text: str) -> None:
    """Register a stored connection string and its password in every shape a parser may cut it into
    (dsn.register_url: a raw '@' or ':' makes parsers disagree where the password ends, so a driver's error can
    quote a piece of it as a host name or a port)."""
    from deployctl import dsn

    redact.register(text)
    dsn.register_url(text)


def check_stored_url(service: str, target: DatabaseTarget, text: str, label: str) -> None:
    """dsn.lint's errors for a stored connection string as one DsnError with the repair. A trailing newline
    is left to deployctl.runtime (which warns and ignores it) and to doctor's secret check."""
    from deployctl import dsn

    findings = dsn.lint(text, private_ip=target.host or target.configured_ip, driver_hint=target.driver,
                        via_runtime=True)
    errors = [f for f in findings if f.severity == "error" and f.code != "trailing-newline"]
    if errors:
        first = errors[0]
        hint = first.hint.replace("SERVICE", service)
        title = LINT_TITLES.get(first.code, "malformed")
        raise dsn.DsnError(f"{label} cannot be used: {title} ({first.code}): {first.message}",
                           hint=f"{hint} (or deployctl doctor {service} --fix)", code=f"dsn-{first.code}")


LINT_TITLES = {"sslmode-disabled": "SSL required", "sslmode-invalid": "unknown sslmode",
               "unencoded-reserved": "password or user not percent-encoded", "bad-scheme": "not a PostgreSQL URL",
               "host-mismatch": "not the instance's address"}


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
        if target.server_ca:
            env["DB_SSLROOTCERT"] = target.server_ca
    return env


def build_dsn(target: DatabaseTarget, password: str, *, driver: str | None = None, here: bool = False):
    """The DSN for the target; `here=True` names the server CA by its path on this machine (for deployctl's own
    logins), otherwise as configured (for a DSN stored in Secret Manager and read inside the image)."""
    from deployctl import dsn

    if target.mode == "connector":
        return dsn.build(driver=driver or target.driver, user=target.user, password=password,
                         database=target.database, instance_connection_name=target.connection_name,
                         ip_type=target.ip_type, iam_auth=target.iam_auth)
    if not target.host:
        raise ConfigError(f"no {target.ip_type} IP known for instance {target.instance_name}",
                          hint=f"set private_ip in [instances.{target.instance_key}]")
    built = dsn.build(driver=driver or target.driver, user=target.user, password=password,
                      database=target.database, host=target.host, port=target.port, sslmode=target.ssl,
                      sslrootcert=target.server_ca_here)
    if here and built.driver == "asyncpg" and target.server_ca_here:
        # deployctl's own logins (migrate status, the local runner) read an asyncpg URL through pg8000, which
        # takes the CA from the URL; asyncpg itself would take PGSSLROOTCERT (dsn.build's note)
        url = f"{built.url}&sslrootcert={quote(target.server_ca_here, safe='/')}"
        return dataclasses.replace(built, url=url, masked=dsn.mask(url))
    if here or target.server_ca == target.server_ca_here:
        return built
    # The driver arguments need the CA file here; the stored string names it as configured.
    url = _name_server_ca(built.url, target.server_ca)
    return dataclasses.replace(built, url=url, masked=dsn.mask(url))


def _name_server_ca(url: str, path: str) -> str:
    parts = urlsplit(url)
    query = [(k, path if k == "sslrootcert" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="/")))
