"""The two integration points with the migration engine, each in one function: run a service's pending
migrations before its rollout, and read its migration status for `deployctl status`.

Both use deployctl.migration.* when that package exists (imported lazily) and say clearly when they cannot.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from deployctl.context import Context


@dataclass(frozen=True)
class MigrationOutcome:
    ran: bool
    message: str  # e.g. "skipped (no database)", "2 applied"


@dataclass(frozen=True)
class MigrationStatus:
    state: str  # "n/a" | "at-head" | "pending" | "unknown"
    current: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    reason: str = ""

    def describe(self) -> str:
        if self.state == "n/a":
            return "N/A"
        if self.state == "unknown":
            return f"unknown: {self.reason}"
        cur, head = ",".join(self.current) or "base", ",".join(self.heads) or "none"
        if self.state == "at-head":
            return f"{cur} (at head)"
        return f"{cur} → {head} ({len(self.pending)} pending)"


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):  # the module itself is missing, not one of its imports
            return None
        raise


def run_pending(ctx: Context, service: str) -> MigrationOutcome:
    """Apply the service's pending migrations (through deployctl.migration.runner) before its new revision."""
    svc = ctx.config.service(service)
    if svc.database is None or svc.database.migrations is None:
        return MigrationOutcome(False, "skipped (no database)" if svc.database is None else
                                "skipped (no migrations directory configured)")
    runner = _optional("deployctl.migration.runner")
    if runner is None:
        return MigrationOutcome(False, "skipped (the migration runner is not available in this build)")
    result = runner.run_pending(ctx, service)
    if not _field(result, "ok", True):
        from deployctl.errors import DatabaseError

        raise DatabaseError(f"migrations failed: {_field(result, 'error') or 'see the job logs'}",
                            sqlstate=_field(result, "sqlstate"),
                            hint=_field(result, "hint") or f"run `deployctl migrate {service}` to see why")
    if _field(result, "noop", False):
        return MigrationOutcome(True, "at head, nothing to apply")
    applied = _field(result, "applied") or []
    to = ",".join(_field(result, "to_revisions") or []) or "head"
    return MigrationOutcome(True, f"{len(applied)} applied, now at {to} (runner: {_field(result, 'runner')})")


def _field(obj, name: str, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(getattr(v, "revision", v)) for v in value]


def status(ctx: Context, service: str) -> MigrationStatus:
    """Current -> head and the pending list; never raises for an unreachable database (state "unknown")."""
    svc = ctx.config.service(service)
    if svc.database is None or svc.database.migrations is None:
        return MigrationStatus("n/a")
    try:
        engine = _optional("deployctl.migration.status")
        fn = getattr(engine, "migration_status", None) if engine else None
        raw = fn(ctx, service) if fn else _local_status(ctx, service)
    except Exception as e:  # noqa: BLE001 - any failure to read it is shown as the reason, never a crash
        from deployctl import redact

        return MigrationStatus("unknown", reason=redact.redact(getattr(e, "message", None) or
                                                               f"{type(e).__name__}: {e}")[:200])
    current, heads = _as_list(_field(raw, "current")), _as_list(_field(raw, "heads"))
    pending = _as_list(_field(raw, "pending"))
    unknown = _field(raw, "unknown") or _field(raw, "error")
    if unknown or _field(raw, "pending", []) is None:
        return MigrationStatus("unknown", current, heads, pending, reason=str(unknown or "pending unknown"))
    return MigrationStatus("pending" if pending else "at-head", current, heads, pending)


def _local_status(ctx: Context, service: str) -> dict:
    """Until deployctl.migration.status exists: heads from the Alembic tree, current from alembic_version."""
    from alembic.script import ScriptDirectory

    from deployctl import dbtarget
    from deployctl.cloud.secrets import SecretStore
    from deployctl.db.connect import connect

    db = ctx.config.service(service).database
    script = ScriptDirectory(str(ctx.config.resolve(db.migrations)))
    heads = list(script.get_heads())
    target = dbtarget.resolve(ctx, service)
    password = SecretStore(ctx.clients, ctx.project).access(target.password_secret).text
    conn = connect(dbtarget.build_dsn(target, password), timeout=3.0)
    try:
        exists = conn.run("SELECT to_regclass('alembic_version') IS NOT NULL")[0][0]
        current = [r[0] for r in conn.run("SELECT version_num FROM alembic_version")] if exists else []
    finally:
        conn.close()
    pending = []
    for head in heads:
        for rev in script.iterate_revisions(head, tuple(current) or "base"):
            if rev.revision not in current:
                pending.append(rev.revision)
    return {"current": current, "heads": heads, "pending": list(dict.fromkeys(reversed(pending)))}
