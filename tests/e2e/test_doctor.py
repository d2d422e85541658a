"""`deployctl doctor` on a local cloud of its own, broken one way at a time, the way the story broke it.

Each scenario is what a user would run: break something (by hand, through the same APIs), run doctor, read
its diagnosis (check id + cause) and exit code; `--fix --yes` where there is a safe repair, then doctor again.
The scenarios run in file order; each leaves the environment healthy for the next. After each repair a
`deployctl migrate` (the job runner) must succeed. No password appears in any output, in any encoding, whole or
in part.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pg8000.native
import pytest

from tests.e2e.conftest import ROOT, Cli
from tests.e2e.leaks import assert_no_leak

CC, FG = "cross-chain-integration", "fiat-gateway"
TREES = {CC: "cross_chain_integration", FG: "fiat_gateway"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    cli = Cli(tmp_path_factory.mktemp("doctor-cloud"))
    up = cli("local", "up")
    assert up.code == 0, up.output
    migrate(cli, CC)  # fiat-gateway is migrated after the scenarios that delete its user and database
    yield cli
    cli("--yes", "local", "down", "--purge")


@pytest.fixture(scope="module")
def cloudapi(cloud):
    """The local cloud's APIs in this process (to break things as a person would with gcloud)."""
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.run_jobs import RunJobs
    from deployctl.cloud.secrets import SecretStore
    from deployctl.cloud.sqladmin import SqlAdmin
    from deployctl.localcloud.lifecycle import find

    ep = find(cloud.state_dir)
    clients = Clients(emulator_host=ep.grpc, sqladmin_endpoint=ep.rest)

    class Api:
        store = SecretStore(clients, "deployctl-local")
        admin = SqlAdmin(clients, "deployctl-local")
        jobs = RunJobs(clients, "deployctl-local", "us-central1")
        ip = admin.get_instance("core-pg").private_ip
    yield Api
    clients.close()


def migrate(cli: Cli, service: str) -> str:
    """`deployctl migrate SERVICE` (the job runner), as a user runs it after a repair: it must succeed."""
    run = cli("migrate", service)
    assert run.code == 0, run.output
    return run.output


def doctor(cli: Cli, *args: str, options: tuple[str, ...] = ()) -> tuple[int, dict, str]:
    """`deployctl --json [OPTIONS] doctor ARGS`: exit code, the envelope, everything printed."""
    r = cli("--json", *options, "doctor", *args)
    assert r.stdout.strip(), r.output
    doc = json.loads(r.stdout)
    return r.code, doc, r.output


def checks(doc: dict, service: str) -> dict[str, dict]:
    return {c["id"]: c for s in doc["data"]["services"] if s["service"] == service for c in s["checks"]}


def secret_values(api) -> list[str]:
    from deployctl.checks.facts import password_in_url

    out = []
    for sid in ("cross-chain-db-password", "fiat-gateway-db-password", "cross-chain-database-url",
                "fiat-gateway-database-url"):
        for v in api.store.versions(sid):
            text = api.store.access(sid, v.number).data.decode()
            pw = password_in_url(text) if "url" in sid else text
            if pw:
                out += [pw, pw.rstrip("\n")]
    return out


def assert_no_secret(api, *outputs: str, extra: tuple[str, ...] = ()) -> None:
    assert_no_leak(set(secret_values(api)) | set(extra), *outputs)


def superuser(api, database: str = "postgres") -> pg8000.native.Connection:
    """The instance's postgres user, as an admin reaches it (its password set through the admin API)."""
    import secrets

    password = "Su-" + secrets.token_urlsafe(18)
    api.admin.set_password("core-pg", "postgres", password)
    return pg8000.native.Connection("postgres", password=password, host=api.ip, port=5432, database=database,
                                    ssl_context=True, timeout=10)


def test_healthy_database_checks_pass(cloud, cloudapi):
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 0, out
    for cid in ("db.user", "db.database", "db.login", "db.passwords", "db.ssl", "db.public-schema", "dsn.lint",
                "dsn.login", "net.tcp", "net.private-ip", "tf.match", "migrations.current"):
        assert c[cid]["status"] == "pass", (cid, c[cid])
    assert c["run.ready"]["status"] == "skip"  # not deployed: not a failure
    assert_no_secret(cloudapi, out)


def test_b_user_missing_then_fix(cloud, cloudapi):
    cloudapi.admin.delete_user("core-pg", "fiat_gateway_user")
    code, doc, out = doctor(cloud, FG)
    c = checks(doc, FG)
    assert code == 1
    assert c["db.user"]["status"] == "fail" and "does not exist" in c["db.user"]["cause"]
    assert c["db.login"]["status"] == "skip" and "db.user failed" in c["db.login"]["cause"]
    code, doc, out2 = doctor(cloud, FG, "--fix", options=("--yes",))
    assert [f["fix"] for f in doc["data"]["fixes"]] == ["create-user"]
    c = checks(doc, FG)
    assert c["db.user"]["status"] == "pass" and c["db.login"]["status"] == "pass", out2
    out3 = migrate(cloud, FG)
    assert_no_secret(cloudapi, out, out2, out3)


def test_c_database_missing_then_fix(cloud, cloudapi):
    cloudapi.admin.delete_database("core-pg", "fiat_gateway")
    code, doc, out = doctor(cloud, FG)
    c = checks(doc, FG)
    assert code == 1
    assert c["db.database"]["status"] == "fail" and "database fiat_gateway does not exist" in c["db.database"]["cause"]
    failed = cloud("migrate", FG)  # as the story ran it: the job meets 3D000
    assert failed.code == 1 and "3D000" in failed.output, failed.output
    code, doc, out2 = doctor(cloud, FG, "--fix", options=("--yes",))
    c = checks(doc, FG)
    assert c["db.login"]["status"] == "pass", out2
    # the failed job is history now: its next step is the migration, not creating the database again
    assert c["migrations.last-job"]["status"] == "fail" and "3D000" in c["migrations.last-job"]["cause"]
    assert c["migrations.last-job"]["next_step"] == f"database fiat_gateway exists now: deployctl migrate {FG}"
    out3 = migrate(cloud, FG)
    assert_no_secret(cloudapi, out, failed.output, out2, out3)


def test_a_secret_disagrees_database_matches_terraform(cloud, cloudapi):
    # The story: a new version of the password secret, added by hand, that the database never saw.
    new = "Hand-Added#Pw-2026"
    put = cloud("secrets", "set", "cross-chain-db-password", input=new)
    assert put.code == 0, put.output
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1
    cause = c["db.passwords"]["cause"]
    assert "Secret Manager's latest version of cross-chain-db-password (v" in cause
    assert "is not what the database accepts; the database accepts the password in Terraform state" in cause
    assert c["db.login"]["status"] == "fail"
    # review 2 (low): the revision is read over a login that works (Terraform's password), as migrate reads it
    assert c["migrations.current"]["status"] == "pass", c["migrations.current"]
    assert any("fp:" in e for e in c["db.passwords"]["evidence"])
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    fixes = doc["data"]["fixes"]
    assert [f["fix"] for f in fixes] == ["add-secret-version"] and "odd one out" in fixes[0]["why"]
    # Review 2, finding 11: the url secret already holds the password the database accepts: not rewritten
    assert "cross-chain-database-url" not in fixes[0]["result"] and fixes[0]["next_step"] == "", fixes[0]
    c = checks(doc, CC)
    assert code == 0 and c["db.login"]["status"] == "pass" and c["dsn.login"]["status"] == "pass", out2
    out3 = migrate(cloud, CC)
    assert_no_secret(cloudapi, out, out2, out3, extra=(new,))


def _tf_without_secret_versions(cloud, tmp_path) -> Path:
    """A config whose Terraform state holds the users' passwords but no Secret Manager version of them (the
    usual real setup: Terraform sets the password, someone stores it by hand)."""
    state = json.loads((cloud.state_dir / "terraform.tfstate").read_text())
    state["resources"] = [r for r in state["resources"] if r["type"] != "google_secret_manager_secret_version"]
    tf = tmp_path / "tf.json"
    tf.write_text(json.dumps(state))
    return _config_copy(tmp_path, lambda t: t.replace("emulator = true", f'emulator = true\nterraform_state = "{tf}"'))


def test_a_in_vpc_where_terraform_cannot_be_passed_to_the_probe(cloud, cloudapi, tmp_path):
    """The story's case with --in-vpc: Terraform's password has no Secret Manager version, so the probe cannot
    try it. It is "not tried", never "accepts none"; the url secret's password is tried inside the VPC (the
    probe reads it out of the connection string) and the database accepts it: the secret follows it."""
    cli = Cli(cloud.state_dir, _tf_without_secret_versions(cloud, tmp_path))
    new = "Hand-Added#Pw-InVpc-2026"
    assert cloud("secrets", "set", "cross-chain-db-password", input=new).code == 0
    code, doc, out = doctor(cli, CC, "--in-vpc")
    c = checks(doc, CC)
    assert code == 1, out
    cause = c["db.passwords"]["cause"]
    assert "accepts none" not in cause and "the database accepts the password in cross-chain-database-url" in cause
    assert any("Terraform state" in e and "(not tried)" in e for e in c["db.passwords"]["evidence"])
    assert c["db.passwords"]["next_step"].endswith("the database stays as it is")
    code, doc, out2 = doctor(cli, CC, "--in-vpc", "--fix", options=("--yes",))
    assert [f["fix"] for f in doc["data"]["fixes"]] == ["add-secret-version"], out2
    assert code == 0 and checks(doc, CC)["db.login"]["status"] == "pass", out2
    out3 = migrate(cloud, CC)
    assert_no_secret(cloudapi, out, out2, out3, extra=(new,))


def _write_url(api, url: str) -> None:
    api.store.add_version("cross-chain-database-url", url)


def test_d_url_secret_without_ssl_then_fix(cloud, cloudapi):
    pw = cloudapi.store.access("cross-chain-db-password").text
    _write_url(cloudapi, f"postgresql+pg8000://cross_chain_user:{quote(pw, safe='')}@{cloudapi.ip}:5432/cross_chain"
                         "?sslmode=disable&application_name=cc-app")
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1
    assert c["dsn.lint"]["status"] == "fail" and "sslmode-disabled" in c["dsn.lint"]["cause"]
    assert c["dsn.login"]["status"] == "fail" and "does not use SSL" in c["dsn.login"]["cause"]
    assert c["db.login"]["status"] == "pass"  # the password itself is fine
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    assert code == 0 and checks(doc, CC)["dsn.login"]["status"] == "pass", out2
    # the rebuilt string keeps the parameters deployctl does not write itself
    assert cloudapi.store.access("cross-chain-database-url").text.endswith("&application_name=cc-app")
    out3 = migrate(cloud, CC)
    assert_no_secret(cloudapi, out, out2, out3)


def test_e_unencoded_at_in_password_then_fix(cloud, cloudapi):
    pw = "At@in-the-Pw#7731"
    cloudapi.admin.set_password("core-pg", "cross_chain_user", pw)
    cloudapi.store.add_version("cross-chain-db-password", pw)
    _write_url(cloudapi, f"postgresql+pg8000://cross_chain_user:{pw}@{cloudapi.ip}:5432/cross_chain?sslmode=require")
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1
    assert c["dsn.lint"]["status"] == "fail" and "unencoded-reserved" in c["dsn.lint"]["cause"]
    assert c["dsn.login"]["status"] == "fail"
    # a migrate before the repair fails before its job, with the lint's message, and shows no part of it
    broken = cloud("migrate", CC)
    assert broken.code == 1 and "unencoded-reserved" in broken.output, broken.output
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    c = checks(doc, CC)
    assert c["dsn.login"]["status"] == "pass" and c["dsn.lint"]["status"] == "pass", out2
    # Terraform state still holds the old password: the database accepts Secret Manager's, so a warning
    assert c["db.passwords"]["status"] == "warn" and "Terraform state" in c["db.passwords"]["cause"]
    assert code == 3
    out3 = migrate(cloud, CC)
    # put Terraform's password back everywhere so the next scenario starts from the story's shape
    from deployctl import terraform

    tf = terraform.read(cloud.state_dir / "terraform.tfstate").user("core-pg", "cross_chain_user").password
    cloudapi.admin.set_password("core-pg", "cross_chain_user", tf)
    cloudapi.store.add_version("cross-chain-db-password", tf)
    assert doctor(cloud, CC, "--fix", options=("--yes",))[0] == 0
    assert_no_secret(cloudapi, out, out2, out3, broken.output, extra=(pw,))


def test_e2_a_password_sqlalchemy_cuts_into_its_port_slot_shows_no_piece(cloud, cloudapi):
    """Review 2, finding 2: SQLAlchemy reads 'ef gh#ij' of this password as the port and int() quoted it in an
    "unexpected error". The string is not tried (dsn.lint explains it) and no 6 characters of it show."""
    pw = "ab@cd:ef gh#ij/kl"
    good = cloudapi.store.access("cross-chain-database-url").text
    _write_url(cloudapi, f"postgresql+pg8000://cross_chain_user:{pw}@{cloudapi.ip}:5432/cross_chain?sslmode=require")
    try:
        code, doc, out = doctor(cloud, CC)
    finally:
        _write_url(cloudapi, good)
    c = checks(doc, CC)
    assert code == 1
    assert c["dsn.lint"]["status"] == "fail" and "unencoded-reserved" in c["dsn.lint"]["cause"]
    assert c["dsn.login"]["status"] == "fail" and "not percent-encoded" in c["dsn.login"]["cause"], c["dsn.login"]
    assert not [pw[i:i + 6] for i in range(len(pw) - 5) if pw[i:i + 6] in out]
    assert_no_secret(cloudapi, out)


def test_f_trailing_newline(cloud, cloudapi):
    pw = cloudapi.store.access("cross-chain-db-password").text
    cloudapi.store.add_version("cross-chain-db-password", pw + "\n")
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1
    # DESIGN §6: the newline itself is a warning; the login it breaks is the failure
    assert c["secret.cross-chain-db-password"]["status"] == "warn"
    assert "ends with a newline" in c["secret.cross-chain-db-password"]["cause"]
    assert c["db.login"]["status"] == "fail"
    assert "without it, it is what the database accepts" in c["db.passwords"]["cause"]
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    assert code == 0, out2
    assert_no_secret(cloudapi, out, out2)


def test_f2_a_wrong_password_with_a_newline_is_repaired_once(cloud, cloudapi):
    """The review's conflict: a wrong latest version that also ends with a newline. The password repair (add
    Terraform's password) supersedes strip-newline of the same secret, which used to add the wrong value back
    on top of it."""
    wrong = "wrong value not it"
    cloudapi.store.add_version("cross-chain-db-password", wrong + "\n")
    code, doc, out = doctor(cloud, CC, "--fix", options=("--yes",))
    assert [f["fix"] for f in doc["data"]["fixes"]] == ["add-secret-version"], out
    c = checks(doc, CC)
    assert code == 0 and c["db.login"]["status"] == "pass" and c["secret.cross-chain-db-password"]["status"] == "pass"
    assert cloudapi.store.access("cross-chain-db-password").text != wrong
    out2 = migrate(cloud, CC)
    assert_no_secret(cloudapi, out, out2)


def test_g_migration_job_failed(cloud, cloudapi):
    """A real migration job, failing as in the story (28P01): the check reads enough of its log to find the
    SQLSTATE and diagnoses it as the job runner does, not by the first line that says "error"."""
    from sqlalchemy.engine import make_url

    good = cloudapi.store.access("cross-chain-database-url").text
    wrong = make_url(good).set(password="Not-The-Pw-0451").render_as_string(hide_password=False)
    _write_url(cloudapi, wrong)
    try:
        failed = cloud("migrate", CC)
        assert failed.code == 1 and "28P01" in failed.output, failed.output
        code, doc, out = doctor(cloud, CC)
        c = checks(doc, CC)["migrations.last-job"]
        assert code == 1 and c["status"] == "fail", out
        assert "28P01" in c["cause"] and "password authentication failed" in c["cause"]
        assert "sqlalche.me" not in c["cause"]  # not the "Background on this error" line
        assert "db.login" in c["next_step"] and "dsn.login" in c["next_step"]
        assert not any(e.startswith(("  File", "Traceback")) or set(e.strip()) <= set("^~") for e in c["evidence"])
    finally:
        _write_url(cloudapi, good)
    again = migrate(cloud, CC)
    code, doc, out2 = doctor(cloud, CC)
    assert code == 0 and checks(doc, CC)["migrations.last-job"]["status"] == "pass", out2
    assert_no_secret(cloudapi, failed.output, out, again, out2, extra=("Not-The-Pw-0451",))


def _config_copy(tmp_path, edit) -> Cli:
    (tmp_path / "configs").mkdir()
    text = (ROOT / "configs" / "local.toml").read_text()
    (tmp_path / "configs" / "local.toml").write_text(edit(text))
    os.symlink(ROOT / "migrations", tmp_path / "migrations")
    return tmp_path / "configs"


@pytest.fixture()
def silent_listener():
    """An address that accepts TCP connections and never answers (a black hole after the handshake)."""
    import random

    for _ in range(20):
        host = f"127.{random.randint(200, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
        sock = socket.socket()
        try:
            sock.bind((host, 5432))
            break
        except OSError:
            sock.close()
    else:
        pytest.skip("no free loopback address for the silent listener")
    sock.listen(16)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield host
    stop.set()
    t.join(2)
    for conn in held:
        conn.close()
    sock.close()


def test_h_wrong_private_ip_fails_within_its_timeout(cloud, cloudapi, tmp_path, silent_listener):
    """The configured IP answers TCP and then nothing: the login times out at --timeout, not the driver's
    2-minute default, and the checks end within their own timeouts."""
    host = silent_listener
    cfg = _config_copy(tmp_path, lambda t: t.replace('ssl = "require"', f'ssl = "require"\nprivate_ip = "{host}"'))
    cli = Cli(cloud.state_dir, cfg)
    before = cloudapi.store.access("cross-chain-database-url")
    start = time.monotonic()
    code, doc, out = doctor(cli, CC, "--fix", options=("--timeout", "2", "--yes"))
    took = time.monotonic() - start
    c = checks(doc, CC)
    assert code == 1
    assert c["net.private-ip"]["status"] == "fail" and host in c["net.private-ip"]["cause"]
    # Review 2, finding 1: the stored string has the instance's real address; the config is what is wrong, so
    # --fix leaves the url secret as it is (it used to point it at the config's dead address)
    assert c["dsn.lint"]["status"] == "pass" and c["dsn.login"]["status"] == "pass", c["dsn.lint"]
    assert "rewrite-url" not in [f["fix"] for f in doc["data"]["fixes"]]
    after = cloudapi.store.access("cross-chain-database-url")
    assert (after.version, after.data) == (before.version, before.data)
    assert c["db.login"]["status"] == "fail" and "network-timeout" in " ".join(c["db.login"]["evidence"]), c["db.login"]
    assert 2 <= c["db.login"]["elapsed"] <= 2 * 4 + 2  # the probe's own timeout ran out, inside the check's
    assert took < 45
    assert_no_secret(cloudapi, out)


def test_i_private_ip_without_vpc_connector(cloud, cloudapi, tmp_path):
    cfg = _config_copy(tmp_path, lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("vpc_connector")))
    code, doc, out = doctor(Cli(cloud.state_dir, cfg), CC)
    c = checks(doc, CC)["net.vpc-connector"]
    assert code == 1 and c["status"] == "fail" and "has no VPC connector" in c["cause"]
    assert_no_secret(cloudapi, out)


def test_m_expired_password(cloud, cloudapi):
    """28P01 for every source: pg_roles, read over another service's login, says the password expired."""
    admin = superuser(cloudapi)
    try:
        admin.run("ALTER ROLE cross_chain_user VALID UNTIL '2001-01-01'")
        code, doc, out = doctor(cloud, CC)
        c = checks(doc, CC)
        assert code == 1
        for cid in ("db.login", "db.passwords"):
            assert c[cid]["status"] == "fail" and "expired" in c[cid]["cause"], c[cid]
            assert "read as fiat_gateway_user" in c[cid]["cause"]
            assert "VALID UNTIL 'infinity'" in c[cid]["next_step"]
        assert not c["db.passwords"].get("fixable")  # a new password would not help; no --fix changes it
    finally:
        admin.run("ALTER ROLE cross_chain_user VALID UNTIL 'infinity'")
        admin.close()
    assert doctor(cloud, CC)[0] == 0
    assert_no_secret(cloudapi, out)


def test_n_nologin_role(cloud, cloudapi):
    admin = superuser(cloudapi)
    try:
        admin.run("ALTER ROLE fiat_gateway_user NOLOGIN")
        code, doc, out = doctor(cloud, FG)
        c = checks(doc, FG)
        assert code == 1
        assert c["db.login"]["status"] == "fail" and "NOLOGIN" in c["db.login"]["cause"]
        assert "ALTER ROLE fiat_gateway_user LOGIN" in c["db.login"]["next_step"]
        assert c["db.passwords"]["status"] == "skip"  # the password is right: not a password problem
    finally:
        admin.run("ALTER ROLE fiat_gateway_user LOGIN")
        admin.close()
    assert doctor(cloud, FG)[0] == 0
    assert_no_secret(cloudapi, out)


def test_o_no_create_on_public_grant_is_checked_not_assumed(cloud, cloudapi):
    """PostgreSQL 15's public schema: a GRANT by a role without a grant option only warns ("no privileges were
    granted"), so --fix must say it failed and how to do it, not report it done; where the user owns the schema
    (and revoked its own CREATE), the same repair works and migrate follows."""
    admin = superuser(cloudapi, database="cross_chain")
    try:
        admin.run("ALTER DATABASE cross_chain OWNER TO postgres")  # pg_database_owner, public's owner, is postgres
        code, doc, out = doctor(cloud, CC)
        c = checks(doc, CC)["db.public-schema"]
        assert code == 1 and c["status"] == "fail" and c["fixable"], c
        code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
        fix = next(f for f in doc["data"]["fixes"] if f["fix"] == "grant-public")
        assert not fix["applied"] and "no privileges were granted" in fix["result"], fix
        assert "GRANT USAGE, CREATE ON SCHEMA public TO cross_chain_user" in fix["result"]
        assert code == 1 and checks(doc, CC)["db.public-schema"]["status"] == "fail"

        admin.run("ALTER SCHEMA public OWNER TO cross_chain_user")
        admin.run("REVOKE CREATE ON SCHEMA public FROM cross_chain_user")
        code, doc, out3 = doctor(cloud, CC, "--fix", options=("--yes",))
        fix = next(f for f in doc["data"]["fixes"] if f["fix"] == "grant-public")
        assert fix["applied"] and checks(doc, CC)["db.public-schema"]["status"] == "pass", fix
    finally:
        admin.run("ALTER SCHEMA public OWNER TO pg_database_owner")
        admin.run("ALTER DATABASE cross_chain OWNER TO cloudsqlsuperuser")
        admin.close()
    out4 = migrate(cloud, CC)
    assert doctor(cloud, CC)[0] == 0
    assert_no_secret(cloudapi, out, out2, out3, out4)


def test_in_vpc_runs_the_probe_as_a_job(cloud, cloudapi):
    code, doc, out = doctor(cloud, CC, "--in-vpc")
    c = checks(doc, CC)
    assert doc["data"]["in_vpc"] and c["db.login"]["status"] == "pass", out
    assert "from inside the VPC" in c["net.tcp"]["cause"]
    job = cloudapi.jobs.get(f"{CC}-doctor")
    assert job.secrets and not any("PW" in k for k in job.env)  # passwords only as secret references
    assert "DEPLOYCTL_PROBE_URLPW_URL_SECRET" in job.secrets  # the url's password is tried inside the VPC too
    assert_no_secret(cloudapi, out)


def test_j_all_healthy(cloud, cloudapi):
    code, doc, out = doctor(cloud)
    assert code == 0, out
    assert doc["ok"] and doc["data"]["counts"].get("fail", 0) == 0 and doc["data"]["counts"].get("warn", 0) == 0
    human = cloud("doctor")
    assert human.code == 0 and "✓ cross-chain-integration" in human.stdout and "db.passwords" in human.stdout
    assert_no_secret(cloudapi, out, human.output)


def test_k_cloud_run_checks_on_a_deployed_service(cloud, cloudapi):
    """The Cloud Run checks on a real deployed revision: all pass, then its pinned secret version is disabled."""
    svc = "api-key-service"
    deployed = cloud("deploy", svc, "--no-status")
    assert deployed.code == 0, deployed.output
    code, doc, out = doctor(cloud, svc)
    c = checks(doc, svc)
    assert code == 0, out
    for cid in ("run.ready", "run.revision", "run.pinned-secrets", "run.health"):
        assert c[cid]["status"] == "pass", (cid, c[cid])
    pinned = cloudapi.store.versions("api-key-pepper")[0].number  # newest first: what deploy pinned
    cloudapi.store.disable("api-key-pepper", pinned)
    try:
        code, doc, out = doctor(cloud, svc)
        c = checks(doc, svc)
        assert code == 1, out
        assert c["run.pinned-secrets"]["status"] == "fail"
        assert f"api-key-pepper:{pinned}" in c["run.pinned-secrets"]["cause"]
        assert c["run.pinned-secrets"]["next_step"] == f"deployctl deploy {svc}"
        assert c["run.ready"]["status"] == "pass"  # the running revision still serves: only new instances fail
        assert_no_secret(cloudapi, out, deployed.output)
    finally:
        cloudapi.store.enable("api-key-pepper", pinned)


def test_l_the_database_follows_no_one_then_everyone_follows_the_database(cloud, cloudapi):
    """cross-chain-integration deployed (its revision pins the url secret). (1) The database accepts only the
    url secret's password: the password secret follows it, never the database, and doctor says to redeploy.
    (2) The database accepts no known password: only then set-db-password, listing what it breaks, with the
    url secret rewritten. A migrate succeeds after each. Last in the file: it leaves the service deployed."""
    from deployctl import dsn

    deployed = cloud("deploy", CC, "--no-status")
    assert deployed.code == 0, deployed.output
    p1, p9 = "Url-Only#Pw-2026-x1", "Nobody-Knows#Pw-9"
    cloudapi.admin.set_password("core-pg", "cross_chain_user", p1)
    _write_url(cloudapi, dsn.build(driver="pg8000", user="cross_chain_user", password=p1, database="cross_chain",
                                   host=cloudapi.ip, sslmode="require").url)
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1
    assert "the database accepts the password in cross-chain-database-url (v" in c["db.passwords"]["cause"]
    assert any("pinned by the serving revision" in e and "(rejected" in e for e in c["db.passwords"]["evidence"])
    assert any(", added " in e for e in c["db.passwords"]["evidence"])  # versions say how old they are
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    fixes = doc["data"]["fixes"]
    assert [f["fix"] for f in fixes] == ["add-secret-version"], out2
    assert fixes[0]["next_step"].startswith(f"deployctl deploy {CC}: its serving revision still pins"), fixes[0]
    assert cloudapi.store.access("cross-chain-db-password").text == p1  # the database was left alone
    c = checks(doc, CC)
    assert c["db.login"]["status"] == "pass" and c["dsn.login"]["status"] == "pass", out2
    out3 = migrate(cloud, CC)

    cloudapi.admin.set_password("core-pg", "cross_chain_user", p9)
    code, doc, out4 = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1 and "accepts none of the known passwords" in c["db.passwords"]["cause"]
    assert "that breaks" in c["db.passwords"]["next_step"] and "the serving revision (it pins" in c["db.passwords"]["next_step"]
    code, doc, out5 = doctor(cloud, CC, "--fix", options=("--yes",))
    fixes = doc["data"]["fixes"]
    assert [f["fix"] for f in fixes] == ["set-db-password"], out5
    assert any("this breaks" in x and "terraform apply" in x for x in fixes[0]["changes"]), fixes[0]
    # the url secret already holds the password the database is set to (p1): it is left as it is
    assert "cross-chain-database-url" not in fixes[0]["result"], fixes[0]
    assert fixes[0]["next_step"].startswith(f"deployctl deploy {CC}: its serving revision still pins"), fixes[0]
    c = checks(doc, CC)
    assert c["db.login"]["status"] == "pass" and c["dsn.login"]["status"] == "pass", out5
    out6 = migrate(cloud, CC)
    assert_no_secret(cloudapi, out, out2, out3, out4, out5, out6, extra=(p1, p9))
