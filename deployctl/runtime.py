"""What a service or a migration env.py imports to turn its environment into a SQLAlchemy engine.

Tiny on purpose: stdlib at import time, SQLAlchemy (and the driver) only when an engine is built, so importing
this never costs a service its start-up and never blocks on the database (`create_engine` does not connect).

A stored DSN speaks libpq's words (`sslmode`, `sslrootcert`, `connect_timeout`) whatever its driver, so the
value in Secret Manager says what SSL it needs. `engine_args()` translates them per driver (DESIGN §6):
pg8000 rejects `sslmode` as a keyword (TypeError) and takes `ssl_context` / `timeout`; asyncpg takes `ssl` /
`timeout`; psycopg hands them to libpq unchanged. Connector mode (Cloud SQL Python Connector) is spelled
`?instance_connection_name=P:R:I&ip_type=private` with no host, and becomes a `creator`.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import sys
import threading
import warnings
import weakref
from urllib.parse import quote

from deployctl.errors import ConfigError  # stdlib-only, like this module

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
# Reads may legitimately wait as long as the longest statement; beyond that the peer is gone.
READ_TIMEOUT_MARGIN = 10.0
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
CONNECTOR_KEYS = ("instance_connection_name", "ip_type", "iam_auth")
_LIBPQ_SSL_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
_log = logging.getLogger("deployctl.runtime")


class DatabaseNotConfigured(ConfigError, RuntimeError):
    """No DATABASE_URL and not enough DB_* pieces (a RuntimeError too: services catch it as one)."""


class TrailingNewlineWarning(UserWarning):
    """A stored value ends with a newline (typically `gcloud secrets versions add --data-file`)."""


def _strip_newline(name: str, value: str) -> str:
    # Decision: a raw newline can never be part of a URL (an intended one is written %0A), and in a password
    # piece it is, in practice, always the artefact of `--data-file` / `echo`. So we warn (naming the variable,
    # never the value) and connect without it: that is what the user meant. Fix the secret to silence it.
    if value.endswith(("\n", "\r")):
        message = (f"{name} ends with a newline; it was ignored. Store the secret without it "
                   "(printf '%s' ... | gcloud secrets versions add ... --data-file=-, or "
                   "`deployctl dsn SERVICE --write-secret`)")
        # Both: a warning for code that filters them, and the log (Python shows a warning once per place).
        _log.warning(message)
        warnings.warn(message, TrailingNewlineWarning, stacklevel=3)
        return value.rstrip("\r\n")
    return value


def _q(value: str) -> str:
    # quote(safe=""), never quote_plus: SQLAlchemy decodes with unquote, so quote_plus turns spaces into '+'.
    return quote(value, safe="")


def compose_url(*, driver: str, user: str, password: str | None, database: str, host: str | None = None,
                port: int | None = 5432, query: dict[str, str] | None = None) -> str:
    """The storage form of a DSN: every component percent-encoded, libpq words in the query."""
    auth = _q(user) + (":" + _q(password) if password is not None else "") + "@"
    netloc = ""
    if host:
        netloc = f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{int(port)}"
    url = f"postgresql+{driver}://{auth}{netloc}/{_q(database)}"
    if query:
        # '/' may stay raw in a query value (RFC 3986), which keeps an sslrootcert path readable
        url += "?" + "&".join(f"{_q(k)}={quote(str(v), safe='/')}" for k, v in query.items())
    return url


def database_url_from_env(environ=os.environ) -> str:
    """DATABASE_URL, or one composed from DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD/DB_SSLMODE/DB_SSLROOTCERT
    (+ DB_DRIVER, default pg8000), or INSTANCE_CONNECTION_NAME (+ DB_IP_TYPE, DB_IAM_AUTH) for connector mode."""
    if environ.get("DATABASE_URL"):
        return _strip_newline("DATABASE_URL", environ["DATABASE_URL"])
    missing = [k for k in ("DB_NAME", "DB_USER") if not environ.get(k)]
    icn = environ.get("INSTANCE_CONNECTION_NAME", "").strip()
    if not icn and not environ.get("DB_HOST"):
        missing.insert(0, "DB_HOST (or INSTANCE_CONNECTION_NAME)")
    if missing:
        raise DatabaseNotConfigured("no database configured: set DATABASE_URL, or " + ", ".join(missing),
                                    hint="deployctl deploy sets these from the service's [database] config")
    password = environ.get("DB_PASSWORD")
    if password is not None:
        password = _strip_newline("DB_PASSWORD", password)
    driver = environ.get("DB_DRIVER", "pg8000").strip()
    query: dict[str, str] = {}
    if icn:
        query["instance_connection_name"] = icn
        query["ip_type"] = environ.get("DB_IP_TYPE", "private").strip()
        if environ.get("DB_IAM_AUTH", "").strip().lower() in ("1", "true", "yes"):
            query["iam_auth"] = "true"
        host = None
    else:
        host = environ["DB_HOST"].strip()
        query["sslmode"] = environ.get("DB_SSLMODE", "require").strip()
        if environ.get("DB_SSLROOTCERT", "").strip():
            query["sslrootcert"] = environ["DB_SSLROOTCERT"].strip()
    if environ.get("DB_CONNECT_TIMEOUT"):
        query["connect_timeout"] = environ["DB_CONNECT_TIMEOUT"].strip()
    return compose_url(driver=driver, user=environ["DB_USER"].strip(), password=password,
                       database=environ["DB_NAME"].strip(), host=host,
                       port=int(environ.get("DB_PORT") or 5432) if host else None, query=query)


def format_seconds(seconds: float) -> str:
    """10.0 -> "10", 0.5 -> "0.5": a timeout as a URL query value."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _connect_timeout(query: dict) -> float:
    text = query.pop("connect_timeout", None)
    if text is None:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        timeout = float(text)
    except ValueError:
        raise ValueError(f"connect_timeout is not a number (a value of {len(text)} characters)") from None
    if not timeout > 0:  # 0 is "wait forever" to libpq and a non-blocking socket to pg8000
        raise ValueError("connect_timeout must be more than 0 seconds")
    return timeout


def _root_cert(mode: str, ssl_words: dict) -> None:
    # Like libpq (and asyncpg), PGSSLROOTCERT names the server CA when the URL does not; that is how an asyncpg
    # URL, which cannot carry sslrootcert, gets one.
    if "sslrootcert" not in ssl_words and mode not in ("disable", "allow", "prefer") and os.environ.get("PGSSLROOTCERT"):
        ssl_words["sslrootcert"] = os.environ["PGSSLROOTCERT"]


def driver_of(drivername: str) -> str:
    """'postgresql+pg8000' -> 'pg8000'; plain 'postgresql' is SQLAlchemy's psycopg2 default."""
    return drivername.partition("+")[2] or "psycopg2"


def ssl_context_for(sslmode: str, *, sslrootcert: str | None = None, sslcert: str | None = None,
                    sslkey: str | None = None) -> ssl.SSLContext | bool | None:
    """libpq's sslmode as pg8000's ssl_context: False (no SSL), None (opportunistic), a shared unverified
    SSLContext (required, like True) or a verifying SSLContext. Like libpq, `require` with a root certificate verifies the CA."""
    if sslmode not in SSLMODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)} (got a value of {len(sslmode)} "
                         "characters; a trailing newline or typo?)")
    if sslmode == "disable":
        return False
    if sslmode in ("allow", "prefer"):
        return None
    if sslmode == "require" and not sslrootcert and not sslcert:
        # Same as pg8000's ssl_context=True (SSL required, unverified, like libpq's require), but built once:
        # True makes pg8000 call ssl.create_default_context() per connection, ~50 ms of CA loading each.
        return _unverified_context()
    ctx = ssl.create_default_context(cafile=sslrootcert) if sslrootcert else ssl.create_default_context()
    if sslmode == "require":
        ctx.check_hostname = False
        if not sslrootcert:
            ctx.verify_mode = ssl.CERT_NONE
    elif sslmode == "verify-ca":
        ctx.check_hostname = False
    if sslcert:
        ctx.load_cert_chain(sslcert, sslkey)
    return ctx


_unverified: ssl.SSLContext | None = None


def _unverified_context() -> ssl.SSLContext:
    global _unverified
    if _unverified is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _unverified = ctx
    return _unverified


def is_unverified(ctx) -> bool:
    """True for pg8000's ssl_context=True or our shared equivalent (SSL required, certificate not checked)."""
    return ctx is True or ctx is _unverified


def engine_args(url):
    """(engine URL, connect_args) for create_engine, with libpq words translated for the URL's driver."""
    from sqlalchemy.engine import make_url

    u = make_url(url) if isinstance(url, str) else url
    query = {k: (v[-1] if isinstance(v, (list, tuple)) else v) for k, v in u.query.items()}
    for k in CONNECTOR_KEYS:
        query.pop(k, None)
    driver = driver_of(u.drivername)
    timeout = _connect_timeout(query)
    connect_args: dict = {}
    if driver == "pg8000":
        install_saslprep_fallback()
        ssl_words = {k: query.pop(k) for k in _LIBPQ_SSL_KEYS if k in query}
        mode = ssl_words.pop("sslmode", "prefer")
        _root_cert(mode, ssl_words)
        connect_args["ssl_context"] = ssl_context_for(mode, **ssl_words)
        connect_args["timeout"] = timeout
    elif driver == "asyncpg":
        ssl_words = {k: query.pop(k) for k in _LIBPQ_SSL_KEYS if k in query}
        mode = ssl_words.pop("sslmode", query.pop("ssl", "prefer"))
        _root_cert(mode, ssl_words)
        ctx = ssl_context_for(mode, **ssl_words)
        connect_args["ssl"] = mode if is_unverified(ctx) or ctx is None else ctx
        connect_args["timeout"] = timeout
    else:  # libpq drivers understand their own words; libpq's timeout is whole seconds (0 = forever)
        query["connect_timeout"] = str(math.ceil(timeout))
    return u.set(query=query), connect_args


def connector_spec(url) -> dict | None:
    """The Cloud SQL connector description carried in a DSN's query, or None for a direct DSN."""
    from sqlalchemy.engine import make_url

    u = make_url(url) if isinstance(url, str) else url
    name = u.query.get("instance_connection_name")
    if not name:
        return None
    return {"instance_connection_name": name, "ip_type": u.query.get("ip_type", "private"),
            "iam_auth": str(u.query.get("iam_auth", "")).lower() in ("1", "true", "yes"),
            "driver": driver_of(u.drivername), "user": u.username, "password": u.password,
            "database": u.database}


def connector_creator(spec: dict, *, timeout: float = DEFAULT_CONNECT_TIMEOUT, **driver_kwargs):
    """A zero-argument function returning a DB-API connection through the Cloud SQL Python Connector.

    The connector is the one Google library this module touches; it is imported only in connector mode.
    DEPLOYCTL_SQLADMIN_ENDPOINT points it at the local cloud's admin API.
    """
    from google.cloud.sql.connector import Connector

    if spec["driver"] != "pg8000":
        raise ValueError("connector mode is supported for the pg8000 driver only")
    install_saslprep_fallback()
    endpoint = os.environ.get("DEPLOYCTL_SQLADMIN_ENDPOINT") or None
    options: dict = {}
    if endpoint:
        # The local cloud's admin API takes any bearer token; Application Default Credentials may not exist.
        import google.oauth2.credentials

        options["credentials"] = google.oauth2.credentials.Credentials(
            token=os.environ.get("DEPLOYCTL_SQLADMIN_TOKEN", "deployctl-local-cloud"))
    connector = Connector(ip_type=spec["ip_type"], enable_iam_auth=spec["iam_auth"], timeout=int(timeout),
                          sqladmin_api_endpoint=endpoint, refresh_strategy="lazy", **options)
    kwargs = {"user": spec["user"], "db": spec["database"], **driver_kwargs}
    if not spec["iam_auth"]:
        kwargs["password"] = spec["password"]

    def creator():
        return connector.connect(spec["instance_connection_name"], "pg8000", **kwargs)

    creator.connector = connector  # so callers can close() it
    return creator


def lift_timeout(conn, timeout: float | None = None) -> float | None:
    """Set the socket read timeout of a pg8000 connection (None: no limit); returns the previous one.

    pg8000's `timeout` bounds every socket read for the life of the connection, so a migration statement
    that legitimately runs longer than the connect timeout would die as a network error. Call this after
    connecting and rely on statement_timeout / lock_timeout instead. Accepts a SQLAlchemy Connection,
    a pool proxy, a pg8000 DB-API connection or a pg8000.native.Connection.
    """
    raw = conn
    for attr in ("connection", "dbapi_connection", "driver_connection"):
        inner = getattr(raw, attr, None)
        if inner is not None and inner is not raw and not hasattr(raw, "_usock"):
            raw = inner
    sock = getattr(raw, "_usock", None)
    if sock is None:
        raise TypeError(f"not a pg8000 connection: {type(conn).__name__}")
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    return previous


def _default_application_name() -> str:
    return os.environ.get("K_SERVICE") or os.environ.get("CLOUD_RUN_JOB") or os.path.basename(sys.argv[0] or "python")


def _engine_setup(url, statement_timeout_ms: int, application_name: str | None, engine_kw: dict):
    """(url, engine URL, connect_args, driver) with the per-connection settings every engine gets."""
    url = url if url is not None else database_url_from_env()
    if isinstance(url, str):
        url = _strip_newline("database URL", url)
    engine_url, connect_args = engine_args(url)
    driver = driver_of(engine_url.drivername)
    app = (application_name or _default_application_name())[:63]
    settings = {"statement_timeout": str(int(statement_timeout_ms))}
    if driver == "pg8000":
        connect_args.update(application_name=app, startup_params=settings)
    elif driver == "asyncpg":
        connect_args["server_settings"] = {**settings, "application_name": app}
    else:
        connect_args.update(application_name=app, options=f"-c statement_timeout={int(statement_timeout_ms)}")
    connect_args.update(engine_kw.pop("connect_args", {}))
    engine_kw.setdefault("pool_pre_ping", True)
    return url, engine_url, connect_args, driver


def build_engine(url=None, *, statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
                 application_name: str | None = None, read_timeout: float | None = None, **engine_kw):
    """A new engine (not shared). Connecting is bounded by the DSN's connect_timeout (default 10 s); each
    connection then gets statement_timeout and application_name, and pg8000's socket read timeout is raised
    to statement_timeout + margin (or `read_timeout`), so reads stay bounded without killing long statements.
    For an asyncpg URL use build_async_engine."""
    from sqlalchemy import create_engine, event

    url, engine_url, connect_args, driver = _engine_setup(url, statement_timeout_ms, application_name, engine_kw)
    if driver == "asyncpg":
        raise ValueError("an asyncpg URL needs an async engine: use deployctl.runtime.build_async_engine()")
    spec = connector_spec(url)
    if spec:
        timeout = connect_args.pop("timeout", DEFAULT_CONNECT_TIMEOUT)
        connect_args.pop("ssl_context", None)  # the connector's socket is already TLS
        engine_kw["creator"] = creator = connector_creator(spec, timeout=timeout, **connect_args)
        engine = create_engine(engine_url.set(query={}), **engine_kw)
        _connectors[engine] = creator.connector
    else:
        engine = create_engine(engine_url, connect_args=connect_args, **engine_kw)
    if driver == "pg8000":
        if read_timeout is None and statement_timeout_ms:
            read_timeout = statement_timeout_ms / 1000 + READ_TIMEOUT_MARGIN

        @event.listens_for(engine, "connect")
        def _after_connect(dbapi_conn, _record):
            lift_timeout(dbapi_conn, read_timeout)

    return engine


def build_async_engine(url=None, *, statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
                       application_name: str | None = None, **engine_kw):
    """build_engine for postgresql+asyncpg URLs: an AsyncEngine with the same timeouts and settings."""
    from sqlalchemy.ext.asyncio import create_async_engine

    url, engine_url, connect_args, driver = _engine_setup(url, statement_timeout_ms, application_name, engine_kw)
    if driver != "asyncpg":
        raise ValueError(f"build_async_engine takes a postgresql+asyncpg URL, not {driver}: use build_engine()")
    return create_async_engine(engine_url, connect_args=connect_args, **engine_kw)


# Connector mode: the Cloud SQL connector of each engine. It runs an event loop in a thread of its own that
# engine.dispose() knows nothing of: dispose(engine) ends it too.
_connectors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dispose(engine) -> None:
    """engine.dispose(), and for a connector-mode engine also close its Cloud SQL connector (its thread, event
    loop and HTTP session would otherwise stay for the life of the process, one more per engine built)."""
    engine.dispose()
    connector = _connectors.pop(engine, None)
    if connector is not None:
        connector.close()


_engine = None
_engine_lock = threading.Lock()


def get_engine(**kw):
    """The process's shared engine, built on first use (thread-safe); see build_engine for the arguments."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = build_engine(**kw)
    return _engine


def reset_engine() -> None:
    """Dispose of the shared engine (tests, and after fork)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            dispose(_engine)
        _engine = None


_saslprep_patched = False


def install_saslprep_fallback() -> None:
    """Make pg8000's SCRAM client prepare passwords the way PostgreSQL and libpq do.

    SCRAM applies SASLprep (NFKC and friends) to the password, on the server when it stores a verifier and
    on the client when it logs in, so NFC and NFD spellings of one word are the same password. Where SASLprep
    fails (code points unassigned in Unicode 3.2, such as every emoji; ASCII control characters), PostgreSQL
    and libpq fall back to the raw UTF-8 bytes, but scramp raises ScramException, so pg8000 cannot log in
    with such a password at all. We give scramp the same fallback. Idempotent; touches scramp only.
    """
    global _saslprep_patched
    if _saslprep_patched:
        return
    try:
        import scramp.core as core
        from scramp.utils import ScramException
    except ImportError:  # pragma: no cover - no pg8000 installed
        return
    original = core.saslprep

    def saslprep_like_postgres(source):
        try:
            return original(source)
        except ScramException:
            return source

    core.saslprep = saslprep_like_postgres
    _saslprep_patched = True
