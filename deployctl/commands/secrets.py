"""`deployctl secrets list|get|set|versions`: Secret Manager, with values masked unless asked."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from pydantic import BaseModel, Field

from deployctl import redact, views
from deployctl.context import Context
from deployctl.errors import AlreadyExists, DeployctlError, NotFound, UsageError
from deployctl.results import Result

MAX_PARALLEL = 8  # Secret Manager calls at once
_VERSION = re.compile(r"latest|[1-9][0-9]{0,18}")  # a version number fits Secret Manager's int64


def _store(ctx: Context):
    from deployctl.cloud.secrets import SecretStore

    return SecretStore(ctx.clients, ctx.project)


def _referenced_by(ctx: Context) -> dict[str, list[str]]:
    """secret id -> the config entries that use it (so a listing says why a secret exists)."""
    refs: dict[str, list[str]] = {}
    for name, svc in ctx.config.services.items():
        for env_name, ref in svc.secrets.items():
            refs.setdefault(ref.split(":", 1)[0], []).append(f"{name}.secrets.{env_name}")
        if svc.database:
            refs.setdefault(svc.database.password_secret, []).append(f"{name}.database.password_secret")
            if svc.database.url_secret:
                refs.setdefault(svc.database.url_secret, []).append(f"{name}.database.url_secret")
    return refs


class SecretRow(BaseModel):
    id: str
    latest: int | None
    latest_state: str | None
    versions: int
    used_by: list[str]


class ListResult(Result):
    schema_name: ClassVar[str] = "secrets/list"
    secrets: list[SecretRow]
    missing: list[str]  # referenced by the config but absent

    def view(self) -> list[views.Block]:
        rows = [[s.id, str(s.latest) if s.latest else views.warn("none"), s.latest_state or "-", s.versions,
                 ", ".join(s.used_by) or views.dim("unused")] for s in self.secrets]
        rows += [[m, views.fail("missing"), "-", 0, ""] for m in self.missing]
        return [views.Table(["secret", "latest", "state", "versions", "used by"], rows)]


class VersionRow(BaseModel):
    number: int
    state: str
    created: str | None


class VersionsResult(Result):
    schema_name: ClassVar[str] = "secrets/versions"
    id: str
    versions: list[VersionRow]

    def view(self) -> list[views.Block]:
        style = {"ENABLED": "ok", "DISABLED": "warn", "DESTROYED": "dim"}
        return [views.Table(["version", "state", "created"],
                            [[v.number, views.Cell(v.state, style.get(v.state, "")), v.created or "-"]
                             for v in self.versions], title=self.id)]


class WarningOut(BaseModel):
    code: str
    message: str
    hint: str


def _newline_warning(secret_id: str, stored: bool) -> WarningOut:
    # DESIGN §6: a trailing newline is detected and reported, never stripped silently.
    what = "the value stored" if stored else "the value"
    return WarningOut(
        code="trailing-newline",
        message=f"{what} ends with a newline (echo, a file, `--data-file`): used as a password or a connection "
                "string it will not match",
        hint=f"to store it without: deployctl secrets set {secret_id} --strip-newline (or printf '%s' ... | "
             "deployctl secrets set ...); keep it only if the newline belongs to the value")


def _warning_notes(warnings: list[WarningOut]) -> list[views.Block]:
    return [note for w in warnings
            for note in (views.Note(f"warning: {w.message}"), views.Note(f"  next: {w.hint}", "dim"))]


class GetResult(Result):
    schema_name: ClassVar[str] = "secrets/get"
    id: str
    version: int
    length: int
    fingerprint: str
    trailing_newline: bool
    warnings: list[WarningOut] = []
    value: str | None = None  # only with --reveal
    data: bytes | None = Field(None, exclude=True)  # the exact bytes, for --reveal off a terminal
    revealed: bool = False

    def view(self) -> list[views.Block]:
        if self.revealed and self.value is not None:
            return [views.Revealed(self.value, data=self.data), *_warning_notes(self.warnings)]
        return [views.Fields(
            [("version", self.version), ("value", f"{redact.MASK} ({self.length} bytes, {self.fingerprint})")],
            title=self.id), *_warning_notes(self.warnings)]


class SetResult(Result):
    schema_name: ClassVar[str] = "secrets/set"
    id: str
    version: int
    created_secret: bool
    fingerprint: str
    length: int
    trailing_newline: bool
    stripped_newline: bool = False
    warnings: list[WarningOut] = []

    def view(self) -> list[views.Block]:
        made = " (new secret)" if self.created_secret else ""
        stripped = ", trailing newline removed" if self.stripped_newline else ""
        return [views.Line(f"{self.id}: added version {self.version}{made}, {self.length} bytes{stripped}, "
                           f"{self.fingerprint}", "ok"), *_warning_notes(self.warnings)]


def list_secrets(ctx: Context) -> ListResult:
    store = _store(ctx)
    refs = _referenced_by(ctx)
    secrets = store.list_secrets()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(secrets) or 1)) as pool:  # one call per secret
        listed = list(pool.map(lambda s: store.versions(s.id), secrets))
    rows = []
    for s, versions in zip(secrets, listed, strict=True):
        latest = max(versions, key=lambda v: v.number, default=None)
        rows.append(SecretRow(id=s.id, latest=latest.number if latest else None,
                              latest_state=latest.state if latest else None, versions=len(versions),
                              used_by=refs.get(s.id, [])))
    present = {r.id for r in rows}
    return ListResult(secrets=rows, missing=sorted(set(refs) - present))


def _check_id(secret_id: str) -> None:
    """Usage errors before any call: a '/' would be spliced into the resource name (B8)."""
    from deployctl.cloud.secrets import SECRET_ID

    if not SECRET_ID.fullmatch(secret_id):
        raise UsageError(f"invalid secret id {secret_id!r}: a secret id is 1-255 letters, digits, '-' or '_'",
                         hint="e.g. fiat-gateway-db-password; `deployctl secrets list` shows them")


def _check_version(version: str) -> None:
    if not _VERSION.fullmatch(version):
        raise UsageError(f"invalid version {version!r}: a version is 'latest' or a number from 1",
                         hint="`deployctl secrets versions SECRET` lists them")


def _not_found(ctx: Context, store, secret_id: str, version: str | None, error: NotFound) -> NotFound:
    """What is missing, the secret or the version, and the command that goes on from there (the API's own 'was not
    found: Secret [...] not found.' said 'check the name, or create it')."""
    try:
        store.get_secret(secret_id)
    except NotFound:
        return NotFound(f"no secret {secret_id!r} in project {ctx.project}", details=error.details,
                        hint=f"`deployctl secrets list` shows the secrets; `deployctl secrets set {secret_id} "
                             "--from-file FILE` (or the value on stdin) creates it")
    except DeployctlError:  # the call that failed says enough
        return error
    if version is None:
        return error
    return NotFound(f"secret {secret_id} has no version {version}", details=error.details,
                    hint=f"`deployctl secrets versions {secret_id}` lists them")


def versions(ctx: Context, secret_id: str) -> VersionsResult:
    _check_id(secret_id)
    store = _store(ctx)
    try:
        vs = store.versions(secret_id)
    except NotFound as e:
        raise _not_found(ctx, store, secret_id, None, e) from None
    return VersionsResult(id=secret_id, versions=[
        VersionRow(number=v.number, state=v.state, created=v.create_time.isoformat() if v.create_time else None)
        for v in sorted(vs, key=lambda v: v.number)])


def get(ctx: Context, secret_id: str, version: str = "latest", reveal: bool = False) -> GetResult:
    _check_id(secret_id)
    _check_version(version)
    store = _store(ctx)
    try:
        value = store.access(secret_id, version)
    except NotFound as e:
        raise _not_found(ctx, store, secret_id, version, e) from None
    text = value.data.decode("utf-8", "replace")
    warnings = [_newline_warning(secret_id, stored=True)] if value.has_trailing_newline else []
    return GetResult(id=secret_id, version=value.version, length=len(value.data), fingerprint=value.fingerprint,
                     trailing_newline=value.has_trailing_newline, warnings=warnings,
                     value=text if reveal else None, data=value.data if reveal else None, revealed=reveal)


def set_value(ctx: Context, secret_id: str, data: bytes, strip_newline: bool = False) -> SetResult:
    _check_id(secret_id)
    redact.register(data)
    stripped = strip_newline and data.endswith((b"\n", b"\r"))
    if stripped:
        data = data.rstrip(b"\r\n")
    if not data:
        raise UsageError("refusing to store an empty value", hint="pipe the value on stdin or use --from-file")
    if len(data.decode("utf-8", "surrogateescape").strip()) < redact.MIN_LENGTH:
        # redact.py cannot mask shorter values (they would mask ordinary words), so they could appear in output
        raise UsageError(f"refusing to store a value shorter than {redact.MIN_LENGTH} characters: deployctl "
                         "could not keep it out of its output (and it is easy to guess)",
                         hint=f"store a longer value (at least {redact.MIN_LENGTH} characters)")
    if len(data) > 64 * 1024:
        raise UsageError(f"the value is {len(data)} bytes; Secret Manager takes at most 65536",
                         hint="store a smaller value (or a reference to where the data lives)")
    store = _store(ctx)
    try:
        store.create_secret(secret_id)
        created = True
    except AlreadyExists:
        created = False
    added = store.add_version(secret_id, data)
    newline = data.endswith((b"\n", b"\r"))
    return SetResult(id=secret_id, version=added.number, created_secret=created, fingerprint=redact.fingerprint(data),
                     length=len(data), trailing_newline=newline, stripped_newline=stripped,
                     warnings=[_newline_warning(secret_id, stored=False)] if newline else [])
