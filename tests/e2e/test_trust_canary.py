"""Secrets, everywhere: the canary is a service's real database password (set with the admin API, stored in
Secret Manager, written into the stored DSN by `dsn --write-secret`), the service is deployed and migrated with
it, and then no command in any mode (human, --json, -vv), no failure path (wrong password: 28P01; a missing
secret), no log deployctl writes, nor the emulator's log or the logs of the processes it runs, shows the
canary in any encoding: nor does `local down`, a crash log, or the server logs of the emulator's PostgreSQL
clusters. Builds on the helpers of test_secrets_dsn_cli (its canary covers secrets and dsn)."""

from __future__ import annotations

import json

import pytest

from .conftest import Cli
from .test_secrets_dsn_cli import CANARY, assert_no_canary

PROJECT = "deployctl-local"
SERVICE, USER, SECRET = "fiat-gateway", "fiat_gateway_user", "fiat-gateway-db-password"


def admin(cli: Cli):
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.sqladmin import SqlAdmin

    endpoint = json.loads((cli.state_dir / "emulator.json").read_text())
    clients = Clients(emulator_host=endpoint["grpc"], sqladmin_endpoint=endpoint["rest"])
    return clients, SqlAdmin(clients, PROJECT)


def set_db_password(cli: Cli, password: str) -> None:
    clients, sql = admin(cli)
    try:
        sql.set_password("core-pg", USER, password)
    finally:
        clients.close()


def checked(cli: Cli, *argv: str, expect: int | tuple | None = 0, input: str | None = None):
    run = cli(*argv, input=input)
    assert "Traceback" not in run.output, (argv, run.output)
    if expect is not None:
        assert run.code in (expect if isinstance(expect, tuple) else (expect,)), (argv, run.output)
    assert_no_canary(run.output, " ".join(argv))
    return run


@pytest.fixture(scope="module")
def canary_cloud(tmp_path_factory):
    cli = Cli(tmp_path_factory.mktemp("canary"))
    checked(cli, "local", "up")
    set_db_password(cli, CANARY)
    checked(cli, "secrets", "set", SECRET, input=CANARY)
    checked(cli, "-vv", "dsn", SERVICE, "--write-secret")
    checked(cli, "-vv", "deploy", SERVICE)  # migrates (job) with the canary, then the service runs with it
    yield cli
    cli("--yes", "local", "down", "--purge")


COMMANDS = [
    ["status", SERVICE], ["migrate", SERVICE], ["migrate", SERVICE, "--runner", "local"], ["migrate", "status", SERVICE],
    ["dsn", SERVICE], ["secrets", "list"], ["secrets", "get", SECRET],
    ["secrets", "versions", SECRET], ["local", "ps"], ["deploy", SERVICE],
]


# -vv prints what the human mode prints (same renderer, same stdout) plus detail and log lines on stderr, so
# the human mode runs only where its path differs (an error message, a revealed-looking field).
@pytest.mark.parametrize("mode", [["--json"], ["-vv"]], ids=["json", "verbose"])
def test_canary_in_no_command_output(canary_cloud, mode):
    for argv in COMMANDS:
        checked(canary_cloud, *mode, *argv)
    # 3: the password was changed by hand, so Terraform state disagrees (a warning, fingerprints only)
    checked(canary_cloud, *mode, "doctor", SERVICE, expect=(0, 3))
    checked(canary_cloud, *mode, "verify", SERVICE, expect=None)  # its flows need api-key-service: may fail
    # one revision only: rollback refuses (2); render refuses (the other services are not deployed) or fills
    checked(canary_cloud, *mode, "rollback", SERVICE, expect=(0, 1, 2))
    checked(canary_cloud, *mode, "endpoints", "render", "configs/openapi/gateway.yaml", expect=(0, 1))


def test_canary_in_no_human_output_where_it_differs(canary_cloud):
    """verify's human report prints each step's request and answer (its JSON prints the same data as data)."""
    checked(canary_cloud, "verify", SERVICE, expect=None)
    checked(canary_cloud, "doctor", SERVICE, expect=(0, 3))


def test_canary_in_no_failure_path(canary_cloud):
    cli = canary_cloud
    set_db_password(cli, "not-the-canary-0")  # the database no longer accepts the stored password
    try:
        for mode, runner in (([], "local"), (["--json"], "local"), (["-vv"], "local"), (["-vv"], "job")):
            run = checked(cli, *mode, "migrate", SERVICE, "--runner", runner, expect=1)
            assert "28P01" in run.output, run.output
        checked(cli, "-vv", "doctor", SERVICE, expect=1)
        checked(cli, "--json", "status", SERVICE, expect=None)
    finally:
        set_db_password(cli, CANARY)
    for mode in ([], ["--json"], ["-vv"]):
        checked(cli, *mode, "secrets", "get", "no-such-secret", expect=1)
    checked(cli, "-vv", "dsn", "no-such-service", expect=(1, 2))


def test_a_crash_log_never_holds_the_canary(canary_cloud, tmp_path, monkeypatch):
    """An unexpected error whose message carries the password (as a bug could): the crash log deployctl writes,
    in the state dir or (when that is unusable) in its private temp dir, is redacted in every encoding."""
    import os
    from urllib.parse import quote

    from deployctl import redact
    from deployctl.cli.common import write_crash_log
    from deployctl.context import Context

    redact.register(CANARY)  # as deployctl does whenever it reads a secret
    not_a_dir = tmp_path / "state-is-a-file"
    not_a_dir.write_text("")
    for state_dir in (canary_cloud.state_dir, not_a_dir):
        monkeypatch.setenv("DEPLOYCTL_STATE_DIR", str(state_dir))
        try:
            raise RuntimeError(f"connect failed for postgresql://u:{quote(CANARY, safe='')}@h/db ({CANARY!r})")
        except RuntimeError:
            path = write_crash_log(Context())
        assert path is not None
        try:
            text = open(path, encoding="utf-8").read()
            assert "RuntimeError" in text
            assert_no_canary(text, path)
            assert (path.startswith(str(canary_cloud.state_dir))) is (state_dir == canary_cloud.state_dir)
        finally:
            if state_dir == not_a_dir:
                os.unlink(path)  # the shared temp dir: leave nothing behind


def test_canary_in_no_log(canary_cloud):
    """Last: `local down` itself, then every log deployctl and the emulator wrote (the emulator's, each service's
    and job's, and the PostgreSQL server log of each cluster, which lives outside the state dir)."""
    from deployctl.emulator.postgres import cluster_base_path

    checked(canary_cloud, "local", "down")
    logs = sorted(p for p in (canary_cloud.state_dir / "logs").rglob("*") if p.is_file())
    names = {p.name for p in logs}
    assert "emulator.log" in names and f"service-{SERVICE}.jsonl" in names and f"job-{SERVICE}-migrate.jsonl" in names
    clusters = cluster_base_path(str(canary_cloud.state_dir))
    server_logs = sorted(p for p in clusters.rglob("*.log") if p.is_file())
    assert server_logs, f"no PostgreSQL server log under {clusters}"
    assert any("password authentication failed" in p.read_text(errors="replace") for p in server_logs)  # 28P01 ran
    for path in logs + server_logs:
        assert_no_canary(path.read_text(errors="replace"), str(path))
