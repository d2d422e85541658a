"""The stored connection string (url_secret): lint (dsn.lint, as deployctl.runtime reads it, against the address
the admin API gives the instance) and a login with it exactly as the service would make one.

A repair (rewrite-url) is offered only for what a rebuilt string fixes: a lint error, or a failed login whose
cause is in the string. Warnings never rewrite a string that works; fixes.py decides whether a password that
logged in is known to rebuild it with.
"""

from __future__ import annotations

from deployctl.checks.engine import Outcome, failed, passed, skipped, warned
from deployctl.checks.facts import Facts
from deployctl.errors import CloudError

REWRITE = "deployctl dsn {service} --write-secret (or deployctl doctor {service} --fix)"
# Login failures a rebuilt string can cure (not: too many connections, a server restarting, NOLOGIN, ...).
REWRITABLE = {"auth-failed", "ssl-required", "unencoded-reserved", "unparseable", "network-dns", "network-refused",
              "network-timeout", "ssl-verify", "server-no-ssl", "database-missing", "not-authorized"}


def instance_ip(f: Facts, service: str) -> str | None:
    try:
        return f.instance_ip(service)
    except CloudError:
        return None  # no host comparison: net.private-ip says why the instance is unreadable


def findings(f: Facts, service: str, text: str) -> list:
    from deployctl import dsn

    t = f.target(service)
    return dsn.lint(text, private_ip=instance_ip(f, service), driver_hint=t.driver, via_runtime=True)


def broken(f: Facts, service: str, text: str) -> bool:
    """The stored string has a lint error a rebuild fixes (a trailing newline alone is strip-newline's)."""
    return any(x.severity == "error" and x.code != "trailing-newline" for x in findings(f, service, text))


def needs_rewrite(f: Facts, service: str, password: str) -> bool:
    """Whether the url secret must be rebuilt for the database user to log in with `password`: it holds another
    password (or none, or cannot be read), or it is broken."""
    from deployctl.checks.facts import password_in_url

    t = f.target(service)
    if not t.url_secret:
        return False
    try:
        text = f.secret(t.url_secret).data.decode("utf-8", "surrogateescape")
    except CloudError:
        return True
    return password_in_url(text) != password or broken(f, service, text)


def lint(f: Facts, service: str) -> Outcome:
    from deployctl import dsn

    t = f.target(service)
    if not t.url_secret:
        return skipped("no url_secret configured")
    stored = f.secret(t.url_secret)
    text = stored.data.decode("utf-8", "surrogateescape")
    found = findings(f, service, text)
    evidence = [f"{t.url_secret} v{stored.version}: {dsn.mask(text.rstrip(chr(10)))}"]
    evidence += [f"{x.severity}: {x.code}: {x.message}" for x in found]
    errors = [x for x in found if x.severity == "error"]
    step = REWRITE.format(service=service)
    if errors:
        fix = {"fix": "rewrite-url", "fix_args": {"service": service}} if broken(f, service, text) else {}
        return failed(f"{t.url_secret}: " + "; ".join(f"{x.code}" for x in errors) + f" — {errors[0].message}",
                      step, evidence, **fix)
    if found:
        return warned(f"{t.url_secret}: " + "; ".join(x.code for x in found), step, evidence)
    return passed(f"{t.url_secret} v{stored.version} is well formed", evidence)


def login(f: Facts, service: str) -> Outcome:
    t = f.target(service)
    if not t.url_secret:
        return skipped("no url_secret configured")
    result = f.database(service)
    if not result["tcp"]["ok"]:
        return skipped("the database is not reachable (see net.tcp)")
    r = result.get("stored_url")
    if r is None:
        return skipped(f"{t.url_secret} is not readable")
    if r["ok"]:
        return passed(f"the connection string in {t.url_secret} logs in")
    step = REWRITE.format(service=service)
    code = r.get("code")
    causes = {
        "ssl-required": f"the connection string in {t.url_secret} does not use SSL and the instance accepts only "
                        "SSL connections (28000 no encryption)",
        "auth-failed": f"the connection string in {t.url_secret} carries a password the database rejects (28P01), "
                       "or a mis-encoded one",
        "network-dns": f"the host in {t.url_secret} does not resolve: a raw '@' or ':' in the password moves where "
                       "parsers think the host starts (see dsn.lint)",
        "unencoded-reserved": f"the connection string in {t.url_secret} is not percent-encoded (see dsn.lint), so it "
                              "was not tried: parsers would take a piece of the password for the host or the port",
        "unparseable": f"the connection string in {t.url_secret} cannot be parsed (see dsn.lint)",
    }
    cause = causes.get(code, f"{t.url_secret}: {r.get('title', 'login failed')}: {r.get('cause', '')}")
    fix = {"fix": "rewrite-url", "fix_args": {"service": service}} if code in REWRITABLE else {}
    if not fix:
        step = r.get("hint") or step
    return failed(cause, step, [f"{code} (SQLSTATE {r.get('sqlstate') or '-'})"], **fix)
