"""The one Alembic env.py for every service's tree; each tree's env.py is `run_migrations("<service>")`.

Online: the URL comes from deployctl.runtime (DATABASE_URL or DB_*; never alembic.ini, where `%` would need
doubling), each migration runs in its own transaction, every session statement is bounded by lock_timeout and
statement_timeout, and a session advisory lock keyed by the service is held for the whole run, so two
concurrent runs (a deploy and a hand-run job) serialize instead of racing; the waiting one says who holds it.
Offline (`--sql`): no credentials at all, literal SQL for review and for squawk.

Environment: DEPLOYCTL_LOCK_WAIT (s, default 120) how long to wait for the advisory lock;
DEPLOYCTL_LOCK_TIMEOUT (s, default 10) lock_timeout for DDL; DEPLOYCTL_STATEMENT_TIMEOUT (s, default 900).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
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


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DeployctlError(f"{name} must be a number of seconds (got {raw!r})",
                             hint=f"set {name}=30, or unset it for the default of {default:g}",
                             code="config") from None
    if value < 0:
        raise DeployctlError(f"{name} must not be negative", hint=f"unset {name}", code="config")
    return value


def _say(message: str) -> None:
    # stderr: in a Cloud Run Job it reaches the job's log; on a terminal it stays apart from --sql output.
    print(f"deployctl-migrate: {message}", file=sys.stderr, flush=True)


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


def _application_name(service: str) -> str:
    # What a waiting run shows of this one: which service, and which job execution (or local process).
    who = os.environ.get("CLOUD_RUN_EXECUTION") or f"pid={os.getpid()}"
    return f"deployctl-migrate {service} {who}"[:63]


def _session_settings(lock_timeout: float, statement_timeout: float) -> list[str]:
    return [f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'",
            f"SET statement_timeout = '{int(statement_timeout * 1000)}ms'"]


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

    lock_wait = _seconds("DEPLOYCTL_LOCK_WAIT", DEFAULT_LOCK_WAIT)
    lock_timeout = _seconds("DEPLOYCTL_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)
    statement_timeout = _seconds("DEPLOYCTL_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT)
    # An in-process caller (deployctl migrate --runner local) passes the URL in the config's attributes, so it
    # never goes through os.environ; the alembic CLI (a migration job) uses the environment.
    url = context.config.attributes.get("database_url") or runtime.database_url_from_env()
    redact.register(url)
    with contextlib.suppress(Exception):  # an unparsable URL fails below, with runtime's own message
        redact.register(make_url(url).password)
    # Connecting is bounded by the connect timeout; afterwards pg8000's read timeout is lifted to
    # statement_timeout + margin by build_engine, so a long migration is ended by PostgreSQL, not the socket.
    engine = runtime.build_engine(url, statement_timeout_ms=int(statement_timeout * 1000),
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
                with context.begin_transaction():
                    context.run_migrations()
                connection.commit()
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
        engine.dispose()


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
