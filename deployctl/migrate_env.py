"""The one Alembic env.py for every service's tree; each tree's env.py is `run_migrations("<service>")`.

Online: the URL comes from deployctl.runtime (DATABASE_URL or DB_*; never alembic.ini, where `%` would need
doubling), each migration runs in its own transaction, every session statement is bounded by lock_timeout and
statement_timeout, and a session advisory lock keyed by the service is held for the whole run, so two
concurrent runs (a deploy and a hand-run job) serialize instead of racing; the waiting one says who holds it.
Offline (`--sql`): no credentials at all, literal SQL for review and for squawk.

Environment: DEPLOYCTL_LOCK_WAIT (s, default 120) how long to wait for the advisory lock;
DEPLOYCTL_LOCK_TIMEOUT (s, default 10) lock_timeout for DDL; DEPLOYCTL_STATEMENT_TIMEOUT (s, default 900; a
migration job gets one that ends before its task timeout, deployctl.migration.runner.job_timeouts).

A run ends by saying where the database is (`deployctl-migrate: at <rev>[, <rev>]` or `at base`), which
deployctl reads from the job's log.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import sys
import time

from deployctl.errors import DeployctlError

DEFAULT_LOCK_WAIT = 120.0
DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_STATEMENT_TIMEOUT = 900.0
POLL_INTERVAL = 0.25
OFFLINE_URL = "postgresql+pg8000://"


class MigrationLockTimeout(DeployctlError):
    code = "migration-lock-timeout"


def advisory_lock_key(service: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock(bigint), derived from the service name."""
    digest = hashlib.sha256(f"deployctl-migrate:{service}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


PG_MAX_SECONDS = 2147483  # lock_timeout / statement_timeout are int milliseconds in PostgreSQL


def _seconds(name: str, default: float, *, zero_ok: bool = False) -> float:
    """A bound from the environment. For lock_timeout and statement_timeout, 0 means *no limit* in PostgreSQL
    (and statement 0 leaves pg8000's reads unbounded too), so only the lock wait (0 = try once) may be 0."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DeployctlError(f"{name} must be a number of seconds (got {raw!r})",
                             hint=f"set {name}=30, or unset it for the default of {default:g}",
                             code="config")
    if value < 0 or (not zero_ok and value < 0.001):
        raise DeployctlError(f"{name} must be {'0 or more' if zero_ok else 'at least 0.001'} seconds (got {raw!r}): "
                             "a migration always runs with bounds",
                             hint=f"set {name}=30, or unset it for the default of {default:g}", code="config")
    if not zero_ok and value > PG_MAX_SECONDS:
        raise DeployctlError(f"{name} must be at most {PG_MAX_SECONDS} seconds (PostgreSQL's limit; got {raw!r})",
                             hint=f"unset {name} for the default of {default:g}", code="config")
    return value


def _say(message: str) -> None:
    # stderr: in a Cloud Run Job it reaches the job's log; on a terminal it stays apart from --sql output.
    # An in-process caller (deployctl migrate --runner local) hears it through the config's "say" attribute.
    line = f"deployctl-migrate: {message}"
    if _sink is not None:
        _sink(line)
    else:
        print(line, file=sys.stderr, flush=True)


_sink = None  # set by run_online from context.config.attributes["say"]


HOLDER_SQL = """
SELECT a.pid, a.application_name, a.usename, a.client_addr::text AS client_addr, a.backend_start,
       a.state, now() - a.backend_start AS held_for
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid = CAST(:classid AS oid) AND l.objid = CAST(:objid AS oid)
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def lock_holder(connection, key: int) -> dict | None:
    """Who holds the advisory lock `key` in this database (pid, application_name, ...), or None."""
    from sqlalchemy import text

    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF  # pg_locks shows a bigint key as two oids
    row = connection.execute(text(HOLDER_SQL), {"classid": unsigned >> 32,
                                                "objid": unsigned & 0xFFFF_FFFF}).mappings().first()
    return dict(row) if row else None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another session (it released the lock or is not visible to this role)"
    since = holder.get("backend_start")
    since_text = since.isoformat(timespec="seconds") if since else "unknown"
    return (f"pid {holder['pid']}, application_name {holder.get('application_name') or '(none)'!r}, "
            f"user {holder.get('usename') or '?'}, from {holder.get('client_addr') or 'local socket'}, "
            f"connected since {since_text}")


def acquire_lock(connection, service: str, *, wait: float) -> None:
    """pg_try_advisory_lock in a loop until `wait` seconds have passed; reports the holder once."""
    from sqlalchemy import text

    key = advisory_lock_key(service)
    deadline = time.monotonic() + wait
    reported = False
    started = time.monotonic()
    while True:
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        connection.commit()
        if got:
            if reported:
                _say(f"got the migration lock for {service} after {time.monotonic() - started:.1f} s")
            return
        if not reported:
            holder = lock_holder(connection, key)
            connection.commit()
            _say(f"waiting up to {wait:g} s for the migration lock of {service}, held by {describe_holder(holder)}")
            reported = True
        if time.monotonic() >= deadline:
            holder = lock_holder(connection, key)
            connection.commit()
            raise MigrationLockTimeout(
                f"another migration of {service} still holds the lock after {wait:g} s: {describe_holder(holder)}",
                hint="wait for it to finish (deployctl migrate status), or raise DEPLOYCTL_LOCK_WAIT; if that "
                     "session is stuck, end it with SELECT pg_terminate_backend(<pid>)")
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


BLOCKERS_SQL = """
SELECT pid, application_name, usename, state, xact_start
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
ORDER BY xact_start LIMIT 3
"""


def report_blockers(connection) -> None:
    """After a lock_timeout (55P03) inside a migration: the sessions with open transactions, oldest first.

    The migration's own advisory lock is polled, so a 55P03 means DDL waited on application sessions: a
    table lock, or (CREATE INDEX CONCURRENTLY) any transaction older than the index build."""
    from sqlalchemy import text

    try:
        if connection.in_transaction():
            connection.rollback()
        rows = connection.execute(text(BLOCKERS_SQL)).mappings().all()
        connection.commit()
    except Exception:  # noqa: BLE001 - the migration's own error is what matters; this is a hint
        return
    if not rows:
        _say("blocked by: no other session has a transaction open any more; re-run")
        return
    for row in rows:
        since = row["xact_start"].isoformat(timespec="seconds") if row["xact_start"] else "unknown"
        _say(f"blocked by: pid {row['pid']}, application_name {row['application_name'] or '(none)'!r}, "
             f"user {row['usename'] or '?'}, state {row['state'] or '?'}, transaction open since {since}")


def drop_index_if_invalid(name: str) -> None:
    """For a revision's autocommit block, before `CREATE INDEX CONCURRENTLY ... IF NOT EXISTS`: drop an INVALID
    index of that name, which a failed build leaves behind and IF NOT EXISTS would take for done (a unique index
    that is never valid enforces nothing). Online only: offline SQL cannot ask the database."""
    from alembic import op
    from sqlalchemy import text

    if op.get_context().as_sql:
        return
    bind = op.get_bind()
    invalid = bind.execute(text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
                           {"n": name}).scalar()
    if invalid:
        _say(f"dropping the INVALID index {name} a failed build left behind")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {bind.dialect.identifier_preparer.quote(name)}")


def _application_name(service: str) -> str:
    # What a waiting run shows of this one: which service, and which job execution (or local process).
    who = os.environ.get("CLOUD_RUN_EXECUTION") or f"pid={os.getpid()}"
    return f"deployctl-migrate {service} {who}"[:63]


def _session_settings(lock_timeout: float, statement_timeout: float) -> list[str]:
    # At least 1 ms: '0ms' would switch the bound off.
    return [f"SET lock_timeout = '{max(1, int(lock_timeout * 1000))}ms'",
            f"SET statement_timeout = '{max(1, int(statement_timeout * 1000))}ms'"]


def run_offline(context, service: str) -> None:
    context.configure(url=OFFLINE_URL, literal_binds=True, dialect_opts={"paramstyle": "named"},
                      transaction_per_migration=True)
    for statement in _session_settings(_seconds("DEPLOYCTL_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT),
                                       _seconds("DEPLOYCTL_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT)):
        context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


def _end_stray_transaction_before_autocommit(engine) -> None:
    """Make Alembic's autocommit_block work on pg8000.

    autocommit_block commits Alembic's transaction, then asks the connection for its isolation level: a
    `SHOW transaction isolation level` that pg8000 (not in autocommit) wraps in a new BEGIN. SQLAlchemy's pg8000
    dialect then only flips `autocommit = True`, leaving that transaction open on the server, so CREATE INDEX
    CONCURRENTLY fails with 25001 "cannot run inside a transaction block". Only that read-only SHOW is in it
    (Alembic has just committed), so committing it before switching to AUTOCOMMIT is safe.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "set_connection_execution_options")
    def _before_isolation_change(conn, opts) -> None:
        if opts.get("isolation_level") != "AUTOCOMMIT":
            return
        dbapi_connection = conn.connection.dbapi_connection
        if getattr(dbapi_connection, "_in_transaction", False) and not dbapi_connection.autocommit:
            dbapi_connection.commit()


def run_online(context, service: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from deployctl import redact, runtime

    lock_wait = _seconds("DEPLOYCTL_LOCK_WAIT", DEFAULT_LOCK_WAIT, zero_ok=True)
    lock_timeout = _seconds("DEPLOYCTL_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)
    statement_timeout = _seconds("DEPLOYCTL_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT)
    # An in-process caller (deployctl migrate --runner local) passes the URL in the config's attributes, so it
    # never goes through os.environ; the alembic CLI (a migration job) uses the environment.
    global _sink
    _sink = context.config.attributes.get("say")
    url = context.config.attributes.get("database_url") or runtime.database_url_from_env()
    _register_url(url)
    with contextlib.suppress(Exception):  # an unparsable URL fails below, with runtime's own message
        redact.register(make_url(url).password)
    # Connecting is bounded by the connect timeout; afterwards pg8000's read timeout is lifted to
    # statement_timeout + margin by build_engine, so a long migration is ended by PostgreSQL, not the socket.
    engine = runtime.build_engine(_sync_url(url), statement_timeout_ms=max(1, int(statement_timeout * 1000)),
                                  application_name=_application_name(service),
                                  poolclass=NullPool, pool_pre_ping=False)
    _end_stray_transaction_before_autocommit(engine)
    try:
        with engine.connect() as connection:
            for statement in _session_settings(lock_timeout, statement_timeout):
                connection.execute(text(statement))
            connection.commit()
            try:
                acquire_lock(connection, service, wait=lock_wait)
                context.configure(connection=connection, transaction_per_migration=True)
                try:
                    with context.begin_transaction():
                        context.run_migrations()
                except Exception as e:
                    from deployctl.db.sqlstate import sqlstate_of

                    if sqlstate_of(e) == "55P03":
                        report_blockers(connection)
                    raise
                connection.commit()
                # The last word of a run, parsed by deployctl: where the database is now.
                heads = context.get_context().get_current_heads()
                connection.commit()
                _say(f"at {', '.join(sorted(heads)) or 'base'}")
            except KeyboardInterrupt:
                # Ctrl-C (deployctl migrate --runner local): drop the session at once instead of waiting on a
                # rollback; the server rolls back the migration in progress and frees the advisory lock.
                with contextlib.suppress(Exception):
                    connection.invalidate()
                raise
            finally:
                # Closing the session releases the lock too; unlocking first just frees it sooner. A broken
                # connection must not hide the migration's own error, hence the suppress.
                if not connection.invalidated:
                    with contextlib.suppress(Exception):
                        if connection.in_transaction():
                            connection.rollback()
                        connection.execute(text("SELECT pg_advisory_unlock(:k)"),
                                           {"k": advisory_lock_key(service)})
                        connection.commit()
    finally:
        runtime.dispose(engine)


def _sync_url(url: str):
    """Alembic runs synchronously: a service that uses asyncpg migrates through pg8000 over the same connection
    (asyncpg's `ssl=` is libpq's `sslmode=`). Other URLs are used as they are."""
    from sqlalchemy.engine import make_url

    from deployctl import runtime

    u = make_url(url)
    if runtime.driver_of(u.drivername) != "asyncpg":
        return url
    query = dict(u.query)
    if "ssl" in query:
        query["sslmode"] = query.pop("ssl")
    return u.set(drivername="postgresql+pg8000", query=query)


def _register_url(url: str) -> None:
    from deployctl import redact

    try:
        from deployctl.dbtarget import register_url
    except ImportError:  # an image with an older deployctl: the whole value at least
        redact.register(url)
    else:
        register_url(url)


def run_migrations(service: str) -> None:
    """The whole of a tree's env.py: offline or online, as Alembic was asked."""
    from alembic import context

    config_file = context.config.config_file_name
    if config_file and not logging.getLogger().handlers:
        # The alembic CLI (a migration job): use the tree's [loggers]. In-process callers keep their own.
        from logging.config import fileConfig

        fileConfig(config_file, disable_existing_loggers=False)
    if context.is_offline_mode():
        run_offline(context, service)
    else:
        run_online(context, service)
