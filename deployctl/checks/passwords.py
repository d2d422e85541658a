"""The password check (db.passwords) and the diagnosis behind a failed login: which source holds the password
the database accepts, compared without printing a value (fingerprints only), and which repair follows.

The repair prefers what consumers actually use. When the database accepts a password that something logs in
with (the serving revision's pinned version, the url secret the next job and deploy read, Terraform's, which
`terraform apply` sets back), the secret follows the database: a new version of the password secret (and the
url secret rebuilt when it holds another password). The database password is changed only when every known
source was tried and each was rejected with 28P01 (a login that failed otherwise proves nothing), and the plan
then says which consumers that breaks.
"""

from __future__ import annotations

from deployctl.checks.engine import Outcome, failed, passed, skipped, warned
from deployctl.checks.facts import CONSUMED, Candidate, Facts

SELF_FIX = "deployctl doctor {service} --fix"
DISPLAY = ("terraform", "url-secret", "url-pinned", "secret-pinned", "secret-latest-stripped", "secret-latest")
FINGERPRINTS = "equal values have equal fingerprints (fp:...) in every deployctl command that shares this state dir"


def _accepted(cands: dict[str, Candidate], logins: dict) -> list[Candidate]:
    return sorted((cands[k] for k, v in logins.items() if v.get("ok") and k in cands),
                  key=lambda c: DISPLAY.index(c.label) if c.label in DISPLAY else len(DISPLAY))


def broken_by_change(f: Facts, service: str, new_password: str) -> list[str]:
    """The consumers whose password stops working when the database user's password becomes `new_password`."""
    out = []
    for c in f.candidates(service):
        if c.password == new_password:
            continue
        if c.label in ("url-pinned", "secret-pinned"):
            out.append(f"the serving revision (it pins {c.holder}) until deployctl deploy {service}")
        elif c.label == "terraform":
            out.append(f"{c.holder}: terraform apply would set its password back")
    return out


def verdict(f: Facts, service: str, result: dict) -> dict:
    """Which source holds the password the database accepts, in words, with the repair to choose."""
    t = f.target(service)
    cands = {c.label: c for c in f.candidates(service)}
    logins = result.get("logins", {})
    latest = cands.get("secret-latest")
    if latest and logins.get("secret-latest", {}).get("ok"):
        return {"ok": True, "cause": f"the database accepts {latest.source}"}
    accepted = _accepted(cands, logins)
    if not accepted:
        return _none_accepted(f, service, cands, logins)
    what = (f"{latest.source} is not what the database accepts" if latest
            else f"{t.password_secret} has no readable version")
    who = " and ".join(c.holder for c in accepted)
    used = [c for label in CONSUMED for c in accepted if c.label == label]
    if not used:  # only the latest version without its newline
        return {"ok": False, "cause": f"{latest.source} ends with a newline; without it, it is what the database "
                                      "accepts", "next_step": SELF_FIX.format(service=service),
                "fix": "strip-newline", "fix_args": {"secret": t.password_secret}}
    if "secret-latest-stripped" in {c.label for c in accepted}:
        what = f"{latest.source} ends with a newline; without it, it is what the database accepts"
    from deployctl.checks.connstring import needs_rewrite

    rewrite = needs_rewrite(f, service, used[0].password)
    return {"ok": False, "cause": f"{what}; the database accepts the password in {who}",
            "next_step": (f"add that password as a new version of {t.password_secret}"
                          + (f" (and rewrite {t.url_secret})" if rewrite else "")
                          + f": {SELF_FIX.format(service=service)}; the database stays as it is"),
            "fix": "add-secret-version", "fix_args": {"service": service, "label": used[0].label}}


def _none_accepted(f: Facts, service: str, cands: dict[str, Candidate], logins: dict) -> dict:
    t = f.target(service)
    tried = [c for c in cands.values() if c.label in logins]
    untried = [c for c in cands.values() if c.label not in logins]
    if untried:
        # Never "none accepted" on a partial comparison: the right password may be among those not tried.
        return {"ok": False, "cause": (
            f"the database accepts none of the passwords tried ({', '.join(c.source for c in tried) or 'none'}); "
            f"not tried: {', '.join(c.source for c in untried)} (the probe had no way to receive them)"),
            "next_step": f"compare them from a machine that reaches the database: deployctl doctor {service} "
                         "(without --in-vpc), or store the password Terraform holds as a Secret Manager version"}
    role = f.role(service)
    if role and role.get("expired"):
        return {"ok": False, "cause": (
            f"the password of {t.user} expired ({role['valid_until']}, pg_roles.rolvaliduntil, read as "
            f"{role['via']}): PostgreSQL answers 28P01 for an expired password as for a wrong one"),
            "next_step": f"as an admin: ALTER ROLE {t.user} VALID UNTIL 'infinity'; (on Cloud SQL also check the "
                         "user's password policy: gcloud sql users describe); then deployctl doctor "
                         f"{service}"}
    if role and role.get("exists") and not role.get("can_login"):
        return {"ok": False, "cause": f"role {t.user} is NOLOGIN (pg_roles, read as {role['via']})",
                "next_step": f"ALTER ROLE {t.user} LOGIN; (as an admin)"}
    unsure = {c.source: logins[c.label].get("code", "?") for c in tried
              if logins[c.label].get("code") != "auth-failed"}
    if unsure:
        # Only 28P01 says "not this password": a login that failed otherwise (too many connections, a server
        # restarting, a timeout, SSL) may have been the right one, so nothing is concluded and nothing changed.
        return {"ok": False, "cause": (
            "inconclusive: the database rejected " + (", ".join(c.source for c in tried if c.source not in unsure)
                                                      or "none of the passwords")
            + " (28P01), but the login with " + "; ".join(f"{s} failed for another reason ({code})"
                                                          for s, code in unsure.items())),
            "next_step": f"see db.login for why those logins failed, then run deployctl doctor {service} again"}
    latest = cands.get("secret-latest")
    known = ", ".join(c.source for c in cands.values())
    why = (f"the database accepts none of the known passwords ({known}): it was changed outside these sources, "
           "or it is not SCRAM")
    if role and role.get("valid_until") and role["valid_until"] != "infinity":
        why += f" (it does not expire before {role['valid_until']})"
    if latest is None:
        return {"ok": False, "cause": why, "next_step": f"store the password in {t.password_secret}, then "
                                                        f"{SELF_FIX.format(service=service)}"}
    broken = broken_by_change(f, service, latest.password.rstrip("\r\n"))
    step = f"set the database user's password to {latest.source}: {SELF_FIX.format(service=service)}"
    if broken:
        step += "; that breaks " + "; ".join(broken)
    return {"ok": False, "cause": why, "next_step": step, "fix": "set-db-password", "fix_args": {"service": service}}


def check(f: Facts, service: str) -> Outcome:
    """The three-way comparison: Terraform state, Secret Manager (latest, pinned), what the database accepts."""
    t = f.target(service)
    cands = f.candidates(service)
    if not cands:
        return skipped("no password source is readable")
    result = f.database(service)
    logins = result.get("logins", {}) if result["tcp"]["ok"] else {}
    evidence = []
    for c in cands:
        said = logins.get(c.label)
        state = ("accepted" if said["ok"] else f"rejected: {said.get('code', '?')}") if said else "not tried"
        evidence.append(f"{c.source}: {c.fingerprint} ({state})")
    evidence.append(FINGERPRINTS)
    if not logins:
        return skipped("the database is not reachable: only the sources are compared", evidence)
    main = logins.get("secret-latest")
    if main and not main.get("ok") and main.get("code") not in ("auth-failed",):
        return skipped(f"the login fails for another reason ({main.get('code')}): see db.login", evidence)
    v = verdict(f, service, result)
    if not v["ok"]:
        if t.user not in _users_or_empty(f, t.instance_name):
            return skipped(f"user {t.user} does not exist (see db.user)", evidence)
        return failed(v["cause"], v["next_step"], evidence, fix=v.get("fix"), fix_args=v.get("fix_args", {}))
    stale = [c for c in cands if c.label in CONSUMED and logins.get(c.label, {}).get("ok") is False]
    if stale:
        return _stale(f, service, stale, evidence)
    return passed(f"every source agrees and the database accepts it ({len(cands)} sources)", evidence)


def _stale(f: Facts, service: str, stale: list[Candidate], evidence: list[str]) -> Outcome:
    """The database accepts the latest password secret, but something that logs in still holds another."""
    t = f.target(service)
    labels = {c.label for c in stale}
    steps = []
    if "url-secret" in labels:
        steps.append(f"rewrite {t.url_secret}: {SELF_FIX.format(service=service)}")
    if labels & {"url-pinned", "secret-pinned"}:
        steps.append(f"deployctl deploy {service} (the serving revision pins an old version)")
    if "terraform" in labels:
        steps.append("terraform apply would set the old password back: update the Terraform variable, or import "
                     "the new value")
    fix = {"fix": "rewrite-url", "fix_args": {"service": service}} if "url-secret" in labels else {}
    return warned(f"the database accepts {t.password_secret} (latest) but not {', '.join(c.holder for c in stale)}",
                  "; ".join(steps), evidence, **fix)


def _users_or_empty(f: Facts, instance: str) -> list[str]:
    try:
        return f.users(instance)
    except Exception:  # noqa: BLE001
        return []
