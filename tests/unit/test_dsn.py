"""dsn.build / parse / lint / mask without a database."""

from __future__ import annotations

import ssl
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from deployctl import dsn, redact, runtime
from deployctl.errors import ConfigError

HOST = "10.20.0.3"
surrogate_free = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
padded = st.tuples(st.sampled_from(["", " ", "  "]), surrogate_free, st.sampled_from(["", " ", "\t"])).map("".join)
ASCII_PUNCT = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=padded | st.text(st.sampled_from(ASCII_PUNCT + " +%"), max_size=30),
       user=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
       driver=st.sampled_from(dsn.DRIVERS))
def test_any_password_survives_build_then_make_url(password, user, driver):
    d = dsn.build(driver=driver, user=user, password=password, database="db", host=HOST)
    u = make_url(d.url)
    assert u.password == password
    assert u.username == user
    assert u.host == HOST and u.database == "db"
    assert d.engine_url.password == password
    p = dsn.parse(d.url)
    assert (p.password, p.user, p.driver, p.host, p.port) == (password, user, driver, HOST, 5432)
    # masked: exactly the URL with the encoded password replaced, whatever the password
    assert d.masked == d.url.replace(f":{quote(password, safe='')}@", ":***@", 1)


def test_url_uses_quote_not_quote_plus():
    d = dsn.build(driver="pg8000", user="u", password="a b+c%d", database="db", host=HOST)
    assert "a%20b%2Bc%25d@" in d.url
    assert "+" not in d.url.split("@")[0].split("//")[1]


def test_per_driver_connect_args():
    pg = dsn.build(driver="pg8000", user="u", password="pw12", database="db", host=HOST, connect_timeout=7)
    assert runtime.is_unverified(pg.connect_args["ssl_context"]) and pg.connect_args["timeout"] == 7.0
    assert pg.connect_args["ssl_context"].verify_mode == ssl.CERT_NONE
    assert "sslmode" not in pg.engine_url.query and pg.url.endswith("?sslmode=require&connect_timeout=7")
    apg = dsn.build(driver="asyncpg", user="u", password="pw12", database="db", host=HOST, connect_timeout=7)
    assert apg.connect_args == {"ssl": "require", "timeout": 7.0}
    assert apg.url.endswith("/db?ssl=require") and any("'timeout': 7" in n for n in apg.notes)
    ps = dsn.build(driver="psycopg", user="u", password="pw12", database="db", host=HOST)
    assert ps.connect_args == {}
    assert dict(ps.engine_url.query) == {"sslmode": "require", "connect_timeout": "10"}
    full = dsn.build(driver="pg8000", user="u", password="pw12", database="db", host=HOST, sslmode="verify-full")
    assert isinstance(full.connect_args["ssl_context"], ssl.SSLContext)
    assert full.connect_args["ssl_context"].check_hostname
    ca = dsn.build(driver="pg8000", user="u", password="pw12", database="db", host=HOST, sslmode="verify-ca")
    ctx = ca.connect_args["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    off = dsn.build(driver="pg8000", user="u", password="pw12", database="db", host=HOST, sslmode="disable")
    assert off.connect_args["ssl_context"] is False


def test_connector_mode_description():
    d = dsn.build(driver="pg8000", user="svc", password="s3cret!", database="db",
                  instance_connection_name="p:r:i")
    assert d.connector["instance_connection_name"] == "p:r:i"
    assert d.connector["ip_type"] == "private" and d.connector["password"] == "s3cret!"
    assert make_url(d.url).host is None
    with pytest.raises(dsn.DsnError):
        dsn.build(driver="asyncpg", user="u", password="pw12", database="db", instance_connection_name="p:r:i")


def test_masked_and_repr_hide_password():
    d = dsn.build(driver="pg8000", user="u", password="hunter2 two", database="db", host=HOST)
    assert "hunter2" not in d.masked and "***" in d.masked
    assert "hunter2" not in repr(d) and "hunter2" not in repr(dsn.parse(d.url))
    assert redact.redact(d.url).count("hunter2") == 0  # registered on build
    assert dsn.mask("postgresql+pg8000://u:p%40ss@h/db") == "postgresql+pg8000://u:***@h/db"


def test_parse_error_does_not_echo_password():
    with pytest.raises(dsn.DsnError) as err:
        dsn.parse("postgresql+pg8000://u:p@ss:Topsecret@h/db")  # raw "@" puts password text in the port
    assert "Topsecret" not in str(err.value) and err.value.hint
    assert err.value.__cause__ is None and err.value.__suppress_context__


def codes(url, **kw):
    return {f.code: f.severity for f in dsn.lint(url, **kw)}


GOOD = "postgresql+pg8000://u:p%40ss@10.20.0.3:5432/db?sslmode=require"


def test_lint_clean_for_built_dsn_via_runtime():
    d = dsn.build(driver="pg8000", user="u", password="plain", database="db", host=HOST)
    assert dsn.lint(d.url, private_ip=HOST, via_runtime=True) == []
    d = dsn.build(driver="psycopg", user="u", password="plain", database="db", host=HOST)
    assert dsn.lint(d.url, private_ip=HOST) == []


@pytest.mark.parametrize("url,code,severity", [
    ("postgresql+pg8000://u:p@ss@10.20.0.3/db?sslmode=require", "unencoded-reserved", "error"),
    ("postgresql+pg8000://u:p/ss@10.20.0.3/db?sslmode=require", "unencoded-reserved", "error"),
    ("postgresql+pg8000://u:p ss@10.20.0.3/db?sslmode=require", "unencoded-reserved", "error"),
    ("postgresql+pg8000://u:p#s@10.20.0.3/db?sslmode=require", "unencoded-reserved", "error"),
    ("postgresql+psycopg://u:a+b@10.20.0.3/db?sslmode=require", "quote-plus-space", "warning"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db", "sslmode-missing", "warning"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db?sslmode=disable", "sslmode-disabled", "error"),
    ("postgresql+psycopg://u:pw@db.example.com/db?sslmode=disable", "sslmode-disabled", "warning"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db?sslmode=requre", "sslmode-invalid", "error"),
    ("postgresql+pg8000://u:pw@10.20.0.3/db?sslmode=require", "sslmode-for-pg8000", "warning"),
    ("postgresql+asyncpg://u:pw@10.20.0.3/db?sslmode=require", "sslmode-for-asyncpg", "warning"),
    ("postgresql+psycopg://u:p%25w@10.20.0.3/db?sslmode=require", "alembic-percent", "warning"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db?sslmode=require\n", "trailing-newline", "error"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db?sslmode=require\r\n", "trailing-newline", "error"),
    ("postgresql+psycopg://u:pw%0A@10.20.0.3/db?sslmode=require", "password-trailing-newline", "error"),
    ("postgresql+psycopg://u:pw%0d%0A@10.20.0.3/db?sslmode=require", "password-trailing-newline", "error"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db%0A?sslmode=require", "database-trailing-newline", "error"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db?sslmode=prefer", "sslmode-downgradable", "warning"),
    ("postgresql+psycopg://u:pw@10.20.0.3/db?sslmode=allow", "sslmode-downgradable", "warning"),
    ("postgresql+psycopg://u@10.20.0.3/db?sslmode=require&password=TopSecret99", "password-in-query", "warning"),
    ("postgresql+psycopg://u:pw@10.9.9.9/db?sslmode=require", "host-mismatch", "error"),
    ("postgresql+psycopg://u@10.20.0.3/db?sslmode=require", "no-password", "warning"),
    ("postgres://u:pw@10.20.0.3/db?sslmode=require", "bad-scheme", "error"),
    ("mysql+pymysql://u:pw@10.20.0.3/db", "bad-scheme", "error"),
    ("10.20.0.3:5432/db", "bad-scheme", "error"),
])
def test_lint_codes(url, code, severity):
    found = dsn.lint(url, private_ip=HOST)
    assert codes(url, private_ip=HOST).get(code) == severity
    f = next(f for f in found if f.code == code)
    assert f.message and f.hint


def test_lint_never_echoes_password():
    url = "postgresql+pg8000://u:Sup3r@Secret/x@10.20.0.3/db?sslmode=disable\n"
    for f in dsn.lint(url, private_ip=HOST):
        assert "Sup3r" not in f.message + f.hint and "Secret" not in f.message + f.hint


def test_lint_pg8000_sslmode_quiet_via_runtime():
    assert "sslmode-for-pg8000" not in codes(GOOD, via_runtime=True)
    assert "unencoded-reserved" not in codes(GOOD)


def test_lint_driver_hint():
    assert codes(GOOD, driver_hint="asyncpg").get("driver-mismatch") == "warning"


def test_runtime_engine_args_translates_sslmode_for_pg8000():
    url, args = runtime.engine_args("postgresql+pg8000://u:pw@h/db?sslmode=disable&connect_timeout=3")
    assert args == {"ssl_context": False, "timeout": 3.0} and dict(url.query) == {}
    _, args = runtime.engine_args("postgresql+pg8000://u:pw@h/db")
    assert args["ssl_context"] is None  # no sslmode: libpq's default, prefer (lint warns)
    with pytest.raises(ValueError) as err:
        runtime.engine_args("postgresql+pg8000://u:pw@h/db?sslmode=require%0A")
    assert "trailing newline" in str(err.value)


def test_database_url_from_env_pieces_and_newline(caplog):
    env = {"DB_HOST": HOST, "DB_NAME": "db", "DB_USER": "u", "DB_PASSWORD": "p@ss word\n"}
    with pytest.warns(runtime.TrailingNewlineWarning) as rec, caplog.at_level("WARNING", "deployctl.runtime"):
        url = runtime.database_url_from_env(env)
    assert "p@ss" not in str(rec[0].message)
    # never silently: the deployctl log says so too (a warning is shown once per place, a log line every time)
    assert [r.name for r in caplog.records] == ["deployctl.runtime"] and "DB_PASSWORD" in caplog.text
    assert "p@ss" not in caplog.text
    u = make_url(url)
    assert u.password == "p@ss word" and u.query["sslmode"] == "require" and u.drivername == "postgresql+pg8000"
    with pytest.warns(runtime.TrailingNewlineWarning):
        assert runtime.database_url_from_env({"DATABASE_URL": GOOD + "\n"}) == GOOD
    icn = runtime.database_url_from_env({"INSTANCE_CONNECTION_NAME": "p:r:i", "DB_NAME": "db", "DB_USER": "u",
                                         "DB_PASSWORD": "pw12"})
    assert runtime.connector_spec(icn)["instance_connection_name"] == "p:r:i"
    with pytest.raises(RuntimeError, match="DATABASE_URL") as err:
        runtime.database_url_from_env({})
    assert isinstance(err.value, ConfigError) and err.value.hint


def test_saslprep_fallback_matches_postgres():
    runtime.install_saslprep_fallback()
    import scramp.core

    assert scramp.core.saslprep("cafe\u0301") == "caf\u00e9"  # NFKC as before
    assert scramp.core.saslprep("pw\U0001F600") == "pw\U0001F600"  # unassigned in Unicode 3.2: raw, like PG


# What asyncpg.connect() (0.32) accepts among the keys a URL can give; SQLAlchemy passes every query key to it.
ASYNCPG_CONNECT_KEYWORDS = {"host", "port", "user", "password", "database", "ssl", "passfile",
                            "target_session_attrs", "krbsrvname", "gsslib", "direct_tls"}


@pytest.mark.parametrize("sslmode", ["require", "verify-ca", "verify-full", "disable"])
def test_asyncpg_url_works_as_printed_with_create_async_engine(sslmode, tmp_path):
    """B5: SQLAlchemy's asyncpg dialect hands the URL's query to asyncpg.connect() as keywords; libpq's
    sslmode/connect_timeout/sslrootcert there are a TypeError (checked by hand with asyncpg 0.32)."""
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg  # the dialect, not asyncpg itself

    from deployctl.emulator import certs

    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.make_ca().cert_pem)
    d = dsn.build(driver="asyncpg", user="u", password="p@ss w:rd", database="db", host=HOST, sslmode=sslmode,
                  sslrootcert=str(ca) if sslmode.startswith("verify") else None, connect_timeout=3)
    _, kwargs = PGDialect_asyncpg().create_connect_args(make_url(d.url))
    assert set(kwargs) <= ASYNCPG_CONNECT_KEYWORDS, kwargs
    assert kwargs["ssl"] == sslmode and kwargs["password"] == "p@ss w:rd"
    assert "sslmode-for-asyncpg" not in codes(d.url, private_ip=HOST)  # lint agrees: nothing for TypeError
    # the pieces the URL cannot carry are in connect_args (and said in notes)
    assert d.connect_args["timeout"] == 3.0
    if sslmode.startswith("verify"):
        assert isinstance(d.connect_args["ssl"], ssl.SSLContext) and any("PGSSLROOTCERT" in n for n in d.notes)


def test_runtime_takes_the_server_ca_from_pgsslrootcert(monkeypatch, tmp_path):
    from deployctl.emulator import certs

    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.make_ca().cert_pem)
    monkeypatch.setenv("PGSSLROOTCERT", str(ca))
    for url, key in (("postgresql+asyncpg://u:pw@h/db?ssl=verify-ca", "ssl"),
                     ("postgresql+pg8000://u:pw@h/db?sslmode=verify-full", "ssl_context")):
        ctx = runtime.engine_args(url)[1][key]
        # only that CA (create_default_context(cafile=...) loads no system CA besides)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.cert_store_stats()["x509_ca"] == 1
    # prefer/disable never pick it up
    assert runtime.engine_args("postgresql+pg8000://u:pw@h/db?sslmode=disable")[1]["ssl_context"] is False


def test_connect_timeout_keeps_fractions_for_pg8000_and_rounds_up_for_libpq():
    pg = dsn.build(driver="pg8000", user="u", password="pw12", database="db", host=HOST, connect_timeout=0.5)
    assert pg.url.endswith("connect_timeout=0.5") and pg.connect_args["timeout"] == 0.5
    ps = dsn.build(driver="psycopg", user="u", password="pw12", database="db", host=HOST, connect_timeout=0.5)
    assert ps.engine_url.query["connect_timeout"] == "1"  # not 0, which libpq reads as "wait forever"
    assert runtime.engine_args("postgresql+psycopg://u:pw@h/db?connect_timeout=2.1")[0].query["connect_timeout"] == "3"
    for bad in (0, -1, float("nan")):
        with pytest.raises(dsn.DsnError):
            dsn.build(driver="pg8000", user="u", password="pw12", database="db", host=HOST, connect_timeout=bad)
    for bad in ("0", "-3", "ten"):
        with pytest.raises(ValueError, match="connect_timeout"):
            runtime.engine_args(f"postgresql+pg8000://u:pw@h/db?connect_timeout={bad}")


def test_build_engine_refuses_an_asyncpg_url_with_the_async_alternative():
    with pytest.raises(ValueError, match="build_async_engine"):
        runtime.build_engine("postgresql+asyncpg://u:pw@h/db?ssl=require")


def test_an_at_sign_in_the_query_is_not_taken_for_the_userinfo():
    """C2: '@' in sslrootcert=/a@b/ca.pem is in the query; a correct URL lints clean and masks right."""
    url = "postgresql+psycopg://u:pw99@10.20.0.3:5432/db?sslmode=require&sslrootcert=/a@b/ca.pem"
    assert dsn.lint(url, private_ip=HOST) == []
    assert dsn.mask(url) == "postgresql+psycopg://u:***@10.20.0.3:5432/db?sslmode=require&sslrootcert=/a@b/ca.pem"
    redact.clear()
    dsn.parse(url)
    assert redact.redact("b/ca.pem 10.20.0.3") == "b/ca.pem 10.20.0.3"  # only the password is registered
    # while a raw '?' or '@' inside the password still counts as the password's
    for raw in ("postgresql+psycopg://u:p?ss@10.20.0.3/db?sslmode=require",
                "postgresql+psycopg://u:p@ss@10.20.0.3/db?sslmode=require"):
        assert codes(raw, private_ip=HOST) == {"unencoded-reserved": "error"}
        assert dsn.mask(raw) == "postgresql+psycopg://u:***@10.20.0.3/db?sslmode=require"


def test_a_password_in_the_query_is_masked_and_registered():
    """C3: libpq's password= parameter."""
    url = "postgresql+psycopg://u@10.20.0.3/db?password=TopSecret99&sslmode=require"
    assert dsn.mask(url) == "postgresql+psycopg://u@10.20.0.3/db?password=***&sslmode=require"
    assert dsn.has_password(url)
    dsn.parse(url)
    assert redact.redact("x TopSecret99 y") == "x *** y"


def test_the_reserved_character_finding_does_not_say_which():
    """C5: naming the characters would tell something about the password."""
    for pw in ("a@b", "a/b", "a b"):
        f = next(f for f in dsn.lint(f"postgresql+psycopg://u:{pw}@10.20.0.3/db?sslmode=require")
                 if f.code == "unencoded-reserved")
        assert f.message == dsn.lint("postgresql+psycopg://u:x#y@10.20.0.3/db?sslmode=require")[0].message


# Review 2, findings 2/3: a raw '@' ahead of a '?k=' (or a '?k=' alone) in a password. The userinfo ends at the
# last '@' before the host, so the '?' is the password's (unencoded-reserved), the host is the real one, and
# whatever SQLAlchemy or the driver would quote of it (its host, port, database and query slots) is registered.
HOSTILE = ["Zq9!x@LongSecretPart?k=v", "ab?c=defghij", "ab@cd:ef gh#ij/kl", "Xy@Qz:77 sEcr3t wOrdz/"]


def _sixes(pw: str) -> list[str]:
    return [pw[i:i + 6] for i in range(len(pw) - 5)]


def _what_parsers_say(url: str) -> str:
    """What SQLAlchemy's parse error, or else the driver's errors, would quote of the URL's slots."""
    try:
        u = make_url(url)
    except Exception as e:  # noqa: BLE001 - the port slot, quoted by int()
        return str(e)
    return f"host {u.host} port {u.port} database {u.database} user {u.username} query {dict(u.query)}"


@pytest.mark.parametrize("pw", HOSTILE)
def test_a_raw_at_or_query_mark_in_a_password_is_reserved_and_no_piece_of_it_shows(pw):
    from deployctl.commands.dsn import lint_value

    redact.clear()
    url = f"postgresql+pg8000://cross_chain_user:{pw}@{HOST}:5432/cross_chain?sslmode=require"
    assert codes(url, private_ip=HOST, via_runtime=True) == {"unencoded-reserved": "error"}
    result = lint_value(None, url.encode())
    assert result.url == f"postgresql+pg8000://cross_chain_user:***@{HOST}:5432/cross_chain?sslmode=require"
    said = redact.redact(_what_parsers_say(url) + " " + result.model_dump_json())
    assert not [p for p in _sixes(pw) if p in said], said
    assert HOST in redact.redact(f"host {HOST}")  # the real host is not a piece of the password
    redact.clear()


def test_a_query_mark_without_a_query_after_the_host_is_still_the_passwords():
    url = f"postgresql+pg8000://u:ab?c=defghij@{HOST}/db"
    assert codes(url, private_ip=HOST)["unencoded-reserved"] == "error"
    assert dsn.mask(url) == f"postgresql+pg8000://u:***@{HOST}/db"
    # an '@' in a query value of a URL without userinfo stays in the query
    assert dsn.mask("postgresql+psycopg://h/db?sslrootcert=/a@b/ca.pem") == \
        "postgresql+psycopg://h/db?sslrootcert=/a@b/ca.pem"


def test_a_probe_of_a_string_sqlalchemy_cannot_parse_withholds_its_message():
    from deployctl.db.connect import probe

    redact.clear()
    r = probe(f"postgresql+pg8000://cross_chain_user:ab@cd:ef gh#ij/kl@{HOST}:5432/cross_chain", timeout=1)
    assert not r.ok and r.diagnosis.code == "unparseable"
    assert "ef gh" not in r.diagnosis.cause + r.diagnosis.hint and "dsn.lint" in r.diagnosis.hint


def test_our_own_asyncpg_login_names_the_server_ca_here(tmp_path):
    """Review 2, finding 4: migrate's asyncpg credential (here=True) carries the CA, which the pg8000 path that
    deployctl reads it through (migrate_env._sync_url, runtime.engine_args) verifies with."""
    from deployctl import dbtarget, migrate_env
    from deployctl.emulator import certs

    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.make_ca().cert_pem)
    t = dbtarget.DatabaseTarget(
        service="s", instance_key="core", instance_name="core-pg", connection_name="p:r:core-pg", host=HOST,
        configured_ip=HOST, port=5432, database="db", user="u", password_secret="pw", url_secret=None,
        ssl="verify-ca", driver="asyncpg", mode="direct", ip_type="private", iam_auth=False,
        server_ca="certs/ca.pem", server_ca_here=str(ca))
    here = dbtarget.build_dsn(t, "pw12", here=True).url
    assert f"sslrootcert={ca}" in here and "ssl=verify-ca" in here
    _, args = runtime.engine_args(migrate_env._sync_url(here))
    assert args["ssl_context"].verify_mode == ssl.CERT_REQUIRED and args["ssl_context"].get_ca_certs()
    assert "sslrootcert" not in dbtarget.build_dsn(t, "pw12").url  # the stored one: asyncpg takes no such key
