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
    diagnosis: str | None = None  # the code (DESIGN §8) of why current could not be read
    credential: str | None = None  # which secret version the read logged in with ("x-database-url v3")

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
            runtime.dispose(engine)
    from deployctl.db.connect import connect

    conn = connect(url, timeout=timeout, application_name="deployctl-migrate-status")
    try:
        if not conn.run(EXISTS_SQL)[0][0]:
            return []
        return sorted(r[0] for r in conn.run("SELECT version_num FROM alembic_version"))
    finally:
        conn.close()


def _unknown_reason(exc: BaseException, service: str, user: str,
                    source: str | None) -> tuple[str, str | None, str | None, str]:
    """(reason, sqlstate, next step, diagnosis code) for a failed read, naming the login that was used."""
    from deployctl.errors import DeployctlError
    from deployctl.migration.diagnose import diagnose_exception

    if isinstance(exc, DeployctlError):
        return exc.message, None, exc.hint, exc.code
    d = diagnose_exception(exc, service)
    reason = f"{d.title} ({d.sqlstate})" if d.sqlstate else d.title
    if source:
        reason = (f"{user} rejected {source}: {reason}" if d.code == "auth-failed"
                  else f"{reason}, logging in with {source}")
    return reason, d.sqlstate, d.hint, d.code


def migration_status(ctx: Context, service: str, *, timeout: float = DEFAULT_TIMEOUT,
                     url: Callable[[], str] | None = None, credential=None) -> MigrationStatus:
    """Current vs head for one service. A database that cannot be read gives `unknown`, never an exception;
    a service without a database or tree raises ConfigError (a usage problem, not a state). The login is
    `credential()` (a dbtarget.Credential; a caller reading the status twice resolves it once), or `url()`,
    by default dbtarget.credential: the same login the migration itself uses."""
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
    source = None
    try:
        if url is not None:
            dsn = url()
        else:
            cred = credential() if credential is not None else dbtarget.credential(ctx, service)
            dsn, source = cred.url, cred.source
        current = read_current(dsn, timeout=timeout)
    except (errors.Unreachable, errors.PermissionDenied):
        raise  # the cloud API itself failed: the command fails (exit 1), it is not a database state
    except Exception as e:  # noqa: BLE001 - an unreadable database is a status, not a crash
        if errors.is_credentials_error(e):
            raise  # no credentials (exit 2): not a database state either, so never "degraded"
        user = ctx.config.services[service].database.user
        reason, state, why, code = _unknown_reason(e, service, user, source)
        return MigrationStatus(service, heads, unknown=reason, sqlstate=state, error=error,
                               hint=hint or why, revisions=messages, diagnosis=code, credential=source)
    strangers = [c for c in current if c not in messages]
    if strangers:
        return MigrationStatus(service, heads, current=current, pending=None, revisions=messages,
                               error=f"the database is at {', '.join(strangers)}, which this tree does not have",
                               hint="deploy the code that has that revision, or check the migrations path",
                               credential=source)
    try:
        pending = tree.pending(current)
    except Exception as e:  # noqa: BLE001 - alembic's own resolution errors (e.g. overlapping branches)
        return MigrationStatus(service, heads, current=current, revisions=messages, error=str(e), hint=hint,
                               credential=source)
    return MigrationStatus(service, heads, current=current, pending=pending, error=error, hint=hint,
                           revisions=messages, credential=source)
