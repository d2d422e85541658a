"""`doctor --fix`: the safe repairs. Each is planned first (exactly what will change, in words, fingerprints
only) and applied only after confirmation. Nothing here deletes or overwrites data: secrets get new versions
(old ones stay enabled), users and databases are created, a password is set from Secret Manager's value.

Repairs of one secret do not undo each other: a plan names the secrets it writes, and each secret is written by
one plan. One that sets a password source (add-secret-version, set-db-password, create-user) supersedes
strip-newline and rewrite-url for the secrets it writes itself (it writes the value without a newline and
rebuilds the url secret when that holds another password or is broken); rewrite-url supersedes strip-newline.
A url secret is rebuilt only with a password the database accepted, and never while the instance's address
is in doubt (net.private-ip).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deployctl import redact
from deployctl.checks.facts import Facts

# Order matters: what exists first, then passwords, then the strings built from them.
ORDER = ["create-database", "create-user", "set-db-password", "add-secret-version", "strip-newline",
         "rewrite-url", "grant-public"]
PASSWORD_SOURCES = ("create-user", "set-db-password", "add-secret-version")


@dataclass
class Plan:
    fix: str
    key: str  # what it is about: service or secret id
    changes: list[str]
    why: str = ""
    apply: Callable[[], str] | None = None  # None: nothing deployctl may do; `changes` says what to run
    checks: list[str] = field(default_factory=list)  # the check keys that asked for it
    writes: set[str] = field(default_factory=set)  # the secrets it adds versions to
    service: str = ""  # whose deployed revision may pin what it writes
    password: str | None = field(default=None, repr=False)  # what the secrets it writes carry (for the redeploy)


def _pw(f: Facts, service: str, label: str):
    return next((c for c in f.candidates(service) if c.label == label), None)


def plan(f: Facts, fix: str, args: dict) -> Plan | None:
    builder = _BUILDERS.get(fix)
    return builder(f, **args) if builder else None


def _follow_password(f: Facts, service: str, password: str, *,
                     secret_too: bool) -> tuple[list[str], Callable[[], str], set[str]]:
    """What else changes once the database user has `password`: the password secret gets it as a new version
    when its latest differs (a trailing newline, or `secret_too`), the url secret is rebuilt with it when it
    holds another password or is broken. Returns the changes in words, the apply step, the secrets written."""
    from deployctl.checks.connstring import needs_rewrite

    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    store_it = secret_too or latest is None or latest.password != password
    url_too = needs_rewrite(f, service, password)
    changes = []
    if store_it:
        changes.append(f"Secret Manager {t.password_secret}: add a new version with that password "
                       f"({redact.fingerprint(password)}); the current versions stay as they are")
    if url_too:
        changes.append(f"Secret Manager {t.url_secret}: add a new version, the connection string rebuilt with that "
                       "password (percent-encoded, sslmode required)")

    def apply() -> str:
        done = []
        if store_it:
            done.append(f"added {t.password_secret} v{f.store.add_version(t.password_secret, password).number}")
        if url_too:
            done.append(_write_url(f, service, password))
        return ", ".join(done)

    writes = ({t.password_secret} if store_it else set()) | ({t.url_secret} if url_too else set())
    return changes, apply, writes


def _set_db_password(f: Facts, service: str, **_) -> Plan | None:
    from deployctl.checks.passwords import broken_by_change

    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    if latest is None:
        return None
    password = latest.password.rstrip("\r\n")  # a newline would become part of the database password
    follow, also, writes = _follow_password(f, service, password, secret_too=False)
    changes = [f"Cloud SQL {t.instance_name}: set the password of user {t.user} to {latest.source} "
               f"({redact.fingerprint(password)})" + (" without its trailing newline" if password != latest.password
                                                      else ""), *follow]
    broken = broken_by_change(f, service, password)
    if broken:
        changes.append("this breaks " + "; ".join(broken))

    def apply() -> str:
        f.admin.set_password(t.instance_name, t.user, password)
        done = f"set the password of {t.user} to {latest.source} ({redact.fingerprint(password)})"
        more = also()
        return done + (f", {more}" if more else "")

    return Plan("set-db-password", service, changes,
                "the database rejected every known password (28P01 for each): the database is made to accept "
                "Secret Manager's", apply, writes=writes, service=service, password=password)


# Who logs in with the password a source holds (what changing the database password would break).
USERS = {"url-pinned": "the serving revision", "secret-pinned": "the serving revision",
         "url-secret": "the next job and deploy", "terraform": "terraform apply"}


def _add_secret_version(f: Facts, service: str, label: str, **_) -> Plan | None:
    good, latest = _pw(f, service, label), _pw(f, service, "secret-latest")
    if good is None:
        return None
    follow, apply, writes = _follow_password(f, service, good.password, secret_too=True)
    logins = _logins(f, service)
    accepted = [c for c in f.candidates(service) if logins.get(c.label, {}).get("ok")]
    holders = " and ".join(c.holder for c in accepted) or good.holder
    users = list(dict.fromkeys(USERS[c.label] for c in accepted if c.label in USERS))
    why = (f"the database accepts the password in {holders} ({good.fingerprint})"
           + (f", which {' and '.join(users)} use{'s' if len(users) == 1 else ''}" if users else "")
           + f"; {latest.source if latest else 'the secret'} ({latest.fingerprint if latest else 'unreadable'}) is "
           "the odd one out, so the secret follows the database"
           + (f" (changing the database password would break {' and '.join(users)})" if users else ""))
    changes = [c.replace("with that password", f"with the password in {good.holder}", 1) for c in follow]
    return Plan("add-secret-version", service, changes, why, apply, writes=writes, service=service,
                password=good.password)


def _logins(f: Facts, service: str) -> dict:
    """label -> login result, from wherever the database was reached (here, or inside the VPC)."""
    try:
        result = f.database(service)
    except Exception:  # noqa: BLE001 - not reachable: no login proves anything
        return {}
    return result.get("logins", {}) if result.get("tcp", {}).get("ok") else {}


# Query parameters deployctl writes itself; any other the stored string had (options, application_name,
# target_session_attrs, ...) is kept when the string is rebuilt.
BUILT_KEYS = {"sslmode", "ssl", "sslrootcert", "connect_timeout", "password", "instance_connection_name", "ip_type",
              "iam_auth"}


def _kept_query(f: Facts, url_secret: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    from deployctl import dsn

    try:
        text = f.secret(url_secret).data.decode("utf-8", "surrogateescape").rstrip("\r\n")
    except Exception:  # noqa: BLE001 - nothing stored (or unreadable): nothing to keep
        return []
    parts = dsn._parts(text)
    if not parts or not parts.query:
        return []
    return [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in BUILT_KEYS]


def _write_url(f: Facts, service: str, password: str) -> str:
    from urllib.parse import quote, urlencode

    from deployctl import dbtarget

    t = f.target(service)
    url = dbtarget.build_dsn(t, password).url
    kept = _kept_query(f, t.url_secret)
    if kept:
        url += ("&" if "?" in url else "?") + urlencode(kept, quote_via=quote)
    redact.register(url)
    f.store.create_secret(t.url_secret, exist_ok=True)
    return f"added {t.url_secret} v{f.store.add_version(t.url_secret, url).number}"


# The passwords a rebuilt url secret may carry, in this order, once the database accepted them.
REWRITE_ORDER = ("secret-latest", "url-secret", "terraform", "secret-pinned", "url-pinned", "secret-latest-stripped")


def _rewrite_url(f: Facts, service: str, **_) -> Plan | None:
    from deployctl.checks.network import address_problem

    t = f.target(service)
    if not t.url_secret or address_problem(f, service):
        return None  # the address is what is wrong (net.private-ip): nothing is rebuilt from the config
    logins = _logins(f, service)
    good = next((c for label in REWRITE_ORDER for c in [_pw(f, service, label)]
                 if c and logins.get(label, {}).get("ok")), None)
    if good is None:
        return Plan("rewrite-url", service, [
            f"deployctl dsn {service} --write-secret, once {t.password_secret} holds the password the database "
            "accepts (no known password logged in from here, so none is written into the string unproven)"],
            "the stored string is malformed or does not log in", None, writes={t.url_secret}, service=service)
    password = good.password.rstrip("\r\n")
    kept = [k for k, _ in _kept_query(f, t.url_secret)]

    def apply() -> str:
        return _write_url(f, service, password)

    return Plan("rewrite-url", service, [
        f"Secret Manager {t.url_secret}: add a new version built by deployctl (postgresql+{t.driver}, user and "
        f"password percent-encoded, host {t.host}, sslmode={t.ssl}"
        + (f", keeping {', '.join(kept)}" if kept else "") + f") with the password in {good.holder} "
        f"({redact.fingerprint(password)})"], "the stored string is malformed or does not log in; the old version "
        "stays", apply, writes={t.url_secret}, service=service, password=password)


def _create_user(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    if latest is None:
        return None
    password = latest.password.rstrip("\r\n")
    follow, also, writes = _follow_password(f, service, password, secret_too=False)

    def apply() -> str:
        f.admin.insert_user(t.instance_name, t.user, password)
        more = also()
        return f"created user {t.user} on {t.instance_name}" + (f", {more}" if more else "")

    return Plan("create-user", service, [
        f"Cloud SQL {t.instance_name}: create user {t.user} with the password in {latest.holder} "
        f"({redact.fingerprint(password)})", *follow], "the user does not exist", apply,
        writes=writes, service=service, password=password)


def _create_database(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)

    def apply() -> str:
        f.admin.insert_database(t.instance_name, t.database)
        return f"created database {t.database} on {t.instance_name}"

    return Plan("create-database", service, [f"Cloud SQL {t.instance_name}: create database {t.database} "
                                             "(empty; run deployctl migrate next)"], "the database does not exist",
                apply, service=service)


def _strip_newline(f: Facts, secret: str, **_) -> Plan | None:
    value = f.secret(secret)
    stripped = value.data.rstrip(b"\r\n")

    def apply() -> str:
        return f"added {secret} v{f.store.add_version(secret, stripped).number}"

    return Plan("strip-newline", secret, [
        f"Secret Manager {secret}: add a new version with v{value.version}'s value minus its trailing newline "
        f"({redact.fingerprint(stripped)})"], "a trailing newline becomes part of the value for most readers",
        apply, writes={secret}, password=stripped.decode("utf-8", "surrogateescape"))


def _grant_public(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)
    sql = f"GRANT USAGE, CREATE ON SCHEMA public TO {t.user};"
    latest = _pw(f, service, "secret-latest")

    def apply() -> str:
        from deployctl.checks.dbprobe import SESSION_SQL, url_for
        from deployctl.db.connect import connect
        from deployctl.db.sqlstate import classify
        from deployctl.errors import DatabaseError

        url = url_for(host=t.host, port=t.port, database=t.database, user=t.user, password=latest.password,
                      sslmode=t.ssl, timeout=f.probe_timeout, sslrootcert=t.server_ca_here)
        hint = f"as the database owner or cloudsqlsuperuser, in {t.database}: {sql}"
        try:
            conn = connect(url, timeout=f.probe_timeout)
            try:
                conn.run(sql)
                # A GRANT by a role that holds no grant option succeeds with only a WARNING ("no privileges
                # were granted"): what counts is whether the privilege is there now.
                granted = bool(conn.run(SESSION_SQL["create_on_public"])[0][0])
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001
            d = classify(e)
            raise DatabaseError(f"{t.user} may not grant on schema public ({d.code})", hint=hint) from None
        if not granted:
            raise DatabaseError(f"no privileges were granted: {t.user} neither owns schema public of {t.database} "
                                "nor is a member of its owner (PostgreSQL accepts such a GRANT with a warning)",
                                hint=hint)
        return f"granted CREATE on schema public to {t.user}"

    return Plan("grant-public", service, [f"{t.database}: {sql} (as {t.user}, which works only if it owns the "
                                          "schema or is a member of its owner; otherwise run it as the owner)"],
                "PostgreSQL 15 no longer grants CREATE on public to everyone", apply if latest else None,
                service=service)


_BUILDERS: dict[str, Callable[..., Plan | None]] = {
    "set-db-password": _set_db_password, "add-secret-version": _add_secret_version, "rewrite-url": _rewrite_url,
    "create-user": _create_user, "create-database": _create_database, "strip-newline": _strip_newline,
    "grant-public": _grant_public,
}


def collect(f: Facts, reports) -> list[Plan]:
    """One plan per (fix, subject) asked for by the failed (or warned) checks, in a safe order, and one plan per
    written secret: a password-source plan supersedes strip-newline where it writes and rewrite-url of its
    service, rewrite-url (which writes the string without a newline) supersedes strip-newline, and
    add-secret-version supersedes set-db-password for its service (the database stays as it is)."""
    wanted: dict[tuple[str, str], tuple[dict, list[str]]] = {}
    for r in reports:
        o = r.outcome
        if o.status not in ("fail", "warn") or not o.fix:
            continue
        key = (o.fix, str(sorted(o.fix_args.items())))
        wanted.setdefault(key, (o.fix_args, []))[1].append(r.check.key)
    following = {args.get("service") for (fix, _), (args, _) in wanted.items() if fix == "add-secret-version"}
    plans: list[Plan] = []
    for (fix, _), (args, keys) in sorted(wanted.items(), key=lambda kv: ORDER.index(kv[0][0])):
        if fix == "set-db-password" and args.get("service") in following:
            continue
        p = plan(f, fix, args)
        if p is not None:
            p.checks = keys
            plans.append(p)
    precedence = [*PASSWORD_SOURCES, "rewrite-url", "strip-newline"]
    kept: list[Plan] = []
    for p in sorted(plans, key=lambda p: precedence.index(p.fix) if p.fix in precedence else -1):
        # a password repair of the service decides about its url secret itself (rebuilt when it needs to be)
        cover = None if p.fix in PASSWORD_SOURCES or not p.writes else next(
            (q for q in kept if q.writes & p.writes
             or (p.fix == "rewrite-url" and q.fix in PASSWORD_SOURCES and q.service == p.service)), None)
        if cover is None:
            kept.append(p)
        else:  # the checks that asked for it are re-run after the plan that covers it
            cover.checks += [k for k in p.checks if k not in cover.checks]
    return sorted(kept, key=lambda p: ORDER.index(p.fix))
