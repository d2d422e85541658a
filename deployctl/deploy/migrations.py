"""The two integration points with the migration engine (deployctl.migration, imported lazily), each in one
function: run a service's pending migrations before its rollout, and read its migration status for
`deployctl status`."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployctl import errors
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


def run_pending(ctx: Context, service: str) -> MigrationOutcome:
    """Apply the service's pending migrations (through deployctl.migration.runner) before its new revision."""
    svc = ctx.config.service(service)
    if svc.database is None or svc.database.migrations is None:
        return MigrationOutcome(False, "skipped (no database)" if svc.database is None else
                                "skipped (no migrations directory configured)")
    from deployctl.migration import runner

    result = runner.run_pending(ctx, service)
    if not result.ok:
        from deployctl.errors import DatabaseError

        code = f" (SQLSTATE {result.sqlstate})" if result.sqlstate else ""
        raise DatabaseError(f"migrations failed{code}: {result.error or 'see the job logs'}", sqlstate=result.sqlstate,
                            hint=result.hint or f"run `deployctl migrate {service}` to see why")
    if result.noop:
        return MigrationOutcome(True, "at head, nothing to apply")
    to = ",".join(result.to_revisions or []) or "head"
    return MigrationOutcome(True, f"{len(result.applied)} applied, now at {to} (runner: {result.runner})")


def status(ctx: Context, service: str) -> MigrationStatus:
    """Current -> head and the pending list; never raises for an unreachable database (state "unknown")."""
    svc = ctx.config.service(service)
    if svc.database is None or svc.database.migrations is None:
        return MigrationStatus("n/a")
    from deployctl.migration.status import migration_status

    try:
        raw = migration_status(ctx, service)
    except Exception as e:  # noqa: BLE001 - any failure to read it is shown as the reason, never a crash
        if errors.is_credentials_error(e):
            raise  # no cloud read can work: the command's one error
        from deployctl import redact

        return MigrationStatus("unknown", reason=redact.redact(getattr(e, "message", None) or
                                                               f"{type(e).__name__}: {e}")[:200])
    current, heads, pending = raw.current or [], raw.heads, raw.pending or []
    unknown = raw.unknown or raw.error
    if unknown or raw.pending is None:
        return MigrationStatus("unknown", current, heads, pending, reason=str(unknown or "pending unknown"))
    return MigrationStatus("pending" if pending else "at-head", current, heads, pending)
