"""`deployctl migrate` on the local cloud's real PostgreSQL: job and local runners, up/again/down/up, a
migration failing halfway, five concurrent runs, the story's 28P01, a DSN without SSL, and lint.

Every test leaves the shared local cloud as it found it: databases at head, url secrets restored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pg8000.native
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.conftest import ROOT, Cli

FIXTURES = ROOT / "tests" / "fixtures" / "migrations"
CROSS_HEAD = "b47c9d2e5f03"
FIAT_HEAD = "c95e7a4f1d03"


def config_copy(tmp_path: Path, tree: str) -> Path:
    """configs/local.toml with fiat-gateway's migrations pointed at a fixture tree."""
    text = (ROOT / "configs" / "local.toml").read_text()
    text = text.replace('migrations = "migrations/fiat_gateway"', f'migrations = "{FIXTURES / tree}"')
    out = tmp_path / "configs"
    out.mkdir()
    (out / "local.toml").write_text(text)
    return out


def status_of(cli: Cli, service: str) -> dict:
    run = cli("--json", "migrate", "status", service)
    assert run.code == 0, run.output
    return json.loads(run.stdout)["data"]["services"][0]


def db(cli: Cli, service: str) -> pg8000.native.Connection:
    run = cli("dsn", service, "--reveal")
    assert run.code == 0, run.output
    u = make_url(run.stdout.strip())
    return pg8000.native.Connection(u.username, password=u.password, host=u.host, port=u.port or 5432,
                                    database=u.database, ssl_context=True, timeout=10)


def enum_labels(conn, name: str) -> list[str]:
    return [r[0] for r in conn.run("SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                                   "WHERE t.typname = :n ORDER BY e.enumsortorder", n=name)]


def test_job_and_local_runners_up_again_down_up(local_cloud):
    cli, svc = local_cloud, "cross-chain-integration"
    down = cli("migrate", svc, "--to", "base")
    assert down.code == 0, down.output
    assert status_of(cli, svc)["current"] == []

    up = cli("migrate", svc)  # job runner, the default
    assert up.code == 0, up.output
    assert f"base → {CROSS_HEAD} (3 step(s))" in up.output
    assert f"execution  {svc}-migrate-" in up.output
    again = cli("migrate", svc)
    assert again.code == 0 and f"nothing to do: already at {CROSS_HEAD}" in again.output, again.output

    down = cli("migrate", svc, "--to", "base", "--runner", "local")
    assert down.code == 0, down.output
    conn = db(cli, svc)
    try:
        assert enum_labels(conn, "chain") == [] and enum_labels(conn, "transfer_status") == []
        up = cli("migrate", svc, "--runner", "local")
        assert up.code == 0 and f"base → {CROSS_HEAD}" in up.output, up.output
        assert enum_labels(conn, "chain") == ["ethereum", "polygon", "arbitrum", "optimism", "base"]
        assert conn.run("SELECT version_num FROM alembic_version") == [[CROSS_HEAD]]
    finally:
        conn.close()
    again = cli("migrate", svc, "--runner", "local")
    assert again.code == 0 and "nothing to do" in again.output, again.output
    st = status_of(cli, svc)
    assert st["current"] == [CROSS_HEAD] and st["pending"] == []


@pytest.mark.parametrize("runner", ["job", "local"])
def test_migration_failing_halfway_leaves_the_previous_revision(local_cloud, tmp_path, runner):
    cli = local_cloud
    assert cli("migrate", "fiat-gateway").code == 0
    failing = Cli(cli.state_dir, config_copy(tmp_path, "failing"))
    run = failing("migrate", "fiat-gateway", "--runner", runner)
    assert run.code == 1, run.output
    assert "42701" in run.output and "f00dfa11ed04" in run.output
    assert 'column "currency" of relation "deposits" already exists' in run.output
    conn = db(cli, "fiat-gateway")
    try:
        assert conn.run("SELECT version_num FROM alembic_version") == [[FIAT_HEAD]]
        assert conn.run("SELECT to_regclass('ledger') IS NULL") == [[True]]  # the half was rolled back
    finally:
        conn.close()
    st = status_of(failing, "fiat-gateway")
    assert st["current"] == [FIAT_HEAD] and st["pending"] == ["f00dfa11ed04"]


def test_five_concurrent_runs_apply_each_revision_once(local_cloud, tmp_path):
    cli, svc = local_cloud, "fiat-gateway"
    assert cli("migrate", svc, "--to", "base").code == 0
    conn = db(cli, svc)  # hold the service's migration lock, so the five runs must wait for it
    from deployctl.migrate_env import advisory_lock_key

    assert conn.run("SELECT pg_try_advisory_lock(:k)", k=advisory_lock_key(svc)) == [[True]]
    logs = [tmp_path / f"run{i}.err" for i in range(5)]
    procs = [subprocess.Popen([sys.executable, "-m", "deployctl", "migrate", svc], env=cli.env, cwd=str(ROOT),
                              stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL)
             for log in logs]
    try:
        deadline = time.monotonic() + 90
        while not all("waiting up to" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.2)
        conn.close()
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [log.read_text() for log in logs]
    assert codes == [0] * 5, outputs
    assert all("held by pid" in out for out in outputs), outputs  # each waiting run said who held the lock
    for rev in ("3b1f0e2a9c01", "7c42d9e1b302", FIAT_HEAD):
        assert sum(out.count(f"-> {rev},") for out in outputs) == 1, outputs
    assert status_of(cli, svc)["current"] == [FIAT_HEAD]


def test_wrong_password_and_missing_ssl_in_the_jobs_secret(local_cloud):
    cli, svc, secret = local_cloud, "cross-chain-integration", "cross-chain-database-url"
    original = cli("secrets", "get", secret, "--reveal")
    assert original.code == 0, original.output
    good = original.stdout.strip()
    u = make_url(good)
    try:
        wrong = u.set(password="not-the-password").render_as_string(hide_password=False)
        assert cli("secrets", "set", secret, input=wrong).code == 0
        run = cli("migrate", svc)
        assert run.code == 1, run.output
        assert "28P01" in run.output and "cross_chain_user" in run.output
        assert f"deployctl doctor {svc}" in run.output
        assert "not-the-password" not in run.output

        no_ssl = u.update_query_dict({"sslmode": "disable"}).render_as_string(hide_password=False)
        assert cli("secrets", "set", secret, input=no_ssl).code == 0
        run = cli("migrate", svc)
        assert run.code == 1, run.output
        assert "no encryption" in run.output and "SSL required" in run.output
        assert "sslmode=require" in run.output  # the next step
        assert "Traceback" not in run.output
    finally:
        assert cli("secrets", "set", secret, input=good).code == 0
    assert cli("migrate", svc).code == 0


def test_lint_flags_the_unsafe_fixture_and_passes_the_project(local_cloud, tmp_path):
    unsafe = Cli(local_cloud.state_dir, config_copy(tmp_path, "unsafe"))
    run = unsafe("migrate", "lint", "fiat-gateway")
    assert run.code == 1, run.output
    bad = str(FIXTURES / "unsafe" / "versions" / "aa02_unsafe.py")
    assert f"{bad}:15: error: enum-not-idempotent" in run.output
    assert f"{bad}:15: error: require-concurrent-index-creation" in run.output
    assert f"{bad}:21: error: enum-left-by-downgrade" in run.output
    ours = local_cloud("migrate", "lint")
    assert ours.code == 0, ours.output
    assert "0 error(s)" in ours.output
