"""Both Alembic trees against real PostgreSQL 15 (scram, SSL only): up, again, down to base, up; idempotent enums;
the advisory lock serializing concurrent runs; offline SQL without credentials; long statements not cut off."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pg8000.native
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from deployctl.migrate_env import MigrationLockTimeout, advisory_lock_key
from deployctl.runtime import compose_url

ROOT = Path(__file__).resolve().parents[2]
TREES = {"fiat-gateway": ROOT / "migrations" / "fiat_gateway",
         "cross-chain-integration": ROOT / "migrations" / "cross_chain_integration"}
DB_ENV = ("DATABASE_URL", "DB_HOST", "DB_NAME", "DB_USER", "DB_PASSWORD", "INSTANCE_CONNECTION_NAME")


def database_url(cluster, db, **query) -> str:
    name, user, password = db
    return compose_url(driver="pg8000", user=user, password=password, database=name, host=cluster.host,
                       port=cluster.port, query={"sslmode": "require", **query})


def alembic_config(service: str, **kw) -> Config:
    return Config(str(TREES[service] / "alembic.ini"), **kw)


def head_of(service: str) -> str:
    return ScriptDirectory.from_config(alembic_config(service)).get_current_head()


def current_version(cluster, dbname) -> list:
    if not cluster.execute("SELECT to_regclass('alembic_version') IS NOT NULL", database=dbname)[0][0]:
        return []
    return [r[0] for r in cluster.execute("SELECT version_num FROM alembic_version", database=dbname)]


def tables(cluster, dbname) -> set[str]:
    rows = cluster.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=dbname)
    return {r[0] for r in rows}


def enum_labels(cluster, dbname, name) -> list[str]:
    rows = cluster.execute("SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                           "WHERE t.typname = :n ORDER BY e.enumsortorder", database=dbname, n=name)
    return [r[0] for r in rows]


@pytest.fixture()
def db_url(pg_cluster, fresh_db, monkeypatch):
    for name in DB_ENV:
        monkeypatch.delenv(name, raising=False)
    url = database_url(pg_cluster, fresh_db)
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.mark.parametrize("service", sorted(TREES))
def test_up_again_down_to_base_and_up(service, pg_cluster, fresh_db, db_url):
    dbname = fresh_db[0]
    cfg = alembic_config(service)
    head = head_of(service)
    expected = {"fiat-gateway": {"deposits", "withdrawals"},
                "cross-chain-integration": {"transfers"}}[service] | {"alembic_version"}

    command.upgrade(cfg, "head")
    assert current_version(pg_cluster, dbname) == [head]
    assert tables(pg_cluster, dbname) == expected

    command.upgrade(cfg, "head")  # a second run at head is a no-op
    assert current_version(pg_cluster, dbname) == [head]

    command.downgrade(cfg, "base")
    assert current_version(pg_cluster, dbname) == []
    assert tables(pg_cluster, dbname) == {"alembic_version"}
    assert enum_labels(pg_cluster, dbname, "chain") == []  # the downgrade dropped the types too
    assert enum_labels(pg_cluster, dbname, "transfer_status") == []

    command.upgrade(cfg, "head")
    assert current_version(pg_cluster, dbname) == [head]
    assert tables(pg_cluster, dbname) == expected
    if service == "cross-chain-integration":
        assert enum_labels(pg_cluster, dbname, "chain") == ["ethereum", "polygon", "arbitrum", "optimism", "base"]
        assert enum_labels(pg_cluster, dbname, "transfer_status") == ["pending", "submitted", "confirmed",
                                                                      "failed"]
    else:
        columns = {r[0] for r in pg_cluster.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'deposits'", database=dbname)}
        assert "external_ref" in columns
        indexes = {r[0] for r in pg_cluster.execute("SELECT indexname FROM pg_indexes", database=dbname)}
        assert {"withdrawals_account_created_idx", "deposits_external_ref_key"} <= indexes


def test_enum_left_behind_by_a_partial_run_does_not_fail_the_next(pg_cluster, fresh_db, db_url):
    dbname, user, _ = fresh_db
    # What a run that died after CREATE TYPE (before its transaction was used per migration) leaves behind.
    pg_cluster.execute("CREATE TYPE chain AS ENUM ('ethereum', 'polygon', 'arbitrum', 'optimism')", database=dbname)
    pg_cluster.execute(f'ALTER TYPE chain OWNER TO "{user}"', database=dbname)
    command.upgrade(alembic_config("cross-chain-integration"), "head")
    assert enum_labels(pg_cluster, dbname, "chain")[-1] == "base"


def test_enum_value_downgrade_keeps_data_and_refuses_to_drop_a_used_value(pg_cluster, fresh_db, db_url):
    dbname = fresh_db[0]
    cfg = alembic_config("cross-chain-integration")
    command.upgrade(cfg, "head")
    insert = ("INSERT INTO transfers (source_chain, destination_chain, asset, amount, sender, recipient) "
              "VALUES (:s, :d, 'USDC', 1, 'a', 'b')")
    pg_cluster.execute(insert, database=dbname, s="ethereum", d="polygon")
    pg_cluster.execute(insert, database=dbname, s="base", d="ethereum")
    previous = "8e6b1f4d2a02"
    with pytest.raises(Exception) as failed:
        command.downgrade(cfg, previous)
    assert "22P02" in str(failed.value)  # invalid input value for enum chain: "base"
    assert current_version(pg_cluster, dbname) == [head_of("cross-chain-integration")]  # rolled back whole

    pg_cluster.execute("DELETE FROM transfers WHERE source_chain = 'base'", database=dbname)
    command.downgrade(cfg, previous)
    assert enum_labels(pg_cluster, dbname, "chain") == ["ethereum", "polygon", "arbitrum", "optimism"]
    assert pg_cluster.execute("SELECT source_chain::text, destination_chain::text FROM transfers",
                              database=dbname) == [["ethereum", "polygon"]]
    assert not pg_cluster.execute("SELECT 1 FROM pg_type WHERE typname = 'chain_with_base'", database=dbname)


def hold_lock(cluster, db, service: str) -> pg8000.native.Connection:
    """Another session of the same role holding the service's migration lock (as a running job would)."""
    name, user, password = db
    conn = pg8000.native.Connection(user, password=password, host=cluster.host, port=cluster.port,
                                    database=name, ssl_context=True, application_name="held-by-test",
                                    timeout=10)
    assert conn.run("SELECT pg_try_advisory_lock(:k)", k=advisory_lock_key(service)) == [[True]]
    return conn


def test_lock_wait_is_bounded_and_names_the_holder(pg_cluster, fresh_db, db_url, monkeypatch, capsys):
    holder = hold_lock(pg_cluster, fresh_db, "fiat-gateway")
    try:
        monkeypatch.setenv("DEPLOYCTL_LOCK_WAIT", "0.5")
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout) as timed_out:
            command.upgrade(alembic_config("fiat-gateway"), "head")
        assert time.monotonic() - started < 5
        holder_pid = holder.run("SELECT pg_backend_pid()")[0][0]
        assert f"pid {holder_pid}" in str(timed_out.value)
        assert "'held-by-test'" in str(timed_out.value)
        assert timed_out.value.hint
        waiting = [line for line in capsys.readouterr().err.splitlines() if "waiting up to" in line]
        assert len(waiting) == 1 and f"pid {holder_pid}" in waiting[0] and "connected since" in waiting[0]
        assert current_version(pg_cluster, fresh_db[0]) == []
    finally:
        holder.close()


def test_concurrent_upgrades_serialize_on_the_lock(pg_cluster, fresh_db, db_url, tmp_path):
    """Two alembic CLI processes wait for a held lock, report the holder, then run one after the other: only
    one of them applies the revisions, and both succeed."""
    holder = hold_lock(pg_cluster, fresh_db, "cross-chain-integration")
    env = {**os.environ, "DEPLOYCTL_LOCK_WAIT": "60"}
    ini = str(TREES["cross-chain-integration"] / "alembic.ini")
    logs = [tmp_path / f"run{i}.err" for i in (1, 2)]
    procs = [subprocess.Popen([sys.executable, "-m", "alembic", "-c", ini, "upgrade", "head"], env=env,
                              stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL)
             for log in logs]
    try:
        deadline = time.monotonic() + 20
        while not all("waiting up to" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.05)
        holder_pid = holder.run("SELECT pg_backend_pid()")[0][0]
        holder.close()
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [log.read_text() for log in logs]
    for out in outputs:
        assert f"pid {holder_pid}, application_name 'held-by-test'" in out
        assert "got the migration lock" in out
        assert out.count("waiting up to") == 1  # reported once, not once per poll
    applied = [out.count("Running upgrade") for out in outputs]
    assert sorted(applied) == [0, 4]  # one applied all four revisions, the other found nothing to do
    assert current_version(pg_cluster, fresh_db[0]) == [head_of("cross-chain-integration")]


@pytest.mark.parametrize("service", sorted(TREES))
def test_offline_sql_needs_no_credentials(service, monkeypatch):
    for name in DB_ENV:
        monkeypatch.delenv(name, raising=False)
    up, down = io.StringIO(), io.StringIO()
    command.upgrade(alembic_config(service, output_buffer=up), "base:head", sql=True)
    command.downgrade(alembic_config(service, output_buffer=down), "head:base", sql=True)
    sql = up.getvalue()
    assert "SET lock_timeout" in sql and "SET statement_timeout" in sql
    assert sql.count("BEGIN;") >= 3  # one transaction per migration
    if service == "cross-chain-integration":
        assert "EXCEPTION WHEN duplicate_object" in sql
        assert "ALTER TYPE chain ADD VALUE IF NOT EXISTS 'base'" in sql
        assert "DROP TYPE IF EXISTS chain" in down.getvalue()
    else:
        assert "CREATE TABLE withdrawals" in sql and "ADD COLUMN IF NOT EXISTS external_ref" in sql
        assert "DROP TABLE deposits" in down.getvalue()


def test_long_statement_outlives_the_connect_timeout(pg_cluster, fresh_db, monkeypatch, tmp_path):
    """pg8000's connect timeout bounds every read; the env lifts it, so a 1.5 s statement survives a 1 s
    connect timeout (DESIGN §6)."""
    tree = tmp_path / "tree"
    (tree / "versions").mkdir(parents=True)
    (tree / "env.py").write_text("from deployctl.migrate_env import run_migrations\n\nrun_migrations('slow')\n")
    (tree / "versions" / "0001_slow.py").write_text(textwrap.dedent("""
        from alembic import op
        revision, down_revision, branch_labels, depends_on = "0001", None, None, None

        def upgrade():
            op.execute("SELECT pg_sleep(1.5)")

        def downgrade():
            pass
    """))
    cfg = Config()
    cfg.set_main_option("script_location", str(tree))
    for name in DB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url(pg_cluster, fresh_db, connect_timeout="1"))
    command.upgrade(cfg, "head")
    assert current_version(pg_cluster, fresh_db[0]) == ["0001"]


def test_a_service_on_asyncpg_migrates_through_pg8000(pg_cluster, fresh_db, monkeypatch):
    """Alembic is synchronous: the asyncpg DSN a service uses (ssl=require, as `deployctl dsn --driver asyncpg`
    prints it) migrates over the same connection through pg8000."""
    name, user, password = fresh_db
    for var in DB_ENV:
        monkeypatch.delenv(var, raising=False)
    url = compose_url(driver="asyncpg", user=user, password=password, database=name, host=pg_cluster.host,
                      port=pg_cluster.port, query={"ssl": "require"})
    monkeypatch.setenv("DATABASE_URL", url)
    command.upgrade(alembic_config("fiat-gateway"), "head")
    assert current_version(pg_cluster, name) == [head_of("fiat-gateway")]
