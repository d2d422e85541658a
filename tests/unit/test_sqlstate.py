"""SQLSTATE classification on real errors produced against the test cluster (and real sockets)."""

from __future__ import annotations

import secrets
import socket
import ssl
import threading
import time

import pg8000
import pg8000.dbapi
import pg8000.native
import pytest
from sqlalchemy import create_engine, text

from deployctl import dsn
from deployctl.db import connect
from deployctl.db.sqlstate import classify, sqlstate_of
from deployctl.emulator.netaddr import free_port


@pytest.fixture(scope="module")
def login(pg_cluster):
    """A role and database of this module's own; returns (db, user, password)."""
    name = "sq_" + secrets.token_hex(3)
    pw = secrets.token_urlsafe(12)
    pg_cluster.create_role(name, pw)
    pg_cluster.create_database(name, owner=name)
    yield name, name, pw
    pg_cluster.drop_database(name)


def _dsn(pg_cluster, db, user, pw, **kw):
    return dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host,
                     connect_timeout=5, **kw)


def _sqlalchemy_error(d):
    engine = create_engine(d.engine_url, connect_args=d.connect_args)
    try:
        with pytest.raises(Exception) as err:
            engine.connect()
        return err.value
    finally:
        engine.dispose()


def test_wrong_password_all_three_forms(pg_cluster, login):
    db, user, _ = login
    d = _dsn(pg_cluster, db, user, "not-the-password")
    kw = dict(user=user, password="not-the-password", database=db, host=pg_cluster.host,
              ssl_context=d.connect_args["ssl_context"], timeout=5)
    with pytest.raises(pg8000.exceptions.DatabaseError) as native:
        pg8000.native.Connection(**kw)
    with pytest.raises(pg8000.dbapi.ProgrammingError) as dbapi:
        pg8000.connect(**kw)
    wrapped = _sqlalchemy_error(d)
    assert type(wrapped).__module__.startswith("sqlalchemy")
    for e in (native.value, dbapi.value, wrapped):
        assert sqlstate_of(e) == "28P01"
        diag = classify(e)
        assert diag.code == "auth-failed" and "does not exist" in diag.cause and diag.hint
        assert "not-the-password" not in diag.cause + diag.hint


def test_missing_role_is_also_28p01(pg_cluster, login):
    db, _, pw = login
    assert connect.probe(_dsn(pg_cluster, db, "no_such_role_x", pw), timeout=5).sqlstate == "28P01"


def test_missing_database(pg_cluster, login):
    _, user, pw = login
    r = connect.probe(_dsn(pg_cluster, "no_such_db_x", user, pw), timeout=5)
    assert (r.ok, r.sqlstate, r.diagnosis.code) == (False, "3D000", "database-missing")


def test_nologin_role(pg_cluster, login):
    db, _, _ = login
    name, pw = "nl_" + secrets.token_hex(3), secrets.token_urlsafe(10)
    pg_cluster.create_role(name, pw, login=False)
    r = connect.probe(_dsn(pg_cluster, db, name, pw), timeout=5)
    assert (r.sqlstate, r.diagnosis.code) == ("28000", "login-not-permitted")


def test_no_ssl(pg_cluster, login):
    db, user, pw = login
    e = _sqlalchemy_error(_dsn(pg_cluster, db, user, pw, sslmode="disable"))
    assert sqlstate_of(e) == "28000" and classify(e).code == "ssl-required"


def test_create_on_public_schema_denied(pg_cluster, login):
    db, _, _ = login
    name, pw = "np_" + secrets.token_hex(3), secrets.token_urlsafe(10)
    pg_cluster.create_role(name, pw)  # not the database owner: PostgreSQL 15 gives it no CREATE on public
    conn = connect.connect(_dsn(pg_cluster, db, name, pw), timeout=5)
    try:
        with pytest.raises(pg8000.exceptions.DatabaseError) as err:
            conn.run("CREATE TABLE public.t (id int)")
    finally:
        conn.close()
    assert sqlstate_of(err.value) == "42501" and classify(err.value).code == "public-schema-create"


def test_objects_a_partial_run_left_behind_are_named_as_such(pg_cluster, login):
    db, user, pw = login
    conn = connect.connect(_dsn(pg_cluster, db, user, pw), timeout=5)
    errors = []
    try:
        conn.run("CREATE TABLE IF NOT EXISTS leftover (id int)")
        for ddl in ("ALTER TABLE leftover ADD COLUMN id int", "CREATE TABLE leftover (id int)",
                    "CREATE TYPE leftover AS ENUM ('a')"):  # 42701, 42P07, 42710 (the table's row type)
            with pytest.raises(pg8000.exceptions.DatabaseError) as err:
                conn.run(ddl)
            errors.append(err.value)
    finally:
        conn.run("DROP TABLE IF EXISTS leftover")
        conn.close()
    assert [sqlstate_of(e) for e in errors] == ["42701", "42P07", "42710"]
    for e in errors:
        d = classify(e)
        assert d.code == "already-exists" and "left objects behind" in d.cause and "if_not_exists" in d.hint


def test_lock_timeout(pg_cluster, login):
    db, user, pw = login
    d = _dsn(pg_cluster, db, user, pw)
    holder, waiter = connect.connect(d, timeout=5), connect.connect(d, timeout=5)
    try:
        holder.run("SELECT pg_advisory_lock(4242)")
        waiter.run("SET lock_timeout = '100ms'")
        with pytest.raises(pg8000.exceptions.DatabaseError) as err:
            waiter.run("SELECT pg_advisory_lock(4242)")
    finally:
        holder.close()
        waiter.close()
    assert sqlstate_of(err.value) == "55P03" and classify(err.value).code == "lock-timeout"


def test_closed_port_is_refused(pg_cluster, login):
    db, user, pw = login
    d = dsn.build(driver="pg8000", user=user, password=pw, database=db, host="127.0.0.1",
                  port=free_port("127.0.0.1"))
    r = connect.probe(d, timeout=2)
    assert not r.ok and r.sqlstate is None and r.diagnosis.code == "network-refused"
    assert r.elapsed < 2


@pytest.fixture()
def silent_listener():
    """Accepts TCP connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted = []
    stop = threading.Event()

    def loop():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in accepted:
        c.close()
    srv.close()


def test_silent_listener_is_bounded_by_timeout(silent_listener):
    d = dsn.build(driver="pg8000", user="u", password="pw12", database="db", host="127.0.0.1",
                  port=silent_listener)
    start = time.monotonic()
    r = connect.probe(d, timeout=0.5)
    assert time.monotonic() - start < 2.0
    assert not r.ok and r.diagnosis.code == "network-timeout"
    # the raw form: pg8000 lets TimeoutError through unwrapped, SQLAlchemy too
    with pytest.raises(TimeoutError) as err:
        pg8000.native.Connection("u", host="127.0.0.1", port=silent_listener, timeout=0.3, ssl_context=True)
    assert classify(err.value).code == "network-timeout"


def test_untrusted_certificate(pg_cluster, login):
    db, user, pw = login
    r = connect.probe(_dsn(pg_cluster, db, user, pw, sslmode="verify-full"), timeout=5)
    assert not r.ok and r.diagnosis.code == "ssl-verify"
    assert isinstance(ssl.SSLCertVerificationError(), ssl.SSLError)


def test_verify_ca_with_root_cert_succeeds(pg_cluster, login):
    db, user, pw = login
    r = connect.probe(_dsn(pg_cluster, db, user, pw, sslmode="verify-full",
                           sslrootcert=str(pg_cluster.data_dir / "root.crt")), timeout=5)
    assert r.ok, r.diagnosis


def test_dns_failure():
    # AI_NUMERICHOST: a real gaierror without asking a resolver (which could take seconds offline)
    with pytest.raises(socket.gaierror) as err:
        socket.getaddrinfo("no-such-host.invalid", 5432, flags=socket.AI_NUMERICHOST)
    assert classify(err.value).code == "network-dns"


def test_unknown_error_is_not_guessed():
    d = classify(ValueError("boom"))
    assert d.code == "unknown" and d.sqlstate is None


def test_statement_timeout_via_sqlalchemy(pg_cluster, login):
    db, user, pw = login
    d = _dsn(pg_cluster, db, user, pw)
    engine = create_engine(d.engine_url, connect_args=d.connect_args)
    try:
        with engine.connect() as conn, pytest.raises(Exception) as err:
            conn.execute(text("SET statement_timeout = '50ms'"))
            conn.execute(text("SELECT pg_sleep(1)"))
    finally:
        engine.dispose()
    assert sqlstate_of(err.value) == "57014" and classify(err.value).code == "statement-timeout"


def test_doctors_logins_carry_the_server_ca_for_verify_modes(pg_cluster, login):
    """Review 2, finding 4: doctor's probes (candidates, the stored string, the session) verify the server with
    the instance's CA; an asyncpg string's ssl= is translated for the pg8000 probe, not dropped to 'prefer'."""
    from deployctl.checks import dbprobe

    db, user, pw = login
    ca = str(pg_cluster.data_dir / "root.crt")
    target = {"host": pg_cluster.host, "port": pg_cluster.port, "database": db, "user": user,
              "sslmode": "verify-ca", "sslrootcert": ca}
    stored = dsn.build(driver="asyncpg", user=user, password=pw, database=db, host=pg_cluster.host,
                       sslmode="verify-ca").url  # asyncpg's URL names no CA (PGSSLROOTCERT does, in the image)
    kwargs, _ = connect._kwargs(stored, 5)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # was None: unverified, plaintext fallback
    r = dbprobe.run_all(target, {"secret-latest": pw}, "secret-latest", 5, stored_url=stored)
    assert r["logins"]["secret-latest"]["ok"] and r["stored_url"]["ok"], r
    assert r["session"]["ssl"] and "error" not in r["session"]
