"""doctor's decisions on given facts, without a cloud: which repair is planned (or none), with which password, and
what is concluded from logins that failed for different reasons. The facts are seeded into a real Facts (its
per-run cache), the checks and planners are the real ones; no repair is applied."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployctl import dsn, redact
from deployctl.checks import connstring, fixes, passwords
from deployctl.checks.facts import Candidate, Facts
from deployctl.cloud.secrets import AccessedSecret
from deployctl.cloud.sqladmin import Instance
from deployctl.dbtarget import DatabaseTarget

SVC, IP = "cross-chain-integration", "10.20.0.3"
PW, OLD = "Right-Pw-2026#x", "Old-Pw-2025#y"
OK = {"ok": True, "elapsed": 0.01, "sqlstate": None}
AUTH = {"ok": False, "code": "auth-failed", "sqlstate": "28P01"}
BUSY = {"ok": False, "code": "too-many-connections", "sqlstate": "53300"}


def url(password: str, host: str = IP, query: str = "sslmode=require") -> str:
    return dsn.build(driver="pg8000", user="cross_chain_user", password=password, database="cross_chain",
                     host=host).url.split("?")[0] + "?" + query


def facts(*, logins: dict, cands: dict[str, str], stored: str | None = None, configured_ip: str | None = None,
          live_ip: str = IP, pinned: dict[str, tuple[int, str]] | None = None) -> Facts:
    """A Facts whose cache holds these logins, candidates (label -> password), latest url secret, addresses and
    the serving revision's pinned versions (secret id -> (version, value))."""
    t = DatabaseTarget(service=SVC, instance_key="core", instance_name="core-pg", connection_name="p:r:core-pg",
                       host=configured_ip or live_ip, configured_ip=configured_ip, port=5432, database="cross_chain",
                       user="cross_chain_user", password_secret="cross-chain-db-password",
                       url_secret="cross-chain-database-url", ssl="require", driver="pg8000", mode="direct",
                       ip_type="private", iam_auth=False)
    holders = {"secret-latest": "cross-chain-db-password (v5)", "terraform": "Terraform state (google_sql_user.cc)",
               "url-secret": "cross-chain-database-url (v3)", "url-pinned": "cross-chain-database-url (v2, pinned)"}
    f = Facts(ctx=None)
    values = {
        f"target:{SVC}": t, f"role:{SVC}": None, "users:core-pg": ["cross_chain_user"],
        f"candidates:{SVC}": [Candidate(label, holders.get(label, label), pw, holder=holders.get(label, label),
                                        in_url=label.startswith("url")) for label, pw in cands.items()],
        f"db:{SVC}": {"tcp": {"ok": True}, "logins": logins}, f"tcp:{SVC}": {"ok": True},
        "instance:core-pg": Instance("core-pg", "p:r:core-pg", live_ip, None, "RUNNABLE", "POSTGRES_15",
                                     "ENCRYPTED_ONLY"),
        f"revision:{SVC}": SimpleNamespace(secrets={sid: f"{sid}:{v}" for sid, (v, _) in (pinned or {}).items()}),
    }
    if stored is not None:
        values["secret:cross-chain-database-url:latest"] = AccessedSecret(3, stored.encode())
    for sid, (version, text) in (pinned or {}).items():
        values[f"secret:{sid}:{version}"] = AccessedSecret(version, text.encode())
    f._values.update(values)
    return f


@pytest.fixture(autouse=True)
def _clean():
    yield
    redact.clear()


def test_a_login_that_failed_for_another_reason_is_never_counted_as_rejected():
    """Review 2, finding 5: Terraform's password hit 53300 while the latest got 28P01: inconclusive, no fix
    (it used to plan set-db-password, which would have broken whatever uses Terraform's password)."""
    f = facts(logins={"secret-latest": AUTH, "terraform": BUSY}, cands={"secret-latest": OLD, "terraform": PW})
    v = passwords.verdict(f, SVC, f.database(SVC))
    assert not v["ok"] and "fix" not in v and v["cause"].startswith("inconclusive")
    assert "too-many-connections" in v["cause"] and "Terraform state" in v["cause"]
    out = passwords.check(f, SVC)
    assert out.status == "fail" and not out.fix
    # every one rejected with 28P01: only then the database password is changed
    f = facts(logins={"secret-latest": AUTH, "terraform": AUTH}, cands={"secret-latest": OLD, "terraform": PW})
    assert passwords.verdict(f, SVC, f.database(SVC))["fix"] == "set-db-password"


def test_a_warning_alone_never_rewrites_a_working_url_and_the_host_is_the_instances():
    """Review 2, finding 1: a literal '+' or sslmode=prefer is a warning without a repair; the host is checked
    against the admin API's address, not the config's (which was the wrong one in scenario h)."""
    f = facts(logins={"secret-latest": OK}, cands={"secret-latest": PW}, stored=url("a+b-Pw-2026", query="sslmode=prefer"))
    out = connstring.lint(f, SVC)
    assert out.status == "warn" and not out.fix
    f = facts(logins={"secret-latest": OK}, cands={"secret-latest": PW}, stored=url(PW), configured_ip="10.9.9.9")
    assert connstring.lint(f, SVC).status == "pass"


def test_a_url_is_rebuilt_only_with_a_password_that_logged_in_and_never_while_the_address_is_wrong():
    broken = url(PW, query="sslmode=disable&application_name=cc-app&options=-csearch_path%3Dledger")
    f = facts(logins={"secret-latest": AUTH, "terraform": AUTH}, cands={"secret-latest": OLD, "terraform": PW},
              stored=broken)
    p = fixes.plan(f, "rewrite-url", {"service": SVC})
    assert p.apply is None and "deployctl dsn cross-chain-integration --write-secret" in p.changes[0]
    f = facts(logins={"secret-latest": AUTH, "terraform": OK}, cands={"secret-latest": OLD, "terraform": PW},
              stored=broken)
    p = fixes.plan(f, "rewrite-url", {"service": SVC})
    assert p.apply is not None and p.password == PW and "keeping application_name, options" in p.changes[0]
    assert fixes._kept_query(f, "cross-chain-database-url") == [("application_name", "cc-app"),
                                                               ("options", "-csearch_path=ledger")]
    f = facts(logins={"secret-latest": OK}, cands={"secret-latest": PW}, stored=broken, configured_ip="10.9.9.9")
    assert fixes.plan(f, "rewrite-url", {"service": SVC}) is None


def test_the_secret_follows_the_database_without_rewriting_a_url_that_already_holds_that_password():
    """Review 2, finding 11: the url secret held the accepted password; it was rewritten byte for byte, and the
    'why' blamed terraform apply although Terraform held another password."""
    f = facts(logins={"secret-latest": AUTH, "url-secret": OK, "terraform": AUTH},
              cands={"secret-latest": OLD, "url-secret": PW, "terraform": "Tf-Other-Pw-1"}, stored=url(PW))
    p = fixes.plan(f, "add-secret-version", {"service": SVC, "label": "url-secret"})
    assert p.writes == {"cross-chain-db-password"} and len(p.changes) == 1
    assert "terraform apply" not in p.why and "the next job and deploy" in p.why
    v = passwords.verdict(f, SVC, f.database(SVC))
    assert v["fix"] == "add-secret-version" and "rewrite" not in v["next_step"]
    # another password in the url secret: it is rebuilt too
    f = facts(logins={"secret-latest": AUTH, "terraform": OK}, cands={"secret-latest": OLD, "terraform": PW},
              stored=url(OLD))
    p = fixes.plan(f, "add-secret-version", {"service": SVC, "label": "terraform"})
    assert p.writes == {"cross-chain-db-password", "cross-chain-database-url"} and "terraform apply" in p.why


def test_a_redeploy_is_suggested_only_when_the_pinned_version_holds_another_password():
    from deployctl.commands.doctor import _redeploy_step

    f = facts(logins={"secret-latest": OK}, cands={"secret-latest": PW}, stored=url(PW),
              pinned={"cross-chain-database-url": (2, url(PW))})
    plan = fixes.Plan("add-secret-version", SVC, [], writes={"cross-chain-database-url"}, service=SVC, password=PW)
    assert _redeploy_step(f, plan) == ""
    plan.password = "Another-Pw-77"
    assert _redeploy_step(f, plan).startswith(f"deployctl deploy {SVC}: its serving revision still pins")


def test_one_plan_per_written_secret():
    """Review 2, low: strip-newline and rewrite-url both wrote the url secret (two new versions)."""
    f = facts(logins={"secret-latest": OK}, cands={"secret-latest": PW}, stored=url(PW, query="sslmode=disable") + "\n")

    def report(key, fix, args):
        return SimpleNamespace(check=SimpleNamespace(key=key), outcome=SimpleNamespace(status="fail", fix=fix,
                                                                                       fix_args=args))

    plans = fixes.collect(f, [report("secret.url", "strip-newline", {"secret": "cross-chain-database-url"}),
                              report("dsn.lint", "rewrite-url", {"service": SVC})])
    assert [p.fix for p in plans] == ["rewrite-url"] and set(plans[0].checks) == {"secret.url", "dsn.lint"}


def test_a_job_that_met_objects_a_partial_run_left_gets_the_idempotent_fix_as_its_next_step():
    """migrations.last-job: 42701/42710/42P07 are classified `already-exists` (db/sqlstate.py); the next step is
    that diagnosis's fix, then the migration again."""
    from deployctl.checks.migrations import _next_step
    from deployctl.db.sqlstate import _by_sqlstate

    d = _by_sqlstate("42701", 'column "external_ref" of relation "deposits" already exists')
    step = _next_step(d, "fiat-gateway")
    assert d.code == "already-exists" and "if_not_exists=True" in step, step
    assert step.endswith("then deployctl migrate fiat-gateway"), step
