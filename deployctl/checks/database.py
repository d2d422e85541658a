"""The service's database: its user and database exist (admin API), Terraform agrees with the config, the
service's password logs in (and, when it does not, why: checks.passwords), SSL, CREATE on public."""

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
    from deployctl.checks.passwords import verdict as password_verdict

    verdict = password_verdict(f, service, result)
    return verdict["cause"], verdict["next_step"], {"fix": verdict.get("fix"),
                                                     "fix_args": verdict.get("fix_args", {})}


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
