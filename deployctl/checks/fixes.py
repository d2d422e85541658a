"""`doctor --fix`: the safe repairs. Each is planned first (exactly what will change, in words, fingerprints
only) and applied only after confirmation. Nothing here deletes or overwrites data: secrets get new versions
(old ones stay enabled), users and databases are created, a password is set from Secret Manager's value.

Repairs of one secret do not undo each other: a plan names the secrets it writes, and one that sets a password
source (add-secret-version, set-db-password, create-user) supersedes strip-newline and rewrite-url for the
secrets it writes itself (it writes the value without a newline and rebuilds the url secret).
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


def _pw(f: Facts, service: str, label: str):
    return next((c for c in f.candidates(service) if c.label == label), None)


def plan(f: Facts, fix: str, args: dict) -> Plan | None:
    builder = _BUILDERS.get(fix)
    return builder(f, **args) if builder else None


def _follow_password(f: Facts, service: str, password: str, *, secret_too: bool) -> tuple[list[str], Callable[[], str]]:
    """What else changes once the database user has `password`: the password secret gets it as a new version
    when its latest differs (a trailing newline, or `secret_too`), the url secret is rebuilt with it."""
    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    store_it = secret_too or latest is None or latest.password != password
    changes = []
    if store_it:
        changes.append(f"Secret Manager {t.password_secret}: add a new version with that password "
                       f"({redact.fingerprint(password)}); the current versions stay as they are")
    if t.url_secret:
        changes.append(f"Secret Manager {t.url_secret}: add a new version, the connection string rebuilt with that "
                       "password (percent-encoded, sslmode required)")

    def apply() -> str:
        done = []
        if store_it:
            done.append(f"added {t.password_secret} v{f.store.add_version(t.password_secret, password).number}")
        if t.url_secret:
            done.append(_write_url(f, service, password))
        return ", ".join(done)

    return changes, apply


def _set_db_password(f: Facts, service: str, **_) -> Plan | None:
    from deployctl.checks.passwords import broken_by_change

    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    if latest is None:
        return None
    password = latest.password.rstrip("\r\n")  # a newline would become part of the database password
    follow, also = _follow_password(f, service, password, secret_too=False)
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
                "no known password is accepted by the database and every one was tried: the database is made to "
                "accept Secret Manager's", apply, writes=_writes(t), service=service)


def _writes(t) -> set[str]:
    return {t.password_secret} | ({t.url_secret} if t.url_secret else set())


def _add_secret_version(f: Facts, service: str, label: str, **_) -> Plan | None:
    t = f.target(service)
    good, latest = _pw(f, service, label), _pw(f, service, "secret-latest")
    if good is None:
        return None
    follow, apply = _follow_password(f, service, good.password, secret_too=True)
    users = {"url-pinned": "the serving revision", "secret-pinned": "the serving revision",
             "url-secret": "the next job and deploy", "terraform": "terraform apply"}
    why = (f"the database accepts the password in {good.holder} ({good.fingerprint}), which "
           f"{users.get(good.label, 'something')} uses; {latest.source if latest else 'the secret'} "
           f"({latest.fingerprint if latest else 'unreadable'}) is the odd one out, so the secret follows the "
           "database (changing the database password would break whatever still uses it, and terraform apply "
           "would change it back)")
    changes = [c.replace("with that password", f"with the password in {good.holder}", 1) for c in follow]
    return Plan("add-secret-version", service, changes, why, apply, writes=_writes(t), service=service)


def _write_url(f: Facts, service: str, password: str) -> str:
    from deployctl import dbtarget

    t = f.target(service)
    url = dbtarget.build_dsn(t, password).url
    redact.register(url)
    f.store.create_secret(t.url_secret, exist_ok=True)
    return f"added {t.url_secret} v{f.store.add_version(t.url_secret, url).number}"


def _rewrite_url(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)
    if not t.url_secret:
        return None
    logins = f.database(service).get("logins", {}) if f.tcp(service)["ok"] else {}
    # The password the database accepts, Secret Manager's first.
    order = ["secret-latest", "terraform", "secret-pinned", "url-pinned", "secret-latest-stripped"]
    good = next((c for label in order for c in [_pw(f, service, label)]
                 if c and logins.get(label, {}).get("ok")), None) or _pw(f, service, "secret-latest")
    if good is None:
        return None
    password = good.password.rstrip("\r\n")

    def apply() -> str:
        return _write_url(f, service, password)

    return Plan("rewrite-url", service, [
        f"Secret Manager {t.url_secret}: add a new version built by deployctl (postgresql+{t.driver}, user and "
        f"password percent-encoded, host {t.host}, sslmode={t.ssl}) with the password in {good.holder} "
        f"({redact.fingerprint(password)})"], "the stored string is malformed or does not log in; the old version "
        "stays", apply, writes={t.url_secret}, service=service)


def _create_user(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    if latest is None:
        return None
    password = latest.password.rstrip("\r\n")
    url = _pw(f, service, "url-secret")
    follow, also = ([], lambda: "")
    if password != latest.password or (url is not None and url.password != password):
        follow, also = _follow_password(f, service, password, secret_too=False)

    def apply() -> str:
        f.admin.insert_user(t.instance_name, t.user, password)
        more = also()
        return f"created user {t.user} on {t.instance_name}" + (f", {more}" if more else "")

    return Plan("create-user", service, [
        f"Cloud SQL {t.instance_name}: create user {t.user} with the password in {latest.holder} "
        f"({redact.fingerprint(password)})", *follow], "the user does not exist", apply,
        writes=_writes(t) if follow else set(), service=service)


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
        apply, writes={secret})


def _grant_public(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)
    sql = f"GRANT USAGE, CREATE ON SCHEMA public TO {t.user};"
    latest = _pw(f, service, "secret-latest")

    def apply() -> str:
        from deployctl.checks.dbprobe import url_for
        from deployctl.db.connect import connect
        from deployctl.db.sqlstate import classify
        from deployctl.errors import DatabaseError

        url = url_for(host=t.host, port=t.port, database=t.database, user=t.user, password=latest.password,
                      sslmode=t.ssl, timeout=f.probe_timeout)
        try:
            conn = connect(url, timeout=f.probe_timeout)
            try:
                conn.run(sql)
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001
            d = classify(e)
            raise DatabaseError(f"{t.user} may not grant on schema public ({d.code})",
                                hint=f"as the database owner or cloudsqlsuperuser, in {t.database}: {sql}") from None
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
    """One plan per (fix, subject) asked for by the failed (or warned) checks, in a safe order, without two plans
    writing the same secret: a password-source plan supersedes strip-newline and rewrite-url there, and
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
    written = set().union(*(p.writes for p in plans if p.fix in PASSWORD_SOURCES)) if plans else set()
    kept = [p for p in plans if p.fix in PASSWORD_SOURCES or not (p.writes and p.writes <= written)]
    for p in plans:
        if p not in kept:  # the checks that asked for it are re-run after the plan that covers it
            cover = next(q for q in kept if q.fix in PASSWORD_SOURCES and q.writes & p.writes)
            cover.checks += [k for k in p.checks if k not in cover.checks]
    return kept
