"""Diagnose PostgreSQL failures by SQLSTATE (and, for network failures, by the socket error underneath).

pg8000 reports a server error as an exception whose args[0] is the ErrorResponse dict ({"C": SQLSTATE,
"M": message, ...}); SQLAlchemy wraps it with `.orig`. The same condition arrives as
pg8000.exceptions.DatabaseError (pg8000.native, dbapi.connect) or pg8000.dbapi.ProgrammingError
(pg8000.connect, what SQLAlchemy uses), so SQL errors are never classified by exception class (DESIGN §8).
Network failures come wrapped in pg8000's InterfaceError (with the socket error as __cause__) or raw
(TimeoutError from a server that never answers, ssl.SSLCertVerificationError).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from deployctl import redact


@dataclass(frozen=True)
class Diagnosis:
    code: str
    sqlstate: str | None
    title: str
    cause: str
    hint: str


def exception_chain(exc: BaseException | None, limit: int = 10):
    """exc, its .orig, its __cause__/__context__ ... (bounded, no repeats)."""
    seen: list[int] = []
    todo = [exc]
    while todo and len(seen) < limit:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.append(id(e))
        yield e
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]


def error_fields(exc: BaseException) -> dict | None:
    """The server's ErrorResponse fields (C, M, D, H, S, ...) from a pg8000 error however wrapped."""
    for e in exception_chain(exc):
        args = getattr(e, "args", ())
        if args and isinstance(args[0], dict) and "C" in args[0]:
            return args[0]
    return None


def sqlstate_of(exc: BaseException) -> str | None:
    fields = error_fields(exc)
    return fields.get("C") if fields else None


def _network(exc: BaseException) -> tuple[str, BaseException] | None:
    for e in exception_chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return "ssl-verify", e
        if isinstance(e, ConnectionRefusedError):
            return "refused", e
        if isinstance(e, TimeoutError):  # socket.timeout is TimeoutError since 3.10
            return "timeout", e
        if isinstance(e, socket.gaierror):
            return "dns", e
    for e in exception_chain(exc):
        if isinstance(e, (ConnectionResetError, BrokenPipeError, ssl.SSLError)):
            return "reset", e
        if "Server refuses SSL" in str(e):
            return "server-no-ssl", e
        if isinstance(e, OSError) and e.errno is not None:
            return "os", e
    return None


_NETWORK = "network: no VPC connector / Direct VPC egress, a wrong private IP, a firewall, or the instance is down"
_NET_HINT = ("compare the DSN's host with the instance's private IP (deployctl doctor), and check the service's "
             "vpc_connector / egress; inside the VPC run: deployctl doctor --in-vpc")


def classify(exc: BaseException) -> Diagnosis:
    """DESIGN §8's table. Messages pass through redact (a server message never holds a password, but be sure)."""
    from deployctl.errors import DeployctlError

    if isinstance(exc, DeployctlError) and exc.code == "dsn-unparseable":
        return Diagnosis("unparseable", None, "connection string cannot be parsed", exc.message,
                         "see dsn.lint: a raw '@', ':' or '/' in the password must be percent-encoded "
                         "(deployctl dsn SERVICE --write-secret)")
    fields = error_fields(exc)
    if fields:
        state, msg = fields.get("C"), redact.redact(str(fields.get("M", "")))
        return _by_sqlstate(state, msg)
    net = _network(exc)
    if net:
        kind, e = net
        detail = redact.redact(str(e)) or type(e).__name__
        table = {
            "refused": ("network-refused", "connection refused",
                        f"nothing listens at that address and port ({detail}). {_NETWORK}"),
            "timeout": ("network-timeout", "connection timed out",
                        f"no answer within the timeout ({detail}). {_NETWORK}"),
            "dns": ("network-dns", "host name does not resolve", f"DNS lookup failed ({detail})"),
            "ssl-verify": ("ssl-verify", "server certificate not trusted",
                           f"the SSL certificate did not verify ({detail}): verify-ca/verify-full need the "
                           "instance's server CA as sslrootcert"),
            "server-no-ssl": ("server-no-ssl", "server does not offer SSL",
                              "the client requires SSL and the server refused it (wrong port, or a proxy)"),
            "reset": ("network-reset", "connection reset", f"the peer closed the connection ({detail})"),
            "os": ("network-error", "network error", detail),
        }
        code, title, cause = table[kind]
        hint = (("set sslrootcert to the instance's server CA (gcloud sql instances describe ... "
                 "--format='value(serverCaCert.cert)'), or use sslmode=require")
                if kind == "ssl-verify" else _NET_HINT)
        return Diagnosis(code, None, title, cause, hint)
    return Diagnosis("unknown", None, "unexpected error", f"{type(exc).__name__}: {redact.redact(str(exc))}",
                     "run with -v for the full error, then deployctl doctor")


def _by_sqlstate(state: str | None, msg: str) -> Diagnosis:
    if state == "28P01":
        return Diagnosis(
            "auth-failed", state, "password authentication failed",
            "the password is wrong, OR the role does not exist, OR its password expired or is not SCRAM: "
            f"PostgreSQL gives one answer for all of them ({msg})",
            "check the role exists (admin API users.list or pg_roles) and compare the password sources: "
            "deployctl doctor SERVICE (fingerprints of Terraform state, Secret Manager and the database)")
    if state == "28000" and "no encryption" in msg:
        return Diagnosis("ssl-required", state, "SSL required",
                         f"the server accepts TCP only over SSL (hostssl) and the client did not use it ({msg})",
                         "use sslmode=require (pg8000: ssl_context=True; asyncpg: ssl='require'): "
                         "deployctl dsn SERVICE --write-secret")
    if state == "28000" and "not permitted to log in" in msg:
        return Diagnosis("login-not-permitted", state, "role cannot log in", f"the role is NOLOGIN ({msg})",
                         "ALTER ROLE ... LOGIN (as an admin), or deployctl doctor SERVICE --fix")
    if state == "28000":
        return Diagnosis("not-authorized", state, "connection not authorised",
                         f"pg_hba.conf has no entry for this host/user/database ({msg})",
                         "check the user, database and SSL settings against the instance")
    if state == "3D000":
        return Diagnosis("database-missing", state, "database does not exist", msg,
                         "create it (Terraform google_sql_database, or the admin API): deployctl doctor SERVICE --fix")
    if state == "42501" and "schema public" in msg:
        return Diagnosis("public-schema-create", state, "no CREATE on schema public",
                         f"PostgreSQL 15 no longer grants CREATE on schema public to everyone ({msg})",
                         "GRANT CREATE, USAGE ON SCHEMA public TO the migration user (or make it the "
                         "database owner)")
    if state == "42501":
        return Diagnosis("permission-denied", state, "permission denied", msg,
                         "grant the privilege to the service's user")
    if state == "55P03":
        return Diagnosis("lock-timeout", state, "lock timeout",
                         f"another session held a lock longer than lock_timeout ({msg}); in a migration that is "
                         "DDL waiting on application sessions (a lock on the table, or, for CREATE INDEX "
                         "CONCURRENTLY, any transaction older than the build), not another migration run: "
                         "deployctl's migration lock is polled and never ends in 55P03",
                         "find the sessions with long-open transactions (pg_stat_activity.xact_start, "
                         "pg_blocking_pids()), let them finish or end them, then run it again; or raise "
                         "DEPLOYCTL_LOCK_TIMEOUT")
    if state in ("42701", "42710", "42P07"):  # duplicate column / object / table
        return Diagnosis("already-exists", state, "object already exists",
                         f"{msg}: an earlier run that failed partway (a committed autocommit block, or DDL "
                         "applied by hand) left objects behind while the revision stayed unapplied",
                         "make the revision idempotent (add_column(..., if_not_exists=True), CREATE ... IF NOT "
                         "EXISTS, DESIGN §7), or drop the leftover objects, then run it again")
    if state == "57014":
        return Diagnosis("statement-timeout", state, "statement cancelled", msg,
                         "the statement ran longer than statement_timeout; raise it for this run or make "
                         "the statement cheaper")
    if state == "53300":
        return Diagnosis("too-many-connections", state, "too many connections", msg,
                         "lower the pool sizes (max instances x pool_size) or raise max_connections")
    if state in ("57P01", "57P02", "57P03"):
        return Diagnosis("server-unavailable", state, "server shutting down or starting", msg,
                         "retry in a moment; check the instance's state")
    return Diagnosis("sql-error", state, f"SQL error {state}", msg, "see the PostgreSQL error code table")
