"""The stored connection string (url_secret): lint (dsn.lint, as deployctl.runtime reads it) and a login with
it exactly as the service would make one."""

from __future__ import annotations

from deployctl.checks.engine import Outcome, failed, passed, skipped, warned
from deployctl.checks.facts import Facts

REWRITE = "deployctl dsn {service} --write-secret (or deployctl doctor {service} --fix)"


def lint(f: Facts, service: str) -> Outcome:
    from deployctl import dsn

    t = f.target(service)
    if not t.url_secret:
        return skipped("no url_secret configured")
    stored = f.secret(t.url_secret)
    text = stored.data.decode("utf-8", "surrogateescape")
    findings = dsn.lint(text, private_ip=t.host, driver_hint=t.driver, via_runtime=True)
    evidence = [f"{t.url_secret} v{stored.version}: {dsn.mask(text.rstrip(chr(10)))}"]
    evidence += [f"{x.severity}: {x.code}: {x.message}" for x in findings]
    errors = [x for x in findings if x.severity == "error"]
    step = REWRITE.format(service=service)
    if errors:
        return failed(f"{t.url_secret}: " + "; ".join(f"{x.code}" for x in errors) + f" — {errors[0].message}",
                      step, evidence, fix="rewrite-url", fix_args={"service": service})
    if findings:
        return warned(f"{t.url_secret}: " + "; ".join(x.code for x in findings), step, evidence,
                      fix="rewrite-url", fix_args={"service": service})
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
    return failed(cause, step, [f"{code} (SQLSTATE {r.get('sqlstate') or '-'})"], fix="rewrite-url",
                  fix_args={"service": service})
