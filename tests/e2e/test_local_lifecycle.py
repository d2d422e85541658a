"""`deployctl local up|ps|down` as a user runs them: idempotent, and no orphan process ever, also after the
emulator was killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.e2e.conftest import Cli


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def postmasters(state_dir: Path) -> set[int]:
    """PostgreSQL daemonises (pg_ctl), so its postmaster is nobody's child: find it by its data directory."""
    from deployctl.emulator.postgres import cluster_base

    pids = set()
    for pidfile in cluster_base(str(state_dir.resolve())).glob("*/postmaster.pid"):
        pids.add(int(pidfile.read_text().split("\n", 1)[0]))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_ps_kill9_down_leaves_no_orphans(tmp_path):
    cli = Cli(tmp_path / "state")
    try:
        _up_ps_kill9_down(cli)
    finally:  # a failed assertion must not leave a local cloud running after the test
        cli("--yes", "local", "down", "--purge")


def _up_ps_kill9_down(cli: Cli) -> None:
    up = cli("--json", "local", "up")
    assert up.code == 0, up.output
    first = json.loads(up.stdout)["data"]
    again = json.loads(cli("--json", "local", "up").stdout)["data"]
    assert again["pid"] == first["pid"], "a second `local up` must reuse the running local cloud"

    deploy = cli("deploy", "api-key-service", "--no-status")
    assert deploy.code == 0, deploy.output
    ps = json.loads(cli("--json", "local", "ps").stdout)["data"]
    assert ps["running"] and [s["name"] for s in ps["services"]] == ["api-key-service"]
    assert ps["instances"][0]["state"] == "RUNNABLE"

    # One emulator per state dir: a second one refuses, naming the first, and changes nothing.
    second = cli("emulator", "serve")
    assert second.code == 2 and f"in use by another local cloud emulator (pid {first['pid']})" in second.stderr
    assert json.loads(cli("--json", "local", "ps").stdout)["data"]["pid"] == first["pid"]

    started = descendants(first["pid"]) | postmasters(cli.state_dir)
    assert len(started) >= 2, "expected PostgreSQL and the service's process"
    os.kill(first["pid"], signal.SIGKILL)
    time.sleep(0.5)
    assert any(alive(p) for p in started), "the children outlive a SIGKILLed emulator (orphans)"

    # `local ps` says what the killed emulator left running, and how to end it.
    left = cli("--json", "local", "ps")
    doc = json.loads(left.stdout)["data"]
    assert doc["running"] is False
    assert {i["kind"] for i in doc["leftovers"]} >= {"revision", "postgres"}
    assert {i["pid"] for i in doc["leftovers"]} <= started | {i["pid"] for i in doc["leftovers"]}
    human = cli("local", "ps")
    assert "left" in human.output and "deployctl local down" in human.output, human.output

    down = cli("local", "down")
    assert down.code == 0, down.output
    assert "ended what a crashed emulator had left running" in down.output
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if alive(p)], "`local down` must end what the killed emulator started"

    # The state survived: up again finds the service, then purge removes everything.
    up2 = cli("--json", "local", "up")
    assert up2.code == 0, up2.output
    ps2 = json.loads(cli("--json", "local", "ps").stdout)["data"]
    assert [s["name"] for s in ps2["services"]] == ["api-key-service"]
    pid2 = json.loads(up2.stdout)["data"]["pid"]
    children2 = descendants(pid2) | postmasters(cli.state_dir)
    assert children2
    purge = cli("--yes", "local", "down", "--purge")
    assert purge.code == 0, purge.output
    assert not alive(pid2) and not [p for p in children2 if alive(p)]
    assert not (cli.state_dir / "state").exists()
    gone = cli("--json", "local", "ps")
    assert json.loads(gone.stdout)["data"]["running"] is False


def test_a_stale_endpoint_file_never_signals_an_unrelated_process(tmp_path):
    """emulator.json naming a live pid that is not an emulator (a crash, then pid reuse): nothing is signalled."""
    import subprocess

    cli = Cli(tmp_path / "state")
    cli.state_dir.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (cli.state_dir / "emulator.json").write_text(json.dumps(
            {"pid": bystander.pid, "grpc": "127.0.0.1:1", "rest": "http://127.0.0.1:1", "started": 1.0}))
        ps = cli("--json", "local", "ps")
        assert json.loads(ps.stdout)["data"]["running"] is False
        down = cli("local", "down")
        assert down.code == 0 and "was not running" in down.output, down.output
        time.sleep(0.3)
        assert bystander.poll() is None, "an unrelated process was signalled"
        assert not (cli.state_dir / "emulator.json").exists()  # the stale file is gone
    finally:
        bystander.kill()
        bystander.wait()


def test_lost_cluster_and_changed_config_are_provisioned_again(tmp_path):
    cli = Cli(tmp_path / "state")
    try:
        _lost_cluster_then_new_service(cli, tmp_path)
    finally:
        cli("--yes", "local", "down", "--purge")


def _databases_and_login(cli: Cli, database: str, password_secret: str, user: str) -> list[str]:
    """The instance's databases, after checking that `user` logs in to `database` with the password in
    `password_secret` (what a service would do)."""
    import ssl

    import pg8000.native

    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore
    from deployctl.cloud.sqladmin import SqlAdmin
    from deployctl.localcloud.lifecycle import find

    ep = find(cli.state_dir)
    clients = Clients(emulator_host=ep.grpc, sqladmin_endpoint=ep.rest)
    try:
        admin = SqlAdmin(clients, "deployctl-local")
        inst = admin.get_instance("core-pg")
        password = SecretStore(clients, "deployctl-local").access(password_secret, "latest").text
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        conn = pg8000.native.Connection(user, host=inst.private_ip, password=password, database=database,
                                        ssl_context=ctx, timeout=10)
        conn.close()
        return admin.list_databases("core-pg")
    finally:
        clients.close()


def _lost_cluster_then_new_service(cli: Cli, tmp_path: Path) -> None:
    assert (up := cli("local", "up")).code == 0, up.output
    assert cli("local", "down").code == 0
    [record] = json.loads((cli.state_dir / "state" / "sql_instances.json").read_text()).values()
    import shutil

    shutil.rmtree(record["data_dir"])  # a reboot, a tmp cleaner

    again = cli("local", "up")
    assert again.code == 0, again.output
    assert "lost its data" in again.stderr and "provisioning its databases, users and secrets again" in again.stderr
    dbs = _databases_and_login(cli, "fiat_gateway", "fiat-gateway-db-password", "fiat_gateway_user")
    assert {"fiat_gateway", "cross_chain"} <= set(dbs)
    url = cli("--json", "dsn", "cross-chain-integration", "--reveal")
    assert url.code == 0, url.output  # the URL secret agrees with the new cluster
    tfstate = (cli.state_dir / "terraform.tfstate").read_text()
    assert "fiat_gateway_user" in tfstate
    quiet = cli("local", "up")
    assert quiet.code == 0 and "lost its data" not in quiet.stderr  # handled once

    # A service added to the config while the local cloud runs: `local up` provisions what it needs.
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    text = (cli.config_dir / "local.toml").read_text() + """
[services.new-db-service]
image = "local/new:dev"
command = ["python", "-m", "services.api_key_service"]
health = ["/health"]

[services.new-db-service.database]
instance = "core"
name = "new_db"
user = "new_db_user"
password_secret = "new-db-password"
url_secret = "new-database-url"
"""
    (config_dir / "local.toml").write_text(text)
    changed = Cli(cli.state_dir, config_dir=config_dir)
    grown = changed("local", "up")
    assert grown.code == 0, grown.output
    assert "creating database new_db" in grown.stderr
    assert "new_db" in _databases_and_login(changed, "new_db", "new-db-password", "new_db_user")
    listed = changed("--json", "secrets", "list")
    rows = {r["id"]: r for r in json.loads(listed.stdout)["data"]["secrets"]}
    assert "new-db-password" in rows and "new-database-url" in rows
    assert "new_db_user" in (cli.state_dir / "terraform.tfstate").read_text()


def test_doctor_as_the_first_command_reads_the_state_the_start_wrote(tmp_path):
    """On a fresh machine the first command starts and provisions the local cloud; doctor's Terraform-state
    check waits for that (it read the file while provisioning still wrote it, and failed)."""
    cli = Cli(tmp_path / "state")
    try:
        run = cli("--json", "doctor")
        doc = json.loads(run.stdout)
        checks = {c["id"]: c for group in doc["data"]["services"] for c in group["checks"]}
        assert checks["tf.state"]["status"] == "pass", checks["tf.state"]
        assert checks["cloud.credentials"]["status"] == "pass"
        assert run.code == 3 and doc["data"]["counts"].get("fail", 0) == 0, run.output  # only pending migrations
    finally:
        cli("--yes", "local", "down", "--purge")
