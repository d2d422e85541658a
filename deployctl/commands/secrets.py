"""`deployctl secrets list|get|set|versions`: Secret Manager, with values masked unless asked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from pydantic import BaseModel

from deployctl import redact, views
from deployctl.context import Context
from deployctl.errors import AlreadyExists, UsageError
from deployctl.results import Result

MAX_PARALLEL = 8  # Secret Manager calls at once


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


class GetResult(Result):
    schema_name: ClassVar[str] = "secrets/get"
    id: str
    version: int
    length: int
    fingerprint: str
    trailing_newline: bool
    value: str | None = None  # only with --reveal
    revealed: bool = False

    def view(self) -> list[views.Block]:
        if self.revealed and self.value is not None:
            return [views.Revealed(self.value)]
        blocks: list[views.Block] = [views.Fields(
            [("version", self.version), ("value", f"{redact.MASK} ({self.length} bytes, {self.fingerprint})")],
            title=self.id)]
        if self.trailing_newline:
            blocks.append(views.Line("the value ends with a newline (added with --data-file?): programs that "
                                     "use it as a password will fail; store it again without one", "warn"))
        return blocks


class SetResult(Result):
    schema_name: ClassVar[str] = "secrets/set"
    id: str
    version: int
    created_secret: bool
    fingerprint: str

    def view(self) -> list[views.Block]:
        made = " (new secret)" if self.created_secret else ""
        return [views.Line(f"{self.id}: added version {self.version}{made}, {self.fingerprint}", "ok")]


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


def versions(ctx: Context, secret_id: str) -> VersionsResult:
    vs = _store(ctx).versions(secret_id)
    return VersionsResult(id=secret_id, versions=[
        VersionRow(number=v.number, state=v.state, created=v.create_time.isoformat() if v.create_time else None)
        for v in sorted(vs, key=lambda v: v.number)])


def get(ctx: Context, secret_id: str, version: str = "latest", reveal: bool = False) -> GetResult:
    value = _store(ctx).access(secret_id, version)
    text = value.data.decode("utf-8", "replace")
    return GetResult(id=secret_id, version=value.version, length=len(value.data), fingerprint=value.fingerprint,
                     trailing_newline=value.has_trailing_newline, value=text if reveal else None, revealed=reveal)


def set_value(ctx: Context, secret_id: str, data: bytes) -> SetResult:
    from deployctl.cloud.secrets import SECRET_ID

    if not SECRET_ID.fullmatch(secret_id):
        raise UsageError(f"invalid secret id {secret_id!r}",
                         hint="use 1-255 letters, digits, '-' or '_'")
    if not data:
        raise UsageError("refusing to store an empty value", hint="pipe the value on stdin or use --from-file")
    if len(data) > 64 * 1024:
        raise UsageError(f"the value is {len(data)} bytes; Secret Manager takes at most 65536",
                         hint="store a smaller value (or a reference to where the data lives)")
    redact.register(data)
    store = _store(ctx)
    try:
        store.create_secret(secret_id)
        created = True
    except AlreadyExists:
        created = False
    added = store.add_version(secret_id, data)
    return SetResult(id=secret_id, version=added.number, created_secret=created,
                     fingerprint=redact.fingerprint(data))
