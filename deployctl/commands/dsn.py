"""`deployctl dsn [SERVICE...]`: each service's connection string, built right (encoded, SSL, per driver),
masked unless --reveal; `--write-secret` stores it as a new version of the service's url_secret; the string
stored there now is linted alongside. `deployctl dsn lint [SERVICE]`: lint a connection string from stdin."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.context import Context
from deployctl.errors import ConfigError, DeployctlError, ExitCode, NotFound, UsageError
from deployctl.results import Result


class FindingOut(BaseModel):
    code: str
    severity: str
    message: str
    hint: str


class ServiceDsn(BaseModel):
    service: str
    driver: str
    url: str  # masked unless revealed
    connect_args: dict[str, str]  # what create_engine needs beside the URL, in words
    notes: list[str] = []  # what the URL cannot carry for this driver, and where it goes instead
    password_secret: str
    password_version: int
    url_secret: str | None
    stored_version: int | None = None
    stored_findings: list[FindingOut] = []
    stored_matches: bool | None = None  # the stored string equals the one built now
    stored_skipped: str | None = None  # why the stored string was not compared (another driver)
    written_version: int | None = None


class DsnResult(Result):
    schema_name: ClassVar[str] = "dsn"
    services: list[ServiceDsn]
    revealed: bool = False

    def exit_code(self) -> ExitCode:
        bad = any(f.severity == "error" for s in self.services for f in s.stored_findings)
        return ExitCode.FAILED if bad else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f"dsn-{f.code}", "message": f"{s.service}: {f.message}", "hint": f.hint}
                for s in self.services for f in s.stored_findings if f.severity == "error"]

    def view(self) -> list[views.Block]:
        if self.revealed:
            # One service: the URL alone and exactly, through a pipe (a newline is added on a terminal only): piped
            # into `dsn lint` or `gcloud secrets versions add --data-file=-` it is no trailing newline to store.
            # Several: "SERVICE URL" per line (URLs hold no spaces).
            if len(self.services) == 1:
                return [views.Revealed(self.services[0].url)]
            return [views.Revealed("".join(f"{s.service} {s.url}\n" for s in self.services))]
        blocks: list[views.Block] = []
        for s in self.services:
            items: list[tuple[str, views.CellLike]] = [
                ("url", s.url), ("driver", s.driver),
                ("connect_args", ", ".join(f"{k}={v}" for k, v in s.connect_args.items()) or "-"),
                ("password", f"secret {s.password_secret} v{s.password_version}")]
            items += [("note", views.dim(n)) for n in s.notes]
            if s.url_secret:
                items.append(("stored", _stored(s)))
            blocks.append(views.Fields(items, title=s.service))
            for f in s.stored_findings:
                blocks.append(views.Line(f"  {f.severity}: {f.code}: {f.message}", "fail" if f.severity ==
                                         "error" else "warn"))
                blocks.append(views.Line(f"    next: {f.hint}", "dim"))
        return blocks


def _stored(s: ServiceDsn) -> views.Cell:
    if s.written_version:
        return views.ok(f"wrote {s.url_secret} v{s.written_version}")
    if s.stored_skipped:
        return views.dim(s.stored_skipped)
    if s.stored_version is None:
        return views.warn(f"{s.url_secret}: no version yet (use --write-secret)")
    same = "same as built" if s.stored_matches else "differs from the one built now"
    style = "ok" if s.stored_matches and not s.stored_findings else "warn"
    return views.Cell(f"{s.url_secret} v{s.stored_version}: {same}", style)


def _describe(connect_args: dict) -> dict[str, str]:
    """connect_args in words: an SSLContext says what it checks, not its type."""
    import ssl

    from deployctl import runtime

    out = {}
    for k, v in connect_args.items():
        if k not in ("ssl_context", "ssl") or isinstance(v, str):
            out[k] = str(v)
        elif v is False:
            out[k] = "off (disable)"
        elif v is None:
            out[k] = "opportunistic, unverified (prefer)"
        elif runtime.is_unverified(v) or (isinstance(v, ssl.SSLContext) and v.verify_mode == ssl.CERT_NONE):
            out[k] = "required, certificate not checked (require)"
        elif isinstance(v, ssl.SSLContext) and v.check_hostname:
            out[k] = "verified: CA and host name (verify-full)"
        else:
            out[k] = "verified: CA (verify-ca)"
    return out


def _trailing_newline(service: str, secret: str, version: int) -> DeployctlError:
    # DESIGN §6: detect and warn, never strip silently. The newline would become %0A in the password, and the
    # login fails (28P01); writing such a DSN would replace a working url_secret with a broken one.
    return DeployctlError(
        f"{service}: the password in secret {secret} (version {version}) ends with a newline, so no connection "
        "string is built or written from it (it would carry %0A and the login would fail with 28P01)",
        hint=f"store it without the newline: printf '%s' 'THE-PASSWORD' | deployctl secrets set {secret} (or "
             f"deployctl secrets get {secret} --reveal | deployctl secrets set {secret} --strip-newline); or let "
             f"doctor find which value the database holds and repair it: deployctl doctor {service} --fix",
        code="password-trailing-newline")


def show(ctx: Context, services: list[str] | None = None, driver: str | None = None, reveal: bool = False,
         write_secret: bool = False) -> DsnResult:
    from deployctl import dbtarget, dsn
    from deployctl.cloud.secrets import SecretStore

    if driver is not None and driver not in dsn.DRIVERS:
        raise UsageError(f"unknown driver {driver!r}", hint=f"use one of: {', '.join(dsn.DRIVERS)}")
    names = dbtarget.with_database(ctx, services)
    if not names:
        with_db = dbtarget.with_database(ctx, None)
        what = (f"{', '.join(services)} {'has' if len(services) == 1 else 'have'} no database (no "
                f"[services.NAME.database] in the config), so there is no connection string" if services
                else "no service of this environment has a database")
        raise UsageError(what, hint=f"name one that has: {', '.join(with_db)}" if with_db
                         else "add [services.NAME.database] to the config")
    store = SecretStore(ctx.clients, ctx.project)
    out = []
    for name in names:
        target = dbtarget.resolve(ctx, name)
        other_driver = driver is not None and driver != target.driver
        if write_secret and not target.url_secret:
            raise ConfigError(f"service {name!r} has no url_secret to write to",
                              hint=f"set url_secret in [services.{name}.database]")
        if write_secret and other_driver:
            raise UsageError(
                f"{name}: --driver {driver} is not the service's driver ({target.driver}); its url_secret "
                f"{target.url_secret} is read with {target.driver}, so a {driver} URL is not written there",
                hint=f"drop --driver to write the {target.driver} URL, or first set driver = \"{driver}\" in "
                     f"[services.{name}.database]")
        password = store.access(target.password_secret, config_ref=f"services.{name}.database.password_secret")
        if password.has_trailing_newline:
            raise _trailing_newline(name, target.password_secret, password.version)
        built = dbtarget.build_dsn(target, password.text, driver=driver)
        entry = ServiceDsn(service=name, driver=built.driver, url=built.url if reveal else built.masked,
                           connect_args=_describe(built.connect_args), notes=list(built.notes),
                           password_secret=target.password_secret, password_version=password.version,
                           url_secret=target.url_secret)
        if target.url_secret and other_driver:
            entry.stored_skipped = (f"{target.url_secret} not compared: it holds the service's {target.driver} "
                                    f"URL, this one is for {driver}")
        elif target.url_secret:
            _compare_stored(store, target, built, entry)
            if write_secret and not entry.stored_matches:
                store.create_secret(target.url_secret, exist_ok=True)
                entry.written_version = store.add_version(target.url_secret, built.url).number
                entry.stored_findings = []
        out.append(entry)
    return DsnResult(services=out, revealed=reveal)


def _compare_stored(store, target, built, entry: ServiceDsn) -> None:
    from deployctl import dsn

    try:
        stored = store.access(target.url_secret)
    except NotFound:
        return
    entry.stored_version = stored.version
    entry.stored_matches = stored.data == built.url.encode()
    findings = dsn.lint(stored.data.decode("utf-8", "replace"), private_ip=target.host, via_runtime=True)
    entry.stored_findings = [FindingOut(code=f.code, severity=f.severity, message=f.message,
                                        hint=f.hint.replace("SERVICE", target.service)) for f in findings]


class LintResult(Result):
    schema_name: ClassVar[str] = "dsn/lint"
    url: str  # masked
    service: str | None
    findings: list[FindingOut]

    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if any(f.severity == "error" for f in self.findings) else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f"dsn-{f.code}", "message": f.message, "hint": f.hint}
                for f in self.findings if f.severity == "error"]

    def view(self) -> list[views.Block]:
        blocks: list[views.Block] = [views.Fields([("url", self.url)])]
        if not self.findings:
            blocks.append(views.Line("no problems found", "ok"))
        for f in self.findings:
            blocks.append(views.Line(f"{f.severity}: {f.code}: {f.message}", "fail" if f.severity == "error"
                                     else "warn"))
            blocks.append(views.Line(f"  next: {f.hint}", "dim"))
        return blocks


def lint_value(ctx: Context, data: bytes, service: str | None = None) -> LintResult:
    """Lint a connection string a person hands us; with SERVICE, against its instance's IP and its driver
    (and as consumed through deployctl.runtime, which translates libpq's words)."""
    from deployctl import dbtarget, dsn

    text = data.decode("utf-8", "surrogateescape")
    dbtarget.register_url(text)  # the value, its password and every piece a parser may cut it into
    if not text.strip():
        raise UsageError("no connection string on stdin", hint="deployctl dsn lint [SERVICE] < url.txt")
    kwargs: dict = {}
    if service:
        target = dbtarget.resolve(ctx, service, ask_admin=False)
        kwargs = {"private_ip": target.configured_ip, "driver_hint": target.driver, "via_runtime": True}
        if target.configured_ip is None and target.mode == "direct":
            kwargs["private_ip"] = dbtarget.resolve(ctx, service).host  # the live IP (the local cloud's)
    findings = [FindingOut(code=f.code, severity=f.severity, message=f.message,
                           hint=f.hint.replace("SERVICE", service or "SERVICE"))
                for f in dsn.lint(text, **kwargs)]
    return LintResult(url=dsn.mask(text.rstrip("\r\n")), service=service, findings=findings)
