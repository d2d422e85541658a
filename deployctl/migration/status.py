"""Where a service's database stands: current revision(s) vs the tree's head(s), and what is pending.

    st = migration_status(ctx, "fiat-gateway")
    if st.unknown: ...            # "unknown: <reason>" (unreachable, auth failed...): never raised
    elif st.pending: ...          # revision ids an upgrade to head would apply, in order

The current revision is read from here over a bounded connection (the database's private IP, or the Cloud SQL
connector); where the database is only reachable inside the VPC that read fails and the status says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deployctl import errors
from deployctl.context import Context

DEFAULT_TIMEOUT = 5.0
EXISTS_SQL = "SELECT to_regclass('alembic_version') IS NOT NULL"


@dataclass(frozen=True)
class MigrationStatus:
    service: str
    heads: list[str]
    current: list[str] | None = None  # None: unknown; [] : empty database (base)
    pending: list[str] | None = None  # None: unknown
    unknown: str | None = None  # why current could not be read
    sqlstate: str | None = None  # of that failure, when the database said
    error: str | None = None  # a tree problem (multiple heads, a revision not in the tree)
    hint: str | None = None
    revisions: dict[str, str] = field(default_factory=dict)  # id -> message, for display

    @property
    def multiple_heads(self) -> bool:
        return len(self.heads) > 1

    @property
    def known(self) -> bool:
        return self.current is not None

    @property
    def at_head(self) -> bool:
        return self.known and not self.pending and sorted(self.current or []) == sorted(self.heads)

    def summary(self) -> str:
        """One phrase for a status matrix: 'abc123 → def456 (2 pending)', 'at head', 'unknown: ...'."""
        if self.error and not self.known:
            return f"error: {self.error}"
        if not self.known:
            return f"unknown: {self.unknown}"
        cur = ", ".join(self.current) or "base"
        head = ", ".join(self.heads) or "base"
        if self.at_head:
            return f"{cur} (at head)"
        return f"{cur} → {head} ({len(self.pending or [])} pending)"


def read_current(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The version_num rows of alembic_version ([] when the table does not exist). Raises the driver's error."""
    from deployctl import runtime

    if runtime.connector_spec(url):
        from sqlalchemy import text
        from sqlalchemy.pool import NullPool

        engine = runtime.build_engine(url, statement_timeout_ms=int(timeout * 1000), poolclass=NullPool,
                                      pool_pre_ping=False, application_name="deployctl-migrate-status")
        try:
            with engine.connect() as conn:
                if not conn.execute(text(EXISTS_SQL)).scalar():
                    return []
                return sorted(r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version")))
        finally:
            engine.dispose()
    from deployctl.db.connect import connect

    conn = connect(url, timeout=timeout, application_name="deployctl-migrate-status")
    try:
        if not conn.run(EXISTS_SQL)[0][0]:
            return []
        return sorted(r[0] for r in conn.run("SELECT version_num FROM alembic_version"))
    finally:
        conn.close()


def _unknown_reason(exc: BaseException) -> tuple[str, str | None, str | None]:
    from deployctl.db.sqlstate import classify
    from deployctl.errors import DeployctlError

    if isinstance(exc, DeployctlError):
        return exc.message, None, exc.hint
    d = classify(exc)
    reason = f"{d.title} ({d.sqlstate})" if d.sqlstate else d.title
    return reason, d.sqlstate, d.hint


def migration_status(ctx: Context, service: str, *, timeout: float = DEFAULT_TIMEOUT,
                     url: Callable[[], str] | None = None) -> MigrationStatus:
    """Current vs head for one service. A database that cannot be read gives `unknown`, never an exception;
    a service without a database or tree raises ConfigError (a usage problem, not a state). `url` gives the
    DSN (a caller reading the status twice resolves it once); by default dbtarget.database_url."""
    from deployctl import dbtarget
    from deployctl.migration.tree import tree_for

    tree = tree_for(ctx, service)
    script = tree.script()
    heads = sorted(script.get_heads())
    messages = {r.revision: (r.doc or "").strip().splitlines()[0] if r.doc else ""
                for r in script.walk_revisions()}
    error = hint = None
    if len(heads) > 1:
        error = f"the tree has {len(heads)} heads: {', '.join(heads)}"
        hint = f"merge them: alembic -c {tree.ini} merge heads -m 'merge'"
    try:
        current = read_current(url() if url else dbtarget.database_url(ctx, service), timeout=timeout)
    except (errors.Unreachable, errors.PermissionDenied):
        raise  # the cloud API itself failed: the command fails (exit 1), it is not a database state
    except Exception as e:  # noqa: BLE001 - an unreadable database is a status, not a crash
        reason, state, why = _unknown_reason(e)
        return MigrationStatus(service, heads, unknown=reason, sqlstate=state, error=error,
                               hint=hint or why, revisions=messages)
    strangers = [c for c in current if c not in messages]
    if strangers:
        return MigrationStatus(service, heads, current=current, pending=None, revisions=messages,
                               error=f"the database is at {', '.join(strangers)}, which this tree does not have",
                               hint="deploy the code that has that revision, or check the migrations path")
    try:
        pending = tree.pending(current, "heads")
    except Exception as e:  # noqa: BLE001 - alembic's own resolution errors (e.g. overlapping branches)
        return MigrationStatus(service, heads, current=current, revisions=messages, error=str(e), hint=hint)
    return MigrationStatus(service, heads, current=current, pending=pending, error=error, hint=hint,
                           revisions=messages)
