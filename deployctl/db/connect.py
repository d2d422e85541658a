"""One login, bounded: for doctor's probes and admin-ish checks (not for services; they use runtime).

Every socket operation (TCP connect, SSL handshake, each read) is bounded by `timeout` through pg8000's
socket timeout; DNS resolution is not (getaddrinfo has no timeout), which is why DSNs carry IP addresses.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from deployctl import redact, runtime
from deployctl.db.sqlstate import Diagnosis, classify, sqlstate_of


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    elapsed: float
    sqlstate: str | None = None
    diagnosis: Diagnosis | None = None
    server_version: str | None = None


def _kwargs(url_or_dsn, timeout: float, sslrootcert: str | None = None) -> tuple[dict, dict | None]:
    """pg8000 keyword arguments (and a connector spec, if any) from a URL string or a dsn.Dsn. `sslrootcert` is
    the server CA's file here, for a URL that names none (asyncpg's cannot) or one that is not here (a path
    inside the image)."""
    url = getattr(url_or_dsn, "url", url_or_dsn)
    if isinstance(url, str):
        url = url.rstrip("\r\n") if url.endswith(("\n", "\r")) else url
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        # SQLAlchemy's message quotes the port slot, which a raw '@' or ':' fills with password text
        from deployctl.dsn import unparseable

        raise unparseable() from None
    redact.register(u.password)
    if runtime.driver_of(u.drivername) != "pg8000":
        query = dict(u.query)
        if runtime.driver_of(u.drivername) == "asyncpg" and "ssl" in query and "sslmode" not in query:
            query["sslmode"] = query.pop("ssl")  # asyncpg's word; pg8000's translation reads libpq's
        u = u.set(drivername="postgresql+pg8000", query=query)  # the probe speaks pg8000 whatever the service uses
    named = u.query.get("sslrootcert")
    if sslrootcert and not (isinstance(named, str) and os.path.isfile(named)):
        u = u.update_query_dict({"sslrootcert": sslrootcert})
    engine_url, connect_args = runtime.engine_args(u)
    kwargs = {"user": engine_url.username, "password": engine_url.password, "database": engine_url.database,
              "ssl_context": connect_args["ssl_context"], "timeout": timeout}
    spec = runtime.connector_spec(u)
    if not spec:
        kwargs.update(host=engine_url.host, port=engine_url.port or 5432)
    return kwargs, spec


def connect(url_or_dsn, *, timeout: float = 10.0, application_name: str = "deployctl",
            sslrootcert: str | None = None):
    """A pg8000.native.Connection (direct DSNs) whose every read is bounded by `timeout`; raises pg8000's
    errors (classify them with deployctl.db.sqlstate.classify)."""
    import pg8000.native

    kwargs, spec = _kwargs(url_or_dsn, timeout, sslrootcert)
    if spec:
        raise ValueError("connect() takes a direct DSN; connector-mode DSNs are probed with probe()")
    return pg8000.native.Connection(application_name=application_name, **kwargs)


def probe(url_or_dsn, timeout: float = 5.0, sslrootcert: str | None = None) -> ProbeResult:
    """Attempt one login and `SELECT version()`. Never raises for database-side or network failures."""
    start = time.monotonic()
    conn = None
    creator = None
    try:
        kwargs, spec = _kwargs(url_or_dsn, timeout, sslrootcert)
        if spec:
            creator = runtime.connector_creator(spec, timeout=timeout)
            conn = creator()
            runtime.lift_timeout(conn, timeout)
            cur = conn.cursor()
            cur.execute("SELECT current_setting('server_version')")
            version = cur.fetchone()[0]
        else:
            conn = connect(url_or_dsn, timeout=timeout, application_name="deployctl-probe", sslrootcert=sslrootcert)
            version = conn.run("SELECT current_setting('server_version')")[0][0]
        return ProbeResult(True, time.monotonic() - start, server_version=version)
    except Exception as e:  # noqa: BLE001 - every failure becomes a diagnosis
        return ProbeResult(False, time.monotonic() - start, sqlstate_of(e), classify(e))
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        if creator is not None:
            creator.connector.close()
