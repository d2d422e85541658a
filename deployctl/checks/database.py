"""The service's database: its user and database exist (admin API), Terraform agrees with the config, the
service's password logs in, which password source the database accepts (diagnosis), SSL, CREATE on public."""

from __future__ import annotations

from deployctl.checks.engine import Outcome, Skip, failed, passed, skipped, warned
from deployctl.checks.facts import Facts

SELF_FIX = "deployctl doctor {service} --fix"


def _login_failure(d: dict) -> str:
    return f"{d.get('title', 'login failed')} (SQLSTATE {d.get('sqlstate') or '-'}, {d.get('code', '?')})"


def user_exists(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    users = f.users(t.instance_name)
    if t.user not in users:
        return failed(f"user {t.user} does not exist on instance {t.instance_name} (Cloud SQL Admin users.list)",
                      SELF_FIX.format(service=service) + " (creates it with the password in Secret Manager), or "
                      "terraform apply", [f"{len(users)} users on {t.instance_name}"], fix="create-user",
                      fix_args={"service": service})
    return passed(f"user {t.user} exists on {t.instance_name}")


def database_exists(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    dbs = f.databases(t.instance_name)
    if t.database not in dbs:
        return failed(f"database {t.database} does not exist on instance {t.instance_name}",
                      SELF_FIX.format(service=service) + " (creates it through the admin API), or terraform apply",
                      [f"databases: {', '.join(dbs) or 'none'}"], fix="create-database", fix_args={"service": service})
    return passed(f"database {t.database} exists on {t.instance_name}")


def terraform_matches(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    state = f.tfstate()
    problems = []
    if not state.user(t.instance_name, t.user):
        problems.append(f"no google_sql_user {t.user} on instance {t.instance_name}")
    if (t.instance_name, t.database) not in state.databases:
        problems.append(f"no google_sql_database {t.database} on instance {t.instance_name}")
    if problems:
        return warned(f"Terraform state ({state.source}) disagrees with the config: " + "; ".join(problems),
                      "make the config's database entry and the Terraform code name the same user and database")
    return passed(f"google_sql_user {t.user} and google_sql_database {t.database} are in Terraform state")


def _db(f: Facts, service: str) -> dict:
    result = f.database(service)
    if not result["tcp"]["ok"]:
        raise Skip("the database is not reachable (see net.tcp)")
    return result


def login(f: Facts, service: str) -> Outcome:
    """The password the service gets (Secret Manager's latest version) logs in."""
    t = f.target(service)
    result = _db(f, service)
    main = result["logins"].get("secret-latest")
    if main is None:
        return skipped(f"no readable password in {t.password_secret} (see its secret check)")
    if main["ok"]:
        return passed(f"{t.user} logs in to {t.database} with {t.password_secret} (latest)",
                      [f"{main['elapsed']:.2f}s"])
    code = main.get("code")
    if code == "auth-failed":
        cause, step, fix = _auth_failed(f, service, result)
        return failed(cause, step, [_login_failure(main)], **fix)
    if code == "database-missing":
        return failed(f"database {t.database} does not exist", SELF_FIX.format(service=service),
                      [_login_failure(main)], fix="create-database", fix_args={"service": service})
    if code == "login-not-permitted":
        return failed(f"role {t.user} may not log in (NOLOGIN)", f"ALTER ROLE {t.user} LOGIN; (as an admin)",
                      [_login_failure(main)])
    return failed(main.get("cause", "login failed"), main.get("hint", ""), [_login_failure(main)])


def _auth_failed(f: Facts, service: str, result: dict) -> tuple[str, str, dict]:
    """28P01 says nothing about why: ask the admin API whether the role exists, then test every source."""
    t = f.target(service)
    try:
        if t.user not in f.users(t.instance_name):
            return (f"user {t.user} does not exist on instance {t.instance_name} (PostgreSQL answers 28P01 for a "
                    "missing role as for a wrong password)", SELF_FIX.format(service=service),
                    {"fix": "create-user", "fix_args": {"service": service}})
    except Exception:  # noqa: BLE001 - cannot tell; carry on with the passwords
        pass
    verdict = password_verdict(f, service, result)
    return verdict["cause"], verdict["next_step"], {"fix": verdict.get("fix"),
                                                     "fix_args": verdict.get("fix_args", {})}


def password_verdict(f: Facts, service: str, result: dict) -> dict:
    """Which source holds the password the database accepts, in words, with the repair to choose."""
    t = f.target(service)
    cands = {c.label: c for c in f.candidates(service)}
    logins = result.get("logins", {})
    accepted = [cands[k] for k, v in logins.items() if v["ok"] and k in cands]
    latest = cands.get("secret-latest")
    if latest and logins.get("secret-latest", {}).get("ok"):
        return {"ok": True, "cause": f"the database accepts {latest.source}"}
    if not accepted:
        return {"ok": False, "cause": (
            f"the database accepts none of the known passwords ({', '.join(c.source for c in cands.values())}): "
            "it was changed outside these sources, or it expired or is not SCRAM (PostgreSQL gives the same "
            "28P01; the admin API's user can tell an expiry)"),
            "next_step": f"set it to Secret Manager's value: {SELF_FIX.format(service=service)} "
                         "(SqlAdmin users.update)", "fix": "set-db-password", "fix_args": {"service": service}}
    good = accepted[0]
    if good.label == "secret-latest-stripped":
        return {"ok": False, "cause": f"{latest.source} ends with a newline; without it, it is what the "
                                      "database accepts", "next_step": SELF_FIX.format(service=service),
                "fix": "strip-newline", "fix_args": {"secret": t.password_secret}}
    who = " and ".join(c.source for c in accepted)
    what = (f"{latest.source} is not what the database accepts" if latest
            else f"{t.password_secret} has no readable version")
    terraform_agrees = any(c.label == "terraform" for c in accepted)
    return {"ok": False, "cause": f"{what}; the database accepts the password in {who}",
            "next_step": (f"add that password as a new version of {t.password_secret} (and rewrite "
                          f"{t.url_secret or 'the url secret'}): {SELF_FIX.format(service=service)}"
                          if terraform_agrees else
                          f"set the database user's password to {t.password_secret}'s value, or add the accepted "
                          f"one as a new secret version: {SELF_FIX.format(service=service)}"),
            "fix": "add-secret-version" if terraform_agrees else "set-db-password",
            "fix_args": {"service": service, "label": good.label}}


def passwords(f: Facts, service: str) -> Outcome:
    """The three-way comparison: Terraform state, Secret Manager (latest, pinned), what the database accepts."""
    t = f.target(service)
    cands = f.candidates(service)
    if not cands:
        return skipped("no password source is readable")
    result = f.database(service)
    logins = result.get("logins", {}) if result["tcp"]["ok"] else {}
    evidence = []
    for c in cands:
        verdict = logins.get(c.label)
        said = ("accepted" if verdict["ok"] else f"rejected: {verdict.get('code', '?')}") if verdict else "not tried"
        evidence.append(f"{c.source}: {c.fingerprint} ({said})")
    if not logins:
        return skipped("the database is not reachable: only the sources are compared", evidence)
    if any(c.label == "secret-latest" for c in cands) and logins.get("secret-latest", {}).get("ok") is False \
            and logins["secret-latest"].get("code") not in ("auth-failed",):
        return skipped(f"the login fails for another reason ({logins['secret-latest'].get('code')}): see db.login",
                       evidence)
    verdict = password_verdict(f, service, result)
    if not verdict["ok"]:
        if t.user not in _users_or_empty(f, t.instance_name):
            return skipped(f"user {t.user} does not exist (see db.user)", evidence)
        return failed(verdict["cause"], verdict["next_step"], evidence, fix=verdict.get("fix"),
                      fix_args=verdict.get("fix_args", {}))
    stale = [c for c in cands if c.label in ("terraform", "secret-pinned", "url-secret") and
             logins.get(c.label, {}).get("ok") is False]
    if stale:
        names = ", ".join(c.source for c in stale)
        step = ("terraform apply would set the old password back: update the Terraform variable, or import the "
                "new value" if any(c.label == "terraform" for c in stale) else SELF_FIX.format(service=service))
        fix = {"fix": "rewrite-url", "fix_args": {"service": service}} if any(
            c.label == "url-secret" for c in stale) else {}
        return warned(f"the database accepts {t.password_secret} (latest) but not {names}", step, evidence, **fix)
    return passed(f"every source agrees and the database accepts it ({len(cands)} sources)", evidence)


def _users_or_empty(f: Facts, instance: str) -> list[str]:
    try:
        return f.users(instance)
    except Exception:  # noqa: BLE001
        return []


def _session(f: Facts, service: str) -> dict:
    result = _db(f, service)
    session = result.get("session")
    if session is None:
        raise Skip("no password logs in")
    if "error" in session:
        e = session["error"]
        raise Skip(f"the session queries failed: {e['cause']}")
    return session


def ssl(f: Facts, service: str) -> Outcome:
    s = _session(f, service)
    if not s.get("ssl"):
        return failed("the session is not encrypted although sslmode=require was asked",
                      "check the instance's ssl_mode (ENCRYPTED_ONLY) and the DSN's sslmode")
    return passed(f"SSL negotiated ({s.get('ssl_version') or 'TLS'})")


def public_schema(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    s = _session(f, service)
    role = s.get("role") or {}
    evidence = [f"valid until: {role['valid_until']}"] if role.get("valid_until") else []
    if s.get("create_on_public"):
        return passed(f"{t.user} may create in schema public of {t.database}", evidence)
    sql = f"GRANT USAGE, CREATE ON SCHEMA public TO {t.user};"
    return failed(f"{t.user} may not create in schema public of {t.database} (PostgreSQL 15 no longer grants "
                  "CREATE on public to everyone): migrations fail with 42501",
                  f"as the database owner or cloudsqlsuperuser, in {t.database}: {sql}", evidence,
                  fix="grant-public", fix_args={"service": service})
