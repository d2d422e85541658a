"""`deployctl doctor` on a local cloud of its own, broken one way at a time, the way the story broke it.

Each scenario is what a user would run: break something (by hand, through the same APIs), run doctor, read
its diagnosis (check id + cause) and exit code; `--fix --yes` where there is a safe repair, then doctor again.
The scenarios run in file order; each leaves the environment healthy for the next. No password appears in any
output, in any encoding.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from urllib.parse import quote, quote_plus

import pytest

from tests.e2e.conftest import ROOT, Cli

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


def migrate(cli: Cli, service: str) -> None:
    import subprocess

    url = cli(service and "dsn", service, "--reveal")
    assert url.code == 0, url.stderr
    env = {**cli.env, "DATABASE_URL": url.stdout.strip()}
    proc = subprocess.run([sys.executable, "-m", "alembic", "-c", f"migrations/{TREES[service]}/alembic.ini",
                           "upgrade", "head"], env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


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
    for value in set(secret_values(api)) | set(extra):
        forms = {value, quote(value, safe=""), quote_plus(value), base64.b64encode(value.encode()).decode()}
        for out in outputs:
            for form in forms:
                assert form not in out, "a password leaked into the output"


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
    assert_no_secret(cloudapi, out, out2)


def test_c_database_missing_then_fix(cloud, cloudapi):
    cloudapi.admin.delete_database("core-pg", "fiat_gateway")
    code, doc, out = doctor(cloud, FG)
    c = checks(doc, FG)
    assert code == 1
    assert c["db.database"]["status"] == "fail" and "database fiat_gateway does not exist" in c["db.database"]["cause"]
    code, doc, out2 = doctor(cloud, FG, "--fix", options=("--yes",))
    assert checks(doc, FG)["db.login"]["status"] == "pass", out2
    migrate(cloud, FG)
    assert_no_secret(cloudapi, out, out2)


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
    assert any("fp:" in e for e in c["db.passwords"]["evidence"])
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    fixes = doc["data"]["fixes"]
    assert [f["fix"] for f in fixes] == ["add-secret-version"] and "odd one out" in fixes[0]["why"]
    c = checks(doc, CC)
    assert code == 0 and c["db.login"]["status"] == "pass" and c["dsn.login"]["status"] == "pass", out2
    assert_no_secret(cloudapi, out, out2, extra=(new,))


def _write_url(api, url: str) -> None:
    api.store.add_version("cross-chain-database-url", url)


def test_d_url_secret_without_ssl_then_fix(cloud, cloudapi):
    pw = cloudapi.store.access("cross-chain-db-password").text
    _write_url(cloudapi, f"postgresql+pg8000://cross_chain_user:{quote(pw, safe='')}@{cloudapi.ip}:5432/cross_chain"
                         "?sslmode=disable")
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1
    assert c["dsn.lint"]["status"] == "fail" and "sslmode-disabled" in c["dsn.lint"]["cause"]
    assert c["dsn.login"]["status"] == "fail" and "does not use SSL" in c["dsn.login"]["cause"]
    assert c["db.login"]["status"] == "pass"  # the password itself is fine
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    assert code == 0 and checks(doc, CC)["dsn.login"]["status"] == "pass", out2
    assert_no_secret(cloudapi, out, out2)


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
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    c = checks(doc, CC)
    assert c["dsn.login"]["status"] == "pass" and c["dsn.lint"]["status"] == "pass", out2
    # Terraform state still holds the old password: the database accepts Secret Manager's, so a warning
    assert c["db.passwords"]["status"] == "warn" and "Terraform state" in c["db.passwords"]["cause"]
    assert code == 3
    # put Terraform's password back everywhere so the next scenario starts from the story's shape
    from deployctl import terraform

    tf = terraform.read(cloud.state_dir / "terraform.tfstate").user("core-pg", "cross_chain_user").password
    cloudapi.admin.set_password("core-pg", "cross_chain_user", tf)
    cloudapi.store.add_version("cross-chain-db-password", tf)
    assert doctor(cloud, CC, "--fix", options=("--yes",))[0] == 0
    assert_no_secret(cloudapi, out, out2, extra=(pw,))


def test_f_trailing_newline(cloud, cloudapi):
    pw = cloudapi.store.access("cross-chain-db-password").text
    cloudapi.store.add_version("cross-chain-db-password", pw + "\n")
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)
    assert code == 1
    assert c["secret.cross-chain-db-password"]["status"] == "fail"
    assert "ends with a newline" in c["secret.cross-chain-db-password"]["cause"]
    assert "without it, it is what the database accepts" in c["db.passwords"]["cause"]
    code, doc, out2 = doctor(cloud, CC, "--fix", options=("--yes",))
    assert code == 0, out2
    assert_no_secret(cloudapi, out, out2)


def _job(cloudapi, code: int, message: str):
    from deployctl.cloud.run import ContainerSpec

    spec = ContainerSpec(image="local/cross-chain-integration:dev", command=["python", "-c",
                         f"import sys; print({message!r}, file=sys.stderr); sys.exit({code})"],
                         vpc_connector="projects/deployctl-local/locations/us-central1/connectors/local-connector")
    cloudapi.jobs.apply(f"{CC}-migrate", spec)
    return cloudapi.jobs.run(f"{CC}-migrate", deadline=60)


def test_g_migration_job_failed(cloud, cloudapi):
    ex = _job(cloudapi, 1, 'FATAL: password authentication failed for user "cross_chain_user"')
    assert not ex.succeeded
    code, doc, out = doctor(cloud, CC)
    c = checks(doc, CC)["migrations.last-job"]
    assert code == 1 and c["status"] == "fail"
    assert ex.id in c["cause"] and "password authentication failed" in c["cause"]
    assert "db.login" in c["next_step"]
    assert _job(cloudapi, 0, "migrated").succeeded
    assert doctor(cloud, CC)[0] == 0


def _config_copy(tmp_path, edit) -> Cli:
    (tmp_path / "configs").mkdir()
    text = (ROOT / "configs" / "local.toml").read_text()
    (tmp_path / "configs" / "local.toml").write_text(edit(text))
    os.symlink(ROOT / "migrations", tmp_path / "migrations")
    return tmp_path / "configs"


def test_h_wrong_private_ip_fails_within_its_timeout(cloud, cloudapi, tmp_path):
    cfg = _config_copy(tmp_path, lambda t: t.replace('ssl = "require"', 'ssl = "require"\nprivate_ip = "127.1.2.3"'))
    cli = Cli(cloud.state_dir, cfg)
    start = time.monotonic()
    code, doc, out = doctor(cli, CC, options=("--timeout", "3"))
    took = time.monotonic() - start
    c = checks(doc, CC)
    assert code == 1
    assert c["net.private-ip"]["status"] == "fail" and "127.1.2.3" in c["net.private-ip"]["cause"]
    assert c["net.tcp"]["status"] == "fail" and "network" in c["net.tcp"]["cause"]
    assert c["net.tcp"]["elapsed"] <= 5 and took < 60
    assert c["db.login"]["status"] == "skip"
    assert_no_secret(cloudapi, out)


def test_i_private_ip_without_vpc_connector(cloud, cloudapi, tmp_path):
    cfg = _config_copy(tmp_path, lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("vpc_connector")))
    code, doc, out = doctor(Cli(cloud.state_dir, cfg), CC)
    c = checks(doc, CC)["net.vpc-connector"]
    assert code == 1 and c["status"] == "fail" and "has no VPC connector" in c["cause"]


def test_in_vpc_runs_the_probe_as_a_job(cloud, cloudapi):
    code, doc, out = doctor(cloud, CC, "--in-vpc")
    c = checks(doc, CC)
    assert doc["data"]["in_vpc"] and c["db.login"]["status"] == "pass", out
    assert "from inside the VPC" in c["net.tcp"]["cause"]
    job = cloudapi.jobs.get(f"{CC}-doctor")
    assert job.secrets and not any("PW" in k for k in job.env)  # passwords only as secret references
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
    finally:
        cloudapi.store.enable("api-key-pepper", pinned)
