"""`deployctl dsn [SERVICE...]`: each service's connection string, built right (encoded, SSL, per driver),
masked unless --reveal; `--write-secret` stores it as a new version of the service's url_secret; the string
stored there now is linted alongside."""

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
    connect_args: dict[str, str]
    password_secret: str
    password_version: int
    url_secret: str | None
    stored_version: int | None = None
    stored_findings: list[FindingOut] = []
    stored_matches: bool | None = None  # the stored string equals the one built now
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
            return [views.Revealed("\n".join(s.url for s in self.services))]
        blocks: list[views.Block] = []
        for s in self.services:
            items: list[tuple[str, views.CellLike]] = [
                ("url", s.url), ("driver", s.driver),
                ("connect_args", ", ".join(f"{k}={v}" for k, v in s.connect_args.items()) or "-"),
                ("password", f"secret {s.password_secret} v{s.password_version}")]
            if s.url_secret:
                if s.written_version:
                    items.append(("stored", views.ok(f"wrote {s.url_secret} v{s.written_version}")))
                elif s.stored_version is None:
                    items.append(("stored", views.warn(f"{s.url_secret}: no version yet (use --write-secret)")))
                else:
                    same = "same as built" if s.stored_matches else "differs from the one built now"
                    style = "ok" if s.stored_matches and not s.stored_findings else "warn"
                    items.append(("stored", views.Cell(f"{s.url_secret} v{s.stored_version}: {same}", style)))
            blocks.append(views.Fields(items, title=s.service))
            for f in s.stored_findings:
                blocks.append(views.Line(f"  {f.severity}: {f.code}: {f.message}", "fail" if f.severity ==
                                         "error" else "warn"))
                blocks.append(views.Line(f"    next: {f.hint}", "dim"))
        return blocks


def _describe(connect_args: dict) -> dict[str, str]:
    out = {}
    for k, v in connect_args.items():
        out[k] = type(v).__name__ if k in ("ssl_context", "ssl") and not isinstance(v, bool) else str(v)
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

    names = dbtarget.with_database(ctx, services)
    if not names:
        raise UsageError("no service with a database was selected",
                         hint="name a service that has [services.NAME.database]")
    store = SecretStore(ctx.clients, ctx.project)
    out = []
    for name in names:
        target = dbtarget.resolve(ctx, name)
        password = store.access(target.password_secret, config_ref=f"services.{name}.database.password_secret")
        if password.has_trailing_newline:
            raise _trailing_newline(name, target.password_secret, password.version)
        built = dbtarget.build_dsn(target, password.text, driver=driver)
        entry = ServiceDsn(service=name, driver=built.driver, url=built.url if reveal else built.masked,
                           connect_args=_describe(built.connect_args), password_secret=target.password_secret,
                           password_version=password.version, url_secret=target.url_secret)
        if target.url_secret:
            try:
                stored = store.access(target.url_secret)
                entry.stored_version = stored.version
                entry.stored_matches = stored.data == built.url.encode()
                entry.stored_findings = [FindingOut(**f.__dict__) for f in dsn.lint(
                    stored.data.decode("utf-8", "replace"), private_ip=target.host, via_runtime=True)]
            except NotFound:
                pass
            if write_secret and not entry.stored_matches:
                store.create_secret(target.url_secret, exist_ok=True)
                entry.written_version = store.add_version(target.url_secret, built.url).number
                entry.stored_findings = []
        elif write_secret:
            raise ConfigError(f"service {name!r} has no url_secret to write to",
                              hint=f"set url_secret in [services.{name}.database]")
        out.append(entry)
    return DsnResult(services=out, revealed=reveal)
