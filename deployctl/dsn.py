"""Connection strings: build, parse, lint, mask (DESIGN §6).

The storage form (`Dsn.url`, what goes into Secret Manager as DATABASE_URL) is `postgresql+<driver>://` with
user and password percent-encoded by `quote(x, safe="")`, and the SSL mode in the query so the value itself
says it needs SSL. pg8000 and psycopg URLs carry libpq's words (`sslmode`, `sslrootcert`, `connect_timeout`);
an asyncpg URL carries asyncpg's own `ssl=<mode>` and nothing else, so `create_async_engine(url)` works as
printed (SQLAlchemy hands every query key to asyncpg.connect(), which takes no connect_timeout/sslrootcert;
its timeout goes in connect_args, its CA in PGSSLROOTCERT). `deployctl.runtime.engine_args` turns any of them
into what the driver accepts; `Dsn.engine_url` + `Dsn.connect_args` are that translation, ready for
`create_engine` (but prefer `runtime.build_engine(dsn.url)`: with bare connect_args pg8000's `timeout` keeps
bounding every read for the connection's life, DESIGN §6). Stdlib only at import time; SQLAlchemy lazily.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, unquote_plus

from deployctl import redact, runtime
from deployctl.errors import UsageError

DRIVERS = ("pg8000", "psycopg", "asyncpg")
SCHEMES = ("postgresql", "postgresql+pg8000", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+asyncpg")
IP_TYPES = ("private", "public", "psc")
FIX = "deployctl dsn SERVICE --write-secret"


class DsnError(UsageError):
    code = "dsn"


@dataclass(frozen=True, repr=False)
class Dsn:
    url: str                    # storage form, for other programs (contains the password)
    driver: str
    masked: str                 # the same with the password replaced by ***
    engine_url: object          # sqlalchemy URL with the driver's own words
    connect_args: dict          # per driver: pg8000 ssl_context/timeout, asyncpg ssl/timeout; psycopg: {}
    connector: dict | None = None  # connector mode: what runtime.connector_creator needs
    notes: tuple[str, ...] = ()  # what the URL alone cannot say (asyncpg: timeout and CA go elsewhere)

    def __repr__(self) -> str:
        return f"Dsn({self.masked!r})"

    __str__ = __repr__


def build(*, driver: str, user: str, password: str | None, database: str, host: str | None = None,
          port: int = 5432, sslmode: str = "require", connect_timeout: float = 10,
          instance_connection_name: str | None = None, ip_type: str = "private", iam_auth: bool = False,
          sslrootcert: str | None = None) -> Dsn:
    """A DSN for `driver`. With instance_connection_name it describes a Cloud SQL connector connection
    (no host; TLS by the connector); otherwise a direct connection to host:port with `sslmode`."""
    if driver not in DRIVERS:
        raise DsnError(f"unknown driver {driver!r}", hint=f"use one of: {', '.join(DRIVERS)}")
    if not user or not database:
        raise DsnError("a DSN needs a user and a database name", hint="set database.user and database.name")
    if not connect_timeout > 0:  # also NaN; 0 means "forever" to libpq and a non-blocking socket to pg8000
        raise DsnError("connect_timeout must be more than 0 seconds", hint="use e.g. 10")
    redact.register(password)
    query: dict[str, str] = {}
    if instance_connection_name:
        if driver != "pg8000":
            raise DsnError("the Cloud SQL connector path is built for pg8000 only",
                           hint="use --driver pg8000, or a direct private-IP DSN for this driver")
        if ip_type not in IP_TYPES:
            raise DsnError(f"ip_type must be one of {', '.join(IP_TYPES)}", hint="use ip_type='private'")
        query = {"instance_connection_name": instance_connection_name, "ip_type": ip_type}
        if iam_auth:
            query["iam_auth"] = "true"
        host = None
    else:
        if not host:
            raise DsnError("a direct DSN needs a host (the instance's private IP)",
                           hint="set [instances.NAME].private_ip, or use the connector (connection_name)")
        if sslmode not in runtime.SSLMODES:
            raise DsnError(f"sslmode must be one of {', '.join(runtime.SSLMODES)}",
                           hint="Cloud SQL private IP needs sslmode=require (or verify-ca with the server CA)")
        if driver == "asyncpg":
            query["ssl"] = sslmode  # asyncpg's word, and its connect() takes no other of these keys
        else:
            query["sslmode"] = sslmode
            if sslrootcert:
                query["sslrootcert"] = sslrootcert
    if driver != "asyncpg":
        # libpq takes whole seconds (round up: 0 would mean "wait forever"); pg8000 takes the float
        query["connect_timeout"] = (str(math.ceil(connect_timeout)) if driver == "psycopg"
                                    else runtime.format_seconds(connect_timeout))
    url = runtime.compose_url(driver=driver, user=user, password=None if iam_auth else password,
                              database=database, host=host, port=port, query=query)
    engine_url, connect_args = runtime.engine_args(url)
    notes: tuple[str, ...] = ()
    if driver == "asyncpg":
        connect_args["timeout"] = float(connect_timeout)
        notes = (f"asyncpg takes its connect timeout in connect_args: create_async_engine(url, connect_args="
                 f"{{'timeout': {runtime.format_seconds(connect_timeout)}}}); deployctl.runtime uses "
                 f"{runtime.format_seconds(runtime.DEFAULT_CONNECT_TIMEOUT)} s",)
        if sslrootcert:
            connect_args["ssl"] = runtime.ssl_context_for(sslmode, sslrootcert=sslrootcert)
            notes += (f"asyncpg reads the server CA from PGSSLROOTCERT: export PGSSLROOTCERT={sslrootcert} "
                      "(deployctl.runtime honours it too)",)
    return Dsn(url=url, driver=driver, masked=mask(url), engine_url=engine_url, connect_args=connect_args,
               connector=runtime.connector_spec(url), notes=notes)


@dataclass(frozen=True, repr=False)
class ParsedDsn:
    driver: str
    user: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    query: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        pw = None if self.password is None else redact.MASK
        return (f"ParsedDsn(driver={self.driver!r}, user={self.user!r}, password={pw!r}, host={self.host!r}, "
                f"port={self.port!r}, database={self.database!r}, query={self.query!r})")


def unparseable() -> DsnError:
    """The error for a string SQLAlchemy cannot parse; the parser's own message is never passed on."""
    return DsnError("the connection string cannot be parsed (details withheld: they may contain the password)",
                    hint=f"lint it (deployctl dsn lint SERVICE < url.txt), or rebuild it: {FIX}",
                    code="dsn-unparseable")


def parse(url: str) -> ParsedDsn:
    """Parse a DSN the way SQLAlchemy will. Errors never contain the password (nor any part of the URL
    after the scheme, since a mis-encoded password can end up anywhere)."""
    from sqlalchemy.engine import make_url

    register_url(url)
    try:
        u = make_url(url)
    except Exception:
        # the original message may quote the port slot, which a raw '@' or ':' can fill with password text
        raise unparseable() from None
    redact.register(u.password)
    query = {k: (v[-1] if isinstance(v, (list, tuple)) else v) for k, v in u.query.items()}
    return ParsedDsn(driver=runtime.driver_of(u.drivername), user=u.username, password=u.password,
                     host=u.host, port=u.port, database=u.database, query=query)


_USERINFO_RE = re.compile(r"^(?P<scheme>[^:/]*)://(?P<rest>.*)$", re.S)
_QUERY_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_QUERY_PASSWORD = re.compile(r"(?P<key>(?:^|&)password=)(?P<value>[^&]*)")


@dataclass(frozen=True)
class _Parts:
    """A URL cut the forgiving way (see _parts), so a raw '@', '?' or '/' in a password stays in the password
    and an '@' in a query value (sslrootcert=/a@b/ca.pem) stays in the query. `pw_span` is where the password
    sits in the URL (for the pieces other parsers may cut it into)."""

    scheme: str
    userinfo: str | None
    hostpath: str  # host[:port][/database]
    query: str | None
    pw_span: tuple[int, int] | None = None

    @property
    def password(self) -> str | None:  # as written (percent-encoded, or not)
        return None if self.userinfo is None else (self.userinfo.partition(":")[2] or None)


def _query_starts(rest: str) -> list[int]:
    """Positions of each '?' that could start the query: followed by `key=`, or last in the string."""
    return [i for i, c in enumerate(rest) if c == "?" and (_QUERY_KEY.match(rest, i + 1) or i + 1 == len(rest))]


def _parts(url: str) -> _Parts | None:
    """The userinfo ends at the last '@' before the host: the last '@' before the last '?key=' that has an '@'
    ahead of it. So a raw '?k=' or '@' in a password stays in the password (the host that follows it is real),
    and an '@' after the query's start stays in the query. Without any '@' before a query start, the query
    starts at its first '?' unless the authority (no '/' before the first '@') holds every '?': then they are
    all the password's."""
    m = _USERINFO_RE.match(url)
    if not m:
        return None
    rest, offset = m["rest"], m.start("rest")
    starts = _query_starts(rest)
    q = next((i for i in reversed(starts) if "@" in rest[:i]), None)
    if q is None and starts:
        first_at = rest.find("@")
        q = None if first_at != -1 and "/" not in rest[:first_at] else starts[0]
    head, query = (rest, None) if q is None else (rest[:q], rest[q + 1:])
    at = head.rfind("@")
    userinfo = head[:at] if at != -1 else None
    span = None
    if userinfo is not None and ":" in userinfo:
        start = offset + userinfo.index(":") + 1
        span = (start, offset + at) if offset + at > start else None
    return _Parts(m["scheme"], userinfo, head[at + 1:], query, span)


def _raw_password(url: str) -> str | None:
    parts = _parts(url)
    return parts.password if parts else None


def _query_password(query: str | None) -> str | None:
    """A libpq-style `password=` in the query (it wins over the userinfo for libpq and for SQLAlchemy)."""
    m = _QUERY_PASSWORD.search(query or "")
    return m["value"] if m and m["value"] else None


# SQLAlchemy's own cut (sqlalchemy.engine.url._parse_url, 2.x): the password ends at its first '@', the host
# at ':', '/' or '?', the port at '/' or '?'. A driver's or SQLAlchemy's error quotes these slots.
_SQLALCHEMY_URL = re.compile(r"""
    (?P<name>[\w\+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
    (?:/(?P<database>[^\?]*))?
    (?:\?(?P<query>.*))?
    """, re.X)
_SPLIT_AT = re.compile(r"[@:]")
_SPLIT_RESERVED = re.compile(r"[@:/?#\[\]& =]")
LONG_PIECE = 6  # a piece cut at other reserved characters is registered from this length (unlikely as text)


def _pieces(url: str, parts: _Parts) -> set[str]:
    """The password and what parsers may cut it into: between '@' and ':', long runs between any reserved
    characters, and the password text in each slot of SQLAlchemy's cut (user, password, host, port, database,
    query keys and values), raw and decoded."""
    a, b = parts.pw_span or (0, 0)
    password = url[a:b]
    out = {password} | set(_SPLIT_AT.split(password))
    out |= {p for p in _SPLIT_RESERVED.split(password) if len(p) >= LONG_PIECE}
    m = _SQLALCHEMY_URL.match(url)
    if m:
        for name in ("username", "password", "ipv6host", "ipv4host", "port", "database", "query"):
            s, e = m.span(name)
            if s == -1 or e <= a or s >= b:
                continue
            overlap = url[max(s, a):min(e, b)]  # the slot's password text (the rest is host, port, ...)
            out.add(overlap)
            if name == "query":  # parse_qsl's pieces, decoded as it decodes them
                out |= {unquote_plus(v) for kv in overlap.split("&") for v in kv.split("=", 1)}
    user = parts.userinfo.partition(":")[0] if parts.userinfo else ""
    return {x for v in out for x in (v, unquote(v)) if x and x != user}


def register_url(url: str) -> None:
    """Register the password a URL carries (in the userinfo or as `password=` in the query), as written and
    decoded, and every piece a parser may cut a mis-encoded one into (_pieces): a raw '@' or ':' makes parsers
    disagree where it ends, and a driver's error can then quote a piece of it as a host name or a port."""
    value = url.rstrip("\r\n")
    parts = _parts(value)
    if not parts:
        return
    if parts.pw_span:
        for piece in _pieces(value, parts):
            redact.register(piece)
    q = _query_password(parts.query)
    if q:
        redact.register(q)
        redact.register(unquote(q))


def has_password(value: str) -> bool:
    """True when the value is a URL with a password in it (any scheme: postgresql, redis, amqp, ...)."""
    parts = _parts(value)
    return bool(parts and (parts.password or _query_password(parts.query)))


def mask(url: str) -> str:
    """The URL with its password replaced by *** (however it is encoded, and a `password=` in the query)."""
    parts = _parts(url)
    if not parts or (parts.userinfo is None and not _query_password(parts.query)):
        return redact.redact(url)
    auth = ""
    if parts.userinfo is not None:
        user, sep, _ = parts.userinfo.partition(":")
        auth = f"{user}{':' + redact.MASK if sep else ''}@"
    query = ""
    if parts.query is not None:
        query = "?" + _QUERY_PASSWORD.sub(lambda m: m["key"] + (redact.MASK if m["value"] else ""), parts.query)
    return f"{parts.scheme}://{auth}{parts.hostpath}{query}"


# --- lint -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str  # "error" | "warning"
    message: str
    hint: str


def _is_private(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_private
    except ValueError:
        return False


_RESERVED = "@:/?#[] "
_ENCODED_NEWLINE_AT_END = re.compile(r"(%0[aAdD])+$")


def _lint_userinfo(userinfo: str, add) -> None:
    user, sep, password = userinfo.partition(":")
    if any(c in _RESERVED for c in user + password):
        # Which characters is not said: that would tell something about the password's make-up.
        add("unencoded-reserved", "error",
            "the user or password contains reserved characters written raw ('@', ':', '/', '?', '#', '[', ']' "
            "or a space): '@' moves the host, '/', '?' and '#' end the authority, ':' splits user from "
            "password; parsers disagree and the login fails or goes to the wrong host. They must be "
            "percent-encoded with quote(x, safe='')")
    if "+" in password:
        add("quote-plus-space", "warning",
            "the password contains a literal '+': SQLAlchemy decodes the userinfo with unquote, so '+' stays "
            "'+'. If the string was made with quote_plus, that '+' was a space and the login fails (28P01)",
            f"encode with quote(pw, safe='') (space -> %20, '+' -> %2B): {FIX}")
    if _ENCODED_NEWLINE_AT_END.search(password):
        add("password-trailing-newline", "error",
            "the password ends with an encoded newline (%0A or %0D): it was built from a secret that ends "
            "with a newline (echo, or `--data-file`), so the login fails (28P01)",
            "store the password without it (printf '%s' ... | deployctl secrets set SECRET), or run "
            f"`deployctl doctor SERVICE --fix`; then: {FIX}")
    if not sep:
        add("no-password", "warning", "no password in the URL: scram-sha-256 logins fail unless the "
            "connection uses IAM database authentication through the connector",
            f"include the password from Secret Manager: {FIX}")


def lint(url: str, *, private_ip: str | None = None, driver_hint: str | None = None,
         via_runtime: bool = False) -> list[Finding]:
    """Everything wrong or risky in a stored connection string, each with why and the fix.

    `via_runtime=True` says the consumer builds its engine with deployctl.runtime (which translates sslmode
    for pg8000/asyncpg), so sslmode in such a URL is then correct rather than a TypeError waiting to happen.
    """
    out: list[Finding] = []

    def add(code, severity, message, hint=f"rebuild and store it: {FIX}"):
        out.append(Finding(code, severity, message, hint))

    if url.endswith(("\n", "\r")):
        add("trailing-newline", "error",
            "the value ends with a newline (typical of `gcloud secrets versions add --data-file` with echo or a "
            "file): it becomes part of the database name or the last query parameter; deployctl.runtime warns "
            "and ignores it, every other program fails",
            f"store it without the newline (printf '%s' ...), or: {FIX}")
    value = url.rstrip("\r\n")
    parts = _parts(value)
    if not parts:
        add("bad-scheme", "error", "not a URL: no '<scheme>://' at the start",
            "use postgresql+pg8000://<user>:<password>@<host>:5432/<db>?sslmode=require")
        return out
    scheme = parts.scheme
    if scheme not in SCHEMES:
        why = ("SQLAlchemy 1.4+ refuses 'postgres://'" if scheme == "postgres"
               else f"'{scheme}' is not a PostgreSQL SQLAlchemy scheme")
        add("bad-scheme", "error", f"{why}; expected postgresql+pg8000, +psycopg or +asyncpg",
            f"use postgresql+{driver_hint or 'pg8000'}://, or: {FIX}")
    driver = runtime.driver_of(scheme) if scheme.startswith("postgresql") else None
    if driver_hint and driver and driver != driver_hint:
        add("driver-mismatch", "warning", f"the URL selects driver {driver} but the service uses {driver_hint}",
            f"rebuild for the service's driver: deployctl dsn SERVICE --driver {driver_hint} --write-secret")

    query = dict(parse_qsl(parts.query or "", keep_blank_values=True))
    if parts.userinfo is not None:
        _lint_userinfo(parts.userinfo, add)
    elif "password" not in query:
        add("no-password", "warning", "no user or password in the URL", f"include them: {FIX}")
    raw_reserved = any(f.code == "unencoded-reserved" for f in out)
    if "password" in query:
        add("password-in-query", "warning",
            "the password is given as password=... in the query: it overrides the one in the userinfo, and "
            "tools that mask URLs look for it in the userinfo only",
            f"put it in the userinfo, percent-encoded: {FIX}")

    hostport, _, database = parts.hostpath.partition("/")
    if hostport.startswith("["):
        host = hostport[1:hostport.find("]")]
    else:
        host = hostport.partition(":")[0]
    if _ENCODED_NEWLINE_AT_END.search(database):
        add("database-trailing-newline", "error",
            "the database name ends with an encoded newline (%0A or %0D): no such database exists (3D000)",
            f"store the value without the newline (printf '%s' ...), or: {FIX}")

    # A consumer that builds its engine through deployctl.runtime never meets ConfigParser; a doubled '%'
    # is still wrong everywhere but alembic.ini.
    if "%" in value and (not via_runtime or "%%" in value):
        doubled = "%%" in value
        add("alembic-percent", "warning",
            ("the value contains '%%', as prepared for alembic.ini/ConfigParser: anywhere else it decodes to "
             "a different password" if doubled else
             "the value contains '%' (percent-encoding): in alembic.ini or Config.set_main_option ConfigParser "
             "interpolation rejects it or changes it unless every '%' is doubled"),
            "do not put the URL in alembic.ini; env.py should call deployctl.runtime.get_engine()")

    sslmode = query.get("sslmode") or (query.get("ssl") if driver == "asyncpg" else None)
    private = bool(host and _is_private(host))
    connector = "instance_connection_name" in query
    if sslmode is not None and sslmode.strip() not in runtime.SSLMODES + ("true", "false"):
        add("sslmode-invalid", "error", f"sslmode has an unknown value ({len(sslmode)} characters)",
            f"use require, verify-ca or verify-full: {FIX}")
    if sslmode in ("disable", "false"):
        add("sslmode-disabled", "error" if private else "warning",
            "sslmode=disable: Cloud SQL private IP accepts TCP only over SSL, so the login fails with 28000 "
            "'no pg_hba.conf entry ... no encryption'",
            f"use sslmode=require (or verify-ca): {FIX}")
    elif sslmode is None and not connector and private:
        add("sslmode-missing", "warning",
            "no sslmode for a private IP: the driver tries SSL opportunistically ('prefer') and silently falls "
            "back to plaintext, unverified; Cloud SQL private IP requires SSL, so say so",
            f"add sslmode=require (or verify-ca): {FIX}")
    elif sslmode in ("prefer", "allow") and not connector and private:
        add("sslmode-downgradable", "warning",
            f"sslmode={sslmode} for a private IP: SSL is optional, so anyone on the path can downgrade the "
            "connection to plaintext; Cloud SQL private IP requires SSL, so require it",
            f"use sslmode=require (or verify-ca): {FIX}")
    if driver in ("pg8000", "asyncpg") and not via_runtime:
        words = [k for k in ("sslmode", "connect_timeout", "sslrootcert") if k in query]
        if words:
            add(f"sslmode-for-{driver}", "warning",
                f"{', '.join(words)} in a postgresql+{driver} URL: these are libpq words; plain "
                f"create_engine(url) passes them to {driver} as keywords and it raises TypeError",
                "fine if the consumer builds its engine with deployctl.runtime.get_engine()/engine_args(), "
                "which translates them (pg8000: ssl_context/timeout; asyncpg: ssl/timeout); otherwise pass "
                "connect_args instead")
    if private_ip and host and not connector and host != private_ip:
        add("host-mismatch", "error",
            # with raw reserved characters in the userinfo, the "host" may be a piece of the password
            f"the host is {'not' if raw_reserved else host}{' ' if raw_reserved else ' but '}the instance's "
            f"private IP {'' if raw_reserved else 'is '}{private_ip}: the connection times out, "
            "reaches another instance, or (public IP) needs authorised networks",
            f"rebuild from the instance's private IP: {FIX}")
    return out
