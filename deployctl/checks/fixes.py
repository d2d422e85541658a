"""`doctor --fix`: the safe repairs. Each is planned first (exactly what will change, in words, fingerprints
only) and applied only after confirmation. Nothing here deletes or overwrites data: secrets get new versions
(old ones stay enabled), users and databases are created, a password is set from Secret Manager's value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deployctl import redact
from deployctl.checks.facts import Facts

# Order matters: what exists first, then passwords, then the strings built from them.
ORDER = ["create-database", "create-user", "set-db-password", "add-secret-version", "strip-newline",
         "rewrite-url", "grant-public"]


@dataclass
class Plan:
    fix: str
    key: str  # what it is about: service or secret id
    changes: list[str]
    why: str = ""
    apply: Callable[[], str] | None = None  # None: nothing deployctl may do; `changes` says what to run
    checks: list[str] = field(default_factory=list)  # the check keys that asked for it


def _pw(f: Facts, service: str, label: str):
    return next((c for c in f.candidates(service) if c.label == label), None)


def plan(f: Facts, fix: str, args: dict) -> Plan | None:
    builder = _BUILDERS.get(fix)
    return builder(f, **args) if builder else None


def _set_db_password(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    if latest is None:
        return None

    def apply() -> str:
        f.admin.set_password(t.instance_name, t.user, latest.password)
        return f"set the password of {t.user} to {latest.source} ({latest.fingerprint})"

    return Plan("set-db-password", service, [
        f"Cloud SQL {t.instance_name}: set the password of user {t.user} to {latest.source} ({latest.fingerprint})"],
        "Secret Manager is what the service reads; the database is made to accept it", apply)


def _add_secret_version(f: Facts, service: str, label: str, **_) -> Plan | None:
    t = f.target(service)
    good, latest = _pw(f, service, label), _pw(f, service, "secret-latest")
    if good is None:
        return None
    changes = [f"Secret Manager {t.password_secret}: add a new version with the password in {good.source} "
               f"({good.fingerprint}); the current versions stay as they are"]
    if t.url_secret:
        changes.append(f"Secret Manager {t.url_secret}: add a new version, the connection string rebuilt with "
                       "that password (percent-encoded, sslmode required)")
    why = (f"Terraform state and the database agree ({good.fingerprint}); {latest.source if latest else 'the secret'}"
           f" ({latest.fingerprint if latest else 'unreadable'}) is the odd one out, so the secret follows them "
           "(changing the database would break whatever still uses the old password, and terraform apply would "
           "change it back)")

    def apply() -> str:
        v = f.store.add_version(t.password_secret, good.password).number
        done = f"added {t.password_secret} v{v}"
        if t.url_secret:
            done += f", {_write_url(f, service, good.password)}"
        return done

    return Plan("add-secret-version", service, changes, why, apply)


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
    order = ["secret-latest", "terraform", "secret-pinned", "secret-latest-stripped"]
    good = next((c for label in order for c in [_pw(f, service, label)]
                 if c and logins.get(label, {}).get("ok")), None) or _pw(f, service, "secret-latest")
    if good is None:
        return None

    def apply() -> str:
        return _write_url(f, service, good.password)

    return Plan("rewrite-url", service, [
        f"Secret Manager {t.url_secret}: add a new version built by deployctl (postgresql+{t.driver}, user and "
        f"password percent-encoded, host {t.host}, sslmode={t.ssl}) with the password in {good.source} "
        f"({good.fingerprint})"], "the stored string is malformed or does not log in; the old version stays",
        apply)


def _create_user(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)
    latest = _pw(f, service, "secret-latest")
    if latest is None:
        return None

    def apply() -> str:
        f.admin.insert_user(t.instance_name, t.user, latest.password)
        return f"created user {t.user} on {t.instance_name}"

    return Plan("create-user", service, [
        f"Cloud SQL {t.instance_name}: create user {t.user} with the password in {latest.source} "
        f"({latest.fingerprint})"], "the user does not exist", apply)


def _create_database(f: Facts, service: str, **_) -> Plan | None:
    t = f.target(service)

    def apply() -> str:
        f.admin.insert_database(t.instance_name, t.database)
        return f"created database {t.database} on {t.instance_name}"

    return Plan("create-database", service, [f"Cloud SQL {t.instance_name}: create database {t.database} "
                                             "(empty; run deployctl migrate next)"], "the database does not exist",
                apply)


def _strip_newline(f: Facts, secret: str, **_) -> Plan | None:
    value = f.secret(secret)
    stripped = value.data.rstrip(b"\r\n")

    def apply() -> str:
        return f"added {secret} v{f.store.add_version(secret, stripped).number}"

    return Plan("strip-newline", secret, [
        f"Secret Manager {secret}: add a new version with v{value.version}'s value minus its trailing newline "
        f"({redact.fingerprint(stripped)})"], "a trailing newline becomes part of the value for most readers",
        apply)


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
                "PostgreSQL 15 no longer grants CREATE on public to everyone", apply if latest else None)


_BUILDERS: dict[str, Callable[..., Plan | None]] = {
    "set-db-password": _set_db_password, "add-secret-version": _add_secret_version, "rewrite-url": _rewrite_url,
    "create-user": _create_user, "create-database": _create_database, "strip-newline": _strip_newline,
    "grant-public": _grant_public,
}


def collect(f: Facts, reports) -> list[Plan]:
    """One plan per (fix, subject) asked for by the failed (or warned) checks, in a safe order."""
    wanted: dict[tuple[str, str], tuple[dict, list[str]]] = {}
    for r in reports:
        o = r.outcome
        if o.status not in ("fail", "warn") or not o.fix:
            continue
        key = (o.fix, str(sorted(o.fix_args.items())))
        wanted.setdefault(key, (o.fix_args, []))[1].append(r.check.key)
    # A new password version already rewrites the url secret of that service.
    covered = {args.get("service") for (fix, _), (args, _) in wanted.items() if fix == "add-secret-version"}
    plans = []
    for (fix, _), (args, keys) in sorted(wanted.items(), key=lambda kv: ORDER.index(kv[0][0])):
        if fix == "rewrite-url" and args.get("service") in covered:
            continue
        if fix == "set-db-password" and args.get("service") in covered:
            continue
        p = plan(f, fix, args)
        if p is not None:
            p.checks = keys
            plans.append(p)
    return plans
