"""`deployctl migrate` on the local cloud's real PostgreSQL: job and local runners, up/again/down/up, a
migration failing halfway (transactional and not), five concurrent runs, the story's 28P01, a DSN without SSL or
with a raw '@', one login for status and runs, downgrades that ask first, two heads, --sql, and lint.

Every test leaves the shared local cloud as it found it: databases at head, secrets restored."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pg8000.native
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.conftest import ROOT, Cli
from tests.e2e.leaks import assert_no_leak

FIXTURES = ROOT / "tests" / "fixtures" / "migrations"
CROSS_HEAD = "b47c9d2e5f03"
FIAT_HEAD = "c95e7a4f1d03"
FIAT_COLUMN = "9d27c3b8e104"  # deposits.external_ref, the revision before the head's concurrent index


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


def db_password(cli: Cli, service: str) -> str:
    run = cli("dsn", service, "--reveal")
    assert run.code == 0, run.output
    return make_url(run.stdout.strip()).password


def enum_labels(conn, name: str) -> list[str]:
    return [r[0] for r in conn.run("SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                                   "WHERE t.typname = :n ORDER BY e.enumsortorder", n=name)]


def test_job_and_local_runners_up_again_down_up(local_cloud):
    cli, svc = local_cloud, "cross-chain-integration"
    down = cli("--yes", "migrate", svc, "--to", "base")
    assert down.code == 0, down.output
    assert status_of(cli, svc)["current"] == []

    up = cli("migrate", svc)  # job runner, the default
    assert up.code == 0, up.output
    assert f"base → {CROSS_HEAD} (head) (4 step(s))" in up.output
    assert f"execution  {svc}-migrate-" in up.output
    again = cli("migrate", svc)
    assert again.code == 0 and f"nothing to do: already at {CROSS_HEAD} (head)" in again.output, again.output

    down = cli("--yes", "migrate", svc, "--to", "base", "--runner", "local")
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
    assert_no_leak([db_password(cli, svc)], down.output, up.output, again.output)


@pytest.mark.parametrize("runner", ["job", "local"])
def test_migration_failing_halfway_leaves_the_previous_revision(local_cloud, tmp_path, runner):
    cli = local_cloud
    assert cli("migrate", "fiat-gateway").code == 0
    failing = Cli(cli.state_dir, config_copy(tmp_path, "failing"))
    run = failing("migrate", "fiat-gateway", "--runner", runner)
    assert run.code == 1, run.output
    assert "42701" in run.output and "f00dfa11ed04" in run.output
    assert 'column "currency" of relation "deposits" already exists' in run.output
    assert "left objects behind" in run.output and "if_not_exists=True" in run.output  # not "see the code table"
    conn = db(cli, "fiat-gateway")
    try:
        assert conn.run("SELECT version_num FROM alembic_version") == [[FIAT_HEAD]]
        assert conn.run("SELECT to_regclass('ledger') IS NULL") == [[True]]  # the half was rolled back
    finally:
        conn.close()
    st = status_of(failing, "fiat-gateway")
    assert st["current"] == [FIAT_HEAD] and st["pending"] == ["f00dfa11ed04"]
    assert_no_leak([db_password(cli, "fiat-gateway")], run.output)


def test_five_concurrent_runs_apply_each_revision_once(local_cloud, tmp_path):
    cli, svc = local_cloud, "fiat-gateway"
    assert cli("--yes", "migrate", svc, "--to", "base").code == 0
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
    for rev in ("3b1f0e2a9c01", "7c42d9e1b302", FIAT_COLUMN, FIAT_HEAD):
        assert sum(out.count(f"-> {rev},") for out in outputs) == 1, outputs
    assert status_of(cli, svc)["current"] == [FIAT_HEAD]
    assert_no_leak([db_password(cli, svc)], *outputs)


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
        assert f"cross_chain_user rejected {secret} v" in run.output  # the login is named, version and all
        assert f"deployctl doctor {svc}" in run.output
        assert "not-the-password" not in run.output
        status = cli("migrate", "status", svc)
        assert status.code == 3 and f"cross_chain_user rejected {secret} v" in status.output, status.output
        assert f"deployctl doctor {svc}" in status.output and "SERVICE" not in status.output  # its hint, filled in
        assert_no_leak([u.password], run.output)

        no_ssl = u.update_query_dict({"sslmode": "disable"}).render_as_string(hide_password=False)
        assert cli("secrets", "set", secret, input=no_ssl).code == 0
        run = cli("migrate", svc)
        assert run.code == 1, run.output
        assert "no encryption" in run.output and "SSL required" in run.output
        assert "sslmode=require" in run.output  # the next step
        assert "running job" not in run.output  # refused before a job was started with it
        assert "Traceback" not in run.output
        assert_no_leak([u.password], run.output)
    finally:
        assert cli("secrets", "set", secret, input=good).code == 0
    assert cli("migrate", svc).code == 0


def test_unencoded_at_in_the_url_fails_before_the_job_and_leaks_nothing(local_cloud):
    """The review's leak: a raw '@' in the stored URL's password put 14 of its 17 characters into a driver
    error, five times. Now the URL is linted before any job starts, and no part of the password is shown."""
    cli, svc, secret = local_cloud, "cross-chain-integration", "cross-chain-database-url"
    good = cli("secrets", "get", secret, "--reveal").stdout.strip()
    u = make_url(good)
    password = "At@in-the-Pw#7731"
    raw = f"postgresql+pg8000://{u.username}:{password}@{u.host}:{u.port}/{u.database}?sslmode=require"
    try:
        assert cli("secrets", "set", secret, input=raw).code == 0
        outputs = []
        for argv in (["migrate", svc], ["--json", "migrate", svc], ["migrate", svc, "--runner", "local"],
                     ["-v", "migrate", svc]):
            run = cli(*argv)
            outputs.append(run.output)
            assert run.code == 1, run.output
            assert "unencoded-reserved" in run.output and f"deployctl dsn {svc} --write-secret" in run.output
            assert "running job" not in run.output and "running alembic" not in run.output
        status = cli("migrate", "status", svc)
        outputs.append(status.output)
        assert status.code == 3 and "unencoded-reserved" in status.output, status.output
        assert_no_leak([password], *outputs)
    finally:
        assert cli("secrets", "set", secret, input=good).code == 0


def test_a_url_secret_ending_with_a_newline_works_and_is_said(local_cloud):
    """A trailing newline in the stored URL is ignored, as deployctl.runtime ignores it, but never silently
    (DESIGN §6): both runners say so, with the repair, and show no part of the string."""
    cli, svc, secret = local_cloud, "cross-chain-integration", "cross-chain-database-url"
    good = cli("secrets", "get", secret, "--reveal").stdout.strip()
    try:
        assert cli("secrets", "set", secret, input=good + "\n").code == 0
        for runner in ("job", "local"):
            run = cli("migrate", svc, "--runner", runner)
            assert run.code == 0, run.output
            assert re.search(rf"{secret} v\d+ ends with a newline; it was ignored", run.output), run.output
            assert f"deployctl doctor {svc} --fix" in run.output
            assert_no_leak([make_url(good).password], run.output)
    finally:
        assert cli("secrets", "set", secret, input=good).code == 0
    assert "ends with a newline" not in cli("migrate", svc).output


def test_one_login_for_status_and_both_runners(local_cloud):
    """The oddity: a password secret that the database rejects, beside a url secret it accepts. status, the
    local runner and the job all use the url secret, and say so; `upgrade head` with nothing to do names the
    head (it used to say "already at unknown")."""
    cli, svc, secret = local_cloud, "cross-chain-integration", "cross-chain-db-password"
    assert cli("migrate", svc).code == 0
    good = cli("secrets", "get", secret, "--reveal").stdout.strip()
    try:
        assert cli("secrets", "set", secret, input="x y not it\n").code == 0
        st = cli("--json", "migrate", "status", svc)
        assert st.code == 0 and json.loads(st.stdout)["data"]["services"][0]["current"] == [CROSS_HEAD], st.output
        for runner in ("job", "local"):
            run = cli("migrate", svc, "--runner", runner)
            assert run.code == 0, run.output
            assert f"nothing to do: already at {CROSS_HEAD} (head)" in run.output, run.output
            assert re.search(r"login +cross-chain-database-url v\d", run.output), run.output
    finally:
        assert cli("secrets", "set", secret, input=good).code == 0


def test_lint_flags_the_unsafe_fixture_and_passes_the_project(local_cloud, tmp_path):
    unsafe = Cli(local_cloud.state_dir, config_copy(tmp_path, "unsafe"))
    run = unsafe("migrate", "lint", "fiat-gateway")
    assert run.code == 1, run.output
    bad = str(FIXTURES / "unsafe" / "versions" / "aa02_unsafe.py")
    # each finding points at the statement that causes it (they used to point at `def upgrade`)
    assert f"{bad}:17: error: enum-not-idempotent" in run.output
    assert f"{bad}:18: error: require-concurrent-index-creation" in run.output
    assert f"{bad}:23: error: enum-left-by-downgrade" in run.output
    mixed = str(FIXTURES / "unsafe" / "versions" / "aa03_mixed.py")
    assert f"{mixed}:17: error: autocommit-mixed" in run.output and f"{mixed}:22: error: autocommit-mixed" in run.output
    assert f"{mixed}:18: error: prefer-robust-stmts" in run.output  # an autocommit statement must be re-runnable
    ours = local_cloud("migrate", "lint")
    assert ours.code == 0, ours.output
    assert "0 error(s)" in ours.output
    assert "alembic_version" not in ours.output  # Alembic's own table is not the revision's DDL


def test_lint_flags_an_env_without_the_advisory_lock(local_cloud, tmp_path):
    tree = tmp_path / "nolock"
    (tree / "versions").mkdir(parents=True)
    (tree / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\n")
    (tree / "env.py").write_text("from alembic import context\n\n"
                                 "context.configure(url='postgresql+pg8000://', literal_binds=True)\n"
                                 "with context.begin_transaction():\n    context.run_migrations()\n")
    (tree / "versions" / "aa01_accounts.py").write_text(
        (FIXTURES / "unsafe" / "versions" / "aa01_accounts.py").read_text())
    text = (ROOT / "configs" / "local.toml").read_text()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "local.toml").write_text(
        text.replace('migrations = "migrations/fiat_gateway"', f'migrations = "{tree}"'))
    run = Cli(local_cloud.state_dir, tmp_path / "configs")("migrate", "lint", "fiat-gateway")
    assert run.code == 1, run.output
    assert f"{tree / 'env.py'}:1: error: env-advisory-lock" in run.output


def test_two_heads_status_lint_and_migrate_refuse(local_cloud, tmp_path):
    cli = local_cloud
    assert cli("migrate", "fiat-gateway").code == 0
    branched = Cli(cli.state_dir, config_copy(tmp_path, "branched"))
    run = branched("--json", "migrate", "status", "fiat-gateway")
    assert run.code == 1, run.output
    st = json.loads(run.stdout)["data"]["services"][0]
    assert st["multiple_heads"] and sorted(st["heads"]) == [FIAT_HEAD, "dd01"]
    assert st["current"] == [FIAT_HEAD] and st["pending"] == ["dd01"]  # the branch is pending, not "none"
    assert "merge" in st["hint"]
    lint = branched("migrate", "lint", "fiat-gateway")
    assert lint.code == 1 and "multiple-heads" in lint.output, lint.output
    refused = branched("migrate", "fiat-gateway")  # both runners share the refusal (unit-tested)
    assert refused.code == 1, refused.output
    assert "2 heads" in refused.output and "merge heads" in refused.output
    assert "running job" not in refused.output
    assert status_of(cli, "fiat-gateway")["current"] == [FIAT_HEAD]


def test_sql_prints_the_migrations_and_touches_nothing(local_cloud):
    assert local_cloud("migrate", "fiat-gateway").code == 0
    up = local_cloud("migrate", "fiat-gateway", "--sql")
    assert up.code == 0, up.output
    assert "CREATE TABLE deposits" in up.stdout and "ADD COLUMN IF NOT EXISTS external_ref" in up.stdout
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS deposits_external_ref_key" in up.stdout
    assert "SET lock_timeout" in up.stdout
    down = local_cloud("migrate", "fiat-gateway", "--sql", "--to", "base")
    assert down.code == 0 and "DROP TABLE deposits" in down.stdout, down.output
    assert status_of(local_cloud, "fiat-gateway")["current"] == [FIAT_HEAD]


def test_sql_steps_down_from_the_head_and_refuses_what_alembic_cannot_resolve(local_cloud):
    one = local_cloud("migrate", "fiat-gateway", "--sql", "--to", "-1")
    assert one.code == 0, one.output
    assert f"UPDATE alembic_version SET version_num='{FIAT_COLUMN}' WHERE alembic_version.version_num = " \
           f"'{FIAT_HEAD}'" in one.stdout and "DROP INDEX" in one.stdout and "DROP COLUMN" not in one.stdout
    for to in ("-9", "nonexist", "-x"):
        bad = local_cloud("migrate", "fiat-gateway", "--sql", "--to", to)
        assert bad.code == 2, bad.output
        assert bad.stderr.count("error:") == 1 and "Traceback" not in bad.output and "a bug" not in bad.output
        assert f"--to {to}" in bad.stderr and "next:" in bad.stderr


def test_a_downgrade_lists_what_it_undoes_and_needs_confirmation(local_cloud):
    cli, svc = local_cloud, "fiat-gateway"
    assert cli("migrate", svc).code == 0
    said = {}
    for to in ("-1", FIAT_COLUMN, "base"):
        asked = cli("migrate", svc, "--to", to)  # CI=true: nobody can answer
        assert asked.code == 2, asked.output
        assert f"{svc}: downgrade to {to} undoes" in asked.output and "--yes" in asked.output
        said[to] = asked.output
    assert status_of(cli, svc)["current"] == [FIAT_HEAD]  # nothing ran
    assert f"undoes 1 revision(s): {FIAT_HEAD}" in said["-1"] and f"undoes 1 revision(s): {FIAT_HEAD}" in said[FIAT_COLUMN]
    assert f"undoes 4 revision(s): {FIAT_HEAD}, {FIAT_COLUMN}, 7c42d9e1b302, 3b1f0e2a9c01" in said["base"]
    down = cli("--yes", "migrate", svc, "--to", "-1")
    assert down.code == 0, down.output
    assert status_of(cli, svc)["current"] == [FIAT_COLUMN]
    assert cli("migrate", svc).code == 0


def test_a_concurrent_index_failing_halfway_is_finished_by_the_next_run(local_cloud):
    """A non-transactional revision (CREATE INDEX CONCURRENTLY) blocked by an open transaction: lock_timeout
    ends it with 55P03, the holder is named, the database stays at the revision before (its column committed
    on its own) with the index INVALID; the next run drops the invalid index and builds it valid."""
    cli, svc = local_cloud, "fiat-gateway"
    assert cli("--yes", "migrate", svc, "--to", FIAT_COLUMN).code == 0
    holder = db(cli, svc)
    try:
        holder.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.run("SELECT count(*) FROM withdrawals")  # a snapshot older than the index build
        holder_pid = holder.run("SELECT pg_backend_pid()")[0][0]
        run = cli("migrate", svc, "--runner", "local", env={"DEPLOYCTL_LOCK_TIMEOUT": "1"})
        assert run.code == 1, run.output
        assert "55P03" in run.output and FIAT_HEAD in run.output
        assert f"pid {holder_pid}" in run.output  # the open transaction that blocked it
        assert "not another migration run" in run.output
        holder.run("ROLLBACK")
        assert holder.run("SELECT version_num FROM alembic_version") == [[FIAT_COLUMN]]
        assert holder.run("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass("
                          "'deposits_external_ref_key')") == [[False]]
        again = cli("migrate", svc, "--runner", "local")
        assert again.code == 0, again.output
        assert "dropping the INVALID index deposits_external_ref_key" in again.output
        assert holder.run("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass("
                          "'deposits_external_ref_key')") == [[True]]
        assert holder.run("SELECT version_num FROM alembic_version") == [[FIAT_HEAD]]
    finally:
        holder.close()


@pytest.mark.parametrize("svc, before, table, column", [
    ("fiat-gateway", "7c42d9e1b302", "deposits", "external_ref varchar(128)"),
    ("cross-chain-integration", "5d0a8b3c7e01", "transfers", "signature varchar(64)")])
def test_a_column_left_by_the_old_trees_partial_failure_does_not_stop_the_upgrade(local_cloud, svc, before,
                                                                                   table, column):
    """The old tree's index revision committed the column in its autocommit block and then failed: the column
    exists while alembic_version is at the revision before it. The column revision must apply over it."""
    cli = local_cloud
    assert cli("--yes", "migrate", svc, "--to", before, "--runner", "local").code == 0
    conn = db(cli, svc)
    try:
        conn.run(f"ALTER TABLE {table} ADD COLUMN {column}")
        up = cli("migrate", svc, "--runner", "local")
        assert up.code == 0, up.output
        assert conn.run("SELECT version_num FROM alembic_version") == [[FIAT_HEAD if svc == "fiat-gateway"
                                                                        else CROSS_HEAD]]
    finally:
        conn.close()


def test_all_runs_every_service_each_with_its_own_progress(local_cloud):
    cli = local_cloud
    assert cli("migrate", "cross-chain-integration").code == 0
    assert cli("--yes", "migrate", "fiat-gateway", "--to", FIAT_COLUMN).code == 0
    run = cli("migrate", "--all")  # the jobs of both services run at the same time
    assert run.code == 0, run.output
    assert f"{FIAT_COLUMN} → {FIAT_HEAD} (head) (1 step(s))" in run.output
    assert f"nothing to do: already at {CROSS_HEAD} (head)" in run.output
    assert "fiat-gateway: running job fiat-gateway-migrate" in run.stderr
    assert "cross-chain-integration: running job cross-chain-integration-migrate" in run.stderr
    assert status_of(cli, "fiat-gateway")["current"] == [FIAT_HEAD]
