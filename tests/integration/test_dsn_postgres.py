"""Hostile passwords log in for real: dsn.build -> engine, and DATABASE_URL -> deployctl.runtime."""

from __future__ import annotations

import secrets
import string
import unicodedata

import pytest
from sqlalchemy import create_engine, text

from deployctl import dsn, runtime
from deployctl.db import connect
from deployctl.db.sqlstate import sqlstate_of
from deployctl.emulator.postgres import quote_ident, quote_literal

WORD = "Ångström café"
HOSTILE = [
    string.punctuation,                       # every ASCII punctuation character at once
    *[f"p{c}w{c}d" for c in "@:/?#[]%+&=;'\"\\ "],
    " leading-space", "trailing-space ", "  both  ",
    "+", "a+b", "%", "%%", "%41", "100%%pure", "%2B%20",
    unicodedata.normalize("NFC", WORD), unicodedata.normalize("NFD", WORD),
    "パスワード🔑🚀", "\U0001F600only-emoji\U0001F600",
    "x" * 60 + string.punctuation + "ü" * 20,  # 100+ characters
    "tab\tinside", "ends-with-newline\n",
]
assert len(HOSTILE) >= 25 and len(HOSTILE) == len(set(HOSTILE))


@pytest.fixture(scope="module")
def hostile_db(pg_cluster):
    """One database, one role per hostile password (verifiers computed client-side like PostgreSQL would)."""
    runtime.install_saslprep_fallback()  # emoji/control characters: scramp must fall back like PostgreSQL
    db = "hostile_" + secrets.token_hex(3)
    pg_cluster.create_database(db)
    roles = {}
    for i, pw in enumerate(HOSTILE):
        name = f"{db}_r{i}"
        pg_cluster.create_role(name, pw)
        roles[pw] = name
    yield db, roles
    pg_cluster.drop_database(db)


def _whoami(engine) -> str:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT current_user")).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("idx", range(len(HOSTILE)))
def test_hostile_password_logs_in_via_build_and_runtime(pg_cluster, hostile_db, idx):
    db, roles = hostile_db
    pw = HOSTILE[idx]
    role = roles[pw]
    d = dsn.build(driver="pg8000", user=role, password=pw, database=db, host=pg_cluster.host, connect_timeout=5)
    assert _whoami(create_engine(d.engine_url, connect_args=d.connect_args)) == role
    env = {"DATABASE_URL": d.url}
    assert _whoami(runtime.build_engine(runtime.database_url_from_env(env))) == role
    pieces = {"DB_HOST": pg_cluster.host, "DB_NAME": db, "DB_USER": role, "DB_PASSWORD": pw}
    if pw.endswith("\n"):
        # decision (runtime._strip_newline): a trailing newline is taken as a --data-file artefact
        with pytest.warns(runtime.TrailingNewlineWarning):
            url = runtime.database_url_from_env(pieces)
        assert connect.probe(url, timeout=5).sqlstate == "28P01"
    else:
        assert _whoami(runtime.build_engine(runtime.database_url_from_env(pieces))) == role


def test_nfc_and_nfd_are_one_password(pg_cluster, hostile_db):
    """SCRAM applies SASLprep (NFKC) on both sides, so either spelling logs into either role."""
    db, roles = hostile_db
    nfc, nfd = unicodedata.normalize("NFC", WORD), unicodedata.normalize("NFD", WORD)
    assert nfc != nfd
    for role_pw, login_pw in ((nfc, nfd), (nfd, nfc)):
        d = dsn.build(driver="pg8000", user=roles[role_pw], password=login_pw, database=db, host=pg_cluster.host)
        assert connect.probe(d, timeout=5).ok


@pytest.mark.parametrize("pw", ["caf\u00e9 \U0001F600", "cafe\u0301", "ctl\x01char", "\u00a0nbsp\u00ad"])
def test_server_computed_verifier_agrees_with_our_client(pg_cluster, hostile_db, pw):
    """A password set by PostgreSQL itself (server-side SASLprep with its raw fallback) is accepted from us."""
    db, _ = hostile_db
    role = f"{db}_srv{secrets.token_hex(2)}"
    pg_cluster.execute(f"SET log_statement = 'none'; CREATE ROLE {quote_ident(role)} LOGIN "
                       f"PASSWORD {quote_literal(pw)}")
    d = dsn.build(driver="pg8000", user=role, password=pw, database=db, host=pg_cluster.host)
    assert connect.probe(d, timeout=5).ok


def test_runtime_engine_sets_timeouts_and_name(pg_cluster, fresh_db):
    db, user, pw = fresh_db
    d = dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host, connect_timeout=3)
    engine = runtime.build_engine(d.url, statement_timeout_ms=1234, application_name="svc-x")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "1234ms"
            assert conn.execute(text("SHOW application_name")).scalar() == "svc-x"
            assert conn.execute(text("SHOW ssl")).scalar() == "on"
            assert conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()
            # reads are no longer bounded by the 3 s connect timeout, but by statement_timeout + margin
            assert runtime.lift_timeout(conn, None) == pytest.approx(1.234 + runtime.READ_TIMEOUT_MARGIN)
            conn.execute(text("SELECT pg_sleep(0.1)"))
    finally:
        engine.dispose()


def test_lift_timeout_lets_long_statement_outlive_connect_timeout(pg_cluster, fresh_db):
    db, user, pw = fresh_db
    d = dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host, connect_timeout=1)
    conn = connect.connect(d, timeout=0.5)
    with pytest.raises(TimeoutError):
        conn.run("SELECT pg_sleep(1)")  # pg8000's timeout bounds every read (DESIGN §6)
    conn._usock.close()  # the protocol is out of step after a timed-out read: drop the socket
    conn = connect.connect(d, timeout=0.5)
    try:
        assert runtime.lift_timeout(conn, None) == 0.5
        conn.run("SELECT pg_sleep(0.8)")
    finally:
        conn.close()


def test_get_engine_is_shared(pg_cluster, fresh_db, monkeypatch):
    db, user, pw = fresh_db
    d = dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host)
    monkeypatch.setenv("DATABASE_URL", d.url)
    runtime.reset_engine()
    try:
        a = runtime.get_engine()
        assert runtime.get_engine() is a
        assert _whoami(a) == user
    finally:
        runtime.reset_engine()


def test_sslmode_disable_fails_and_lint_explains(pg_cluster, fresh_db):
    db, user, pw = fresh_db
    built = dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host)
    assert connect.probe(built, timeout=5).ok
    off = dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host,
                    sslmode="disable")
    result = connect.probe(off, timeout=5)
    assert not result.ok and result.sqlstate == "28000" and result.diagnosis.code == "ssl-required"
    with pytest.raises(Exception) as err:
        _whoami(runtime.build_engine(off.url))
    assert sqlstate_of(err.value) == "28000" and "no encryption" in str(err.value)
    findings = {f.code: f for f in dsn.lint(off.url, private_ip=pg_cluster.host)}
    assert findings["sslmode-disabled"].severity == "error"
    assert "no encryption" in findings["sslmode-disabled"].message


def test_psycopg_style_url_without_sslmode_still_works_for_pg8000(pg_cluster, fresh_db):
    """No sslmode: pg8000 tries SSL opportunistically and succeeds here, but lint warns (downgradable)."""
    db, user, pw = fresh_db
    url = runtime.compose_url(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host)
    assert connect.probe(url, timeout=5).ok
    assert {f.code for f in dsn.lint(url, private_ip=pg_cluster.host)} == {"sslmode-missing"}


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_verify_modes_log_in_with_the_server_ca(pg_cluster, fresh_db, sslmode):
    """B7: the server CA (config: instances.X.server_ca) reaches the driver as sslrootcert; without it the
    certificate is checked against the system CAs and the login fails."""
    db, user, pw = fresh_db
    ca = str(pg_cluster.data_dir / "root.crt")
    with_ca = dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host,
                        sslmode=sslmode, sslrootcert=ca)
    assert connect.probe(with_ca, timeout=5).ok
    assert _whoami(runtime.build_engine(with_ca.url)) == user
    pieces = {"DB_HOST": pg_cluster.host, "DB_NAME": db, "DB_USER": user, "DB_PASSWORD": pw,
              "DB_SSLMODE": sslmode, "DB_SSLROOTCERT": ca}
    assert _whoami(runtime.build_engine(runtime.database_url_from_env(pieces))) == user
    without = dsn.build(driver="pg8000", user=user, password=pw, database=db, host=pg_cluster.host, sslmode=sslmode)
    assert not connect.probe(without, timeout=5).ok


def test_the_configured_server_ca_reaches_every_dsn_deployctl_builds(pg_cluster, fresh_db, tmp_path):
    """B7 end to end: [instances.X] server_ca goes into the DSN deployctl logs in with (its path here), the DSN
    it stores for Cloud Run (the path as configured, relative to the image's WORKDIR) and the job's DB_* env."""
    import shutil

    from deployctl import config, dbtarget

    db, user, pw = fresh_db
    (tmp_path / "configs").mkdir()
    (tmp_path / "certs").mkdir()
    shutil.copy(pg_cluster.data_dir / "root.crt", tmp_path / "certs" / "core-ca.pem")
    toml = f"""
[environment]
project = "acme-dev"
region = "us-central1"
[instances.core]
connection_name = "acme-dev:us-central1:core"
private_ip = "{pg_cluster.host}"
ssl = "verify-ca"
server_ca = "certs/core-ca.pem"
[services.svc]
image = "img"
[services.svc.database]
instance = "core"
name = "{db}"
user = "{user}"
password_secret = "svc-db-password"
"""
    cfg = config.parse(toml, path=tmp_path / "configs" / "x.toml", env="x")
    ctx = type("Ctx", (), {"config": cfg})()
    target = dbtarget.resolve(ctx, "svc", ask_admin=False)
    here = dbtarget.build_dsn(target, pw, here=True)
    assert connect.probe(here, timeout=5).ok
    stored = dbtarget.build_dsn(target, pw).url
    assert "sslrootcert=certs/core-ca.pem" in stored and str(tmp_path) not in stored
    assert dbtarget.pieces_env(target)["DB_SSLROOTCERT"] == "certs/core-ca.pem"
