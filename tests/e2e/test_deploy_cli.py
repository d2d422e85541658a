"""`deployctl deploy / rollback / status` as a user runs them, against the shared local cloud.

Every test deploys services of its own (names prefixed "e2ed-"), from a config written into its own directory,
so the tests do not depend on each other's order or on other modules' services.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Cli

SCHEMA = ROOT / "tests" / "fixtures" / "schemas" / "status.json"
HEADER = """
[environment]
project = "deployctl-local"
region = "us-central1"
emulator = true

[network]
vpc_connector = "projects/deployctl-local/locations/us-central1/connectors/local-connector"

[instances.core]
connection_name = "deployctl-local:us-central1:core-pg"
"""
GATE = ("--gate-successes", "2", "--gate-deadline", "6")


def service(name: str, *, module: str = "api_key_service", env: str = 'LOG_LEVEL = "info"',
            command: str | None = None, health: str = '["/health"]', database: str = "") -> str:
    command = command or f'["python", "-m", "services.{module}"]'
    text = f"""
[services.{name}]
image = "local/{name}:dev"
command = {command}
env = {{ {env} }}
secrets = {{ API_KEY_PEPPER = "api-key-pepper:latest" }}
health = {health}
startup_probe = {{ path = "/health", period = 1, failure_threshold = 20 }}
"""
    if database:
        text += f"\n[services.{name}.database]\n{database}\n"
    return text


def cli_for(local_cloud: Cli, tmp_path: Path, *services: str) -> Cli:
    config_dir = tmp_path / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "local.toml").write_text(HEADER + "".join(services))
    return Cli(local_cloud.state_dir, config_dir=config_dir)


def status_json(cli: Cli, *names: str) -> dict:
    run = cli("--json", "status", *names)
    assert run.code in (0, 3), run.output
    return {s["service"]: s for s in json.loads(run.stdout)["data"]["services"]}


def validate(doc: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the structure checks below still run
        jsonschema = None
    if jsonschema is not None:
        jsonschema.validate(doc, schema)
    for row in doc["data"]["services"]:
        assert set(schema["properties"]["data"]["properties"]["services"]["items"]["required"]) <= set(row)


FIAT_DB = f"""instance = "core"
name = "fiat_gateway"
user = "fiat_gateway_user"
password_secret = "fiat-gateway-db-password"
url_secret = "fiat-gateway-database-url"
migrations = "{ROOT / 'migrations' / 'fiat_gateway'}"
"""


def test_deploy_all_then_status_matrix(local_cloud, tmp_path):
    cli = cli_for(local_cloud, tmp_path,
                  service("e2ed-fiat", module="fiat_gateway", health='["/health", "/health/db"]', database=FIAT_DB),
                  service("e2ed-keys"), service("e2ed-edge", env='LOG_LEVEL = "info", UPSTREAM = "keys"'))
    run = cli("deploy", "--all", *GATE)
    assert run.code == 0, run.output
    assert "migrations:" in run.stderr and "health gate passed" in run.stderr
    assert "status (local)" in run.stdout  # the matrix at the end
    st = cli("--json", "status")
    assert st.code == 0, st.output
    doc = json.loads(st.stdout)
    validate(doc)
    rows = {s["service"]: s for s in doc["data"]["services"]}
    assert set(rows) == {"e2ed-fiat", "e2ed-keys", "e2ed-edge"}
    for row in rows.values():
        assert row["ready"] and row["healthy"] and row["serving"] == row["latest_created"], row
        assert all(h["status"] == 200 and h["latency_ms"] is not None for h in row["health"])
    assert [h["path"] for h in rows["e2ed-fiat"]["health"]] == ["/health", "/health/db"]
    assert rows["e2ed-fiat"]["migrations"]["state"] == "at-head"
    assert rows["e2ed-keys"]["migrations"]["summary"] == "N/A"
    again = cli("--json", "deploy", "--all", "--dry-run", "--detailed-exitcode")
    assert again.code == 0, again.output
    assert json.loads(again.stdout)["data"]["changes_pending"] is False


def test_env_change_dry_run_redeploy_and_rollback(local_cloud, tmp_path):
    first = cli_for(local_cloud, tmp_path / "a", service("e2ed-env"))
    assert (run := first("deploy", "e2ed-env", "--no-status", *GATE)).code == 0, run.output
    old = status_json(first)["e2ed-env"]["serving"]

    changed = cli_for(local_cloud, tmp_path / "b", service("e2ed-env", env='LOG_LEVEL = "debug"'))
    plan = changed("--json", "deploy", "e2ed-env", "--dry-run", "--detailed-exitcode")
    assert plan.code == 2, plan.output
    doc = json.loads(plan.stdout)["data"]
    assert doc["changes_pending"] is True
    fields = {c["field"]: (c["before"], c["after"]) for c in doc["services"][0]["changes"]}
    assert fields.pop("env.LOG_LEVEL") == ("info", "debug")
    assert set(fields) == {"labels.deployctl-config"}  # the config digest, and nothing else
    human = changed("deploy", "e2ed-env", "--dry-run")
    assert human.code == 0 and "env.LOG_LEVEL: 'info' → 'debug'" in human.stdout, human.output
    assert status_json(changed)["e2ed-env"]["serving"] == old  # the dry run changed nothing

    assert (run := changed("deploy", "e2ed-env", "--no-status", *GATE)).code == 0, run.output
    row = status_json(changed)["e2ed-env"]
    assert row["serving"] != old and row["serving"] == row["latest_created"] and row["healthy"]
    new = row["serving"]

    back = changed("rollback", "e2ed-env")
    assert back.code == 0, back.output
    row = status_json(changed)["e2ed-env"]
    assert row["serving"] == old and row["pinned"] and row["healthy"]  # the old revision was retained
    assert changed("rollback", "e2ed-env", "--to", new).code == 0
    assert status_json(changed)["e2ed-env"]["serving"] == new
    missing = changed("rollback", "e2ed-env", "--to", "e2ed-env-nope")
    assert missing.code == 2 and "no revision" in missing.stderr


def test_broken_command_keeps_traffic_and_shows_logs(local_cloud, tmp_path):
    good = cli_for(local_cloud, tmp_path / "a", service("e2ed-broken"))
    assert (run := good("deploy", "e2ed-broken", "--no-status", *GATE)).code == 0, run.output
    serving = status_json(good)["e2ed-broken"]["serving"]
    broken = cli_for(local_cloud, tmp_path / "b", service(
        "e2ed-broken", command='["python", "-c", "import sys; print(\'boom: config missing\', flush=True); '
                               'sys.exit(3)"]'))
    run = broken("--json", "deploy", "e2ed-broken", *GATE)
    assert run.code == 1, run.output
    out = json.loads(run.stdout)["data"]["services"][0]
    assert out["status"] == "failed" and f"traffic stays on {serving}" in out["reason"]
    assert any("boom: config missing" in line for line in out["logs"]), out
    assert "boom: config missing" in run.stderr  # the log lines reach the person too
    row = status_json(broken)["e2ed-broken"]
    assert row["serving"] == serving and row["latest_created"] != serving
    assert all(h["ok"] for h in row["health"]) and not row["ready"]  # still serving; the failure is reported
    # not ready revisions are refused by rollback
    refused = broken("rollback", "e2ed-broken", "--to", row["latest_created"])
    assert refused.code == 2 and "not ready" in refused.stderr, refused.output


def test_gate_catches_500_on_health_db_behind_a_passing_startup_probe(local_cloud, tmp_path):
    dsn = local_cloud("--json", "dsn", "fiat-gateway", "--reveal")
    assert dsn.code == 0, dsn.output
    url = json.loads(dsn.stdout)["data"]["services"][0]["url"]
    user_part, _, host_part = url.rpartition("@")
    bad_url = user_part.rsplit(":", 1)[0] + ":wrong-password@" + host_part
    cli = cli_for(local_cloud, tmp_path, service(
        "e2ed-baddb", module="fiat_gateway", health='["/health", "/health/db"]',
        database=FIAT_DB.replace("fiat-gateway-database-url", "e2ed-baddb-url").replace(
            f'migrations = "{ROOT / "migrations" / "fiat_gateway"}"\n', "")))
    assert cli("secrets", "set", "e2ed-baddb-url", input=bad_url).code == 0
    run = cli("--json", "deploy", "e2ed-baddb", "--gate-deadline", "4")
    assert run.code == 1, run.output
    out = json.loads(run.stdout)["data"]["services"][0]
    assert out["status"] == "failed" and "health gate failed" in out["reason"]
    assert out["failed_probe"].startswith("GET /health/db: HTTP 503"), out
    assert "wrong-password" not in run.output


@pytest.mark.parametrize("args", [("deploy",), ("deploy", "--all", "--detailed-exitcode")])
def test_usage_errors(local_cloud, args):
    run = local_cloud(*args)
    assert run.code == 2 and "next:" in run.stderr, run.output
