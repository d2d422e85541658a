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
    before = status_json(first)["e2ed-env"]
    old = before["serving"]

    changed = cli_for(local_cloud, tmp_path / "b", service("e2ed-env", env='LOG_LEVEL = "debug"'))
    plan = changed("--json", "deploy", "e2ed-env", "--dry-run", "--detailed-exitcode")
    assert plan.code == 2, plan.output
    envelope = json.loads(plan.stdout)
    assert envelope["ok"] is True and envelope["errors"] == []  # a plan with changes is a successful plan
    doc = envelope["data"]
    assert doc["changes_pending"] is True and doc["services"][0]["new_revision"] is True
    fields = {c["field"]: (c["before"], c["after"]) for c in doc["services"][0]["changes"]}
    assert fields.pop("env.LOG_LEVEL") == ("info", "debug")
    assert set(fields) == {"labels.deployctl-config"}  # the config digest, and nothing else
    human = changed("deploy", "e2ed-env", "--dry-run")
    assert human.code == 0 and "env.LOG_LEVEL: 'info' → 'debug'" in human.stdout, human.output
    after = status_json(changed)["e2ed-env"]  # the dry run changed nothing: no revision made, traffic as it was
    assert (after["serving"], after["latest_created"], after["traffic"]) == \
        (old, before["latest_created"], before["traffic"])

    assert (run := changed("deploy", "e2ed-env", "--no-status", *GATE)).code == 0, run.output
    row = status_json(changed)["e2ed-env"]
    assert row["serving"] != old and row["serving"] == row["latest_created"] and row["healthy"]
    new = row["serving"]

    back = changed("rollback", "e2ed-env")
    assert back.code == 0, back.output
    row = status_json(changed)["e2ed-env"]
    assert row["serving"] == old and row["pinned"] and row["healthy"]  # the old revision was retained

    # The plan is against what serves: the old config is unchanged (no invented diff, no duplicate revision)...
    same = first("--json", "deploy", "e2ed-env", "--dry-run", "--detailed-exitcode")
    assert same.code == 0 and json.loads(same.stdout)["data"]["services"][0]["action"] == "unchanged", same.output
    assert first("deploy", "e2ed-env", "--no-status", *GATE).code == 0
    assert status_json(first)["e2ed-env"]["latest_created"] == new
    # ...and a plain deploy of the rolled-back config does not quietly undo the rollback.
    undo = changed("--json", "deploy", "e2ed-env", "--no-status", *GATE)
    assert undo.code == 1, undo.output
    assert json.loads(undo.stdout)["data"], undo.output
    out = json.loads(undo.stdout)["data"]["services"][0]
    assert out["target"] == new and out["blocked"].startswith(f"would undo the rollback of {new}"), out
    assert status_json(changed)["e2ed-env"]["serving"] == old
    assert changed("rollback", "e2ed-env", "--to", new).code == 0  # a deliberate choice of that revision
    again = changed("--json", "deploy", "e2ed-env", "--dry-run", "--detailed-exitcode")
    assert again.code == 0 and json.loads(again.stdout)["data"]["services"][0]["revision"] == new, again.output
    missing = changed("rollback", "e2ed-env", "--to", "e2ed-env-nope")
    assert missing.code == 2 and "no revision" in missing.stderr


def test_broken_command_keeps_traffic_and_shows_logs(local_cloud, tmp_path):
    good = cli_for(local_cloud, tmp_path / "a", service("e2ed-broken"))
    assert (run := good("deploy", "e2ed-broken", "--no-status", *GATE)).code == 0, run.output
    serving = status_json(good)["e2ed-broken"]["serving"]
    pepper = json.loads(good("--json", "secrets", "get", "api-key-pepper", "--reveal").stdout)["data"]["value"]
    broken = cli_for(local_cloud, tmp_path / "b", service(
        "e2ed-broken", command='["python", "-c", "import os, sys; print(\'boom: config missing; pepper is\', '
                               'os.environ[\'API_KEY_PEPPER\'], flush=True); sys.exit(3)"]'))
    run = broken("--json", "deploy", "e2ed-broken", *GATE)
    assert run.code == 1, run.output
    out = json.loads(run.stdout)["data"]["services"][0]
    assert out["status"] == "failed" and f"traffic stays on {serving}" in out["reason"]
    assert any("boom: config missing" in line for line in out["logs"]), out
    assert "boom: config missing" in run.stderr  # the log lines reach the person too
    assert "pepper is ***" in run.stderr and pepper not in run.output  # the revision printed its secret: masked
    again = broken("deploy", "e2ed-broken", "--no-status", *GATE)  # not "unchanged": it tries again, and says so
    assert again.code == 1 and "unchanged" not in again.stderr and "did not start" in again.stderr, again.output
    st = broken("--json", "status", "e2ed-broken")
    row = json.loads(st.stdout)["data"]["services"][0]
    assert row["serving"] == serving and row["latest_created"] != serving  # the failed revision is reported...
    # ...and the failed rollout's candidate tag is gone again: the service routes as before it, and is Ready
    assert all(h["ok"] for h in row["health"]) and row["ready"] and [t["tag"] for t in row["traffic"]] == [""], row
    assert pepper not in st.output  # the revision printed its secret before it died
    # not ready revisions are refused by rollback, with the reason from the revision's condition: it points to
    # the revision's logs instead of quoting them (they hold the secret)
    refused = broken("rollback", "e2ed-broken", "--to", row["latest_created"])
    assert refused.code == 2 and "not ready" in refused.stderr, refused.output
    assert pepper not in refused.output and "Logs for this revision" in refused.stderr, refused.output
    fixed = good("deploy", "e2ed-broken", "--no-status", *GATE)  # nothing left to repair: unchanged, exit 0
    assert fixed.code == 0 and "unchanged" in fixed.stderr, fixed.output


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
    run = cli("--json", "deploy", "e2ed-baddb", "--gate-deadline", "6")
    assert run.code == 1, run.output
    out = json.loads(run.stdout)["data"]["services"][0]
    assert out["status"] == "failed" and "health gate failed" in out["reason"]
    assert out["failed_probe"].startswith("GET /health/db: HTTP 503"), out
    assert "wrong-password" not in run.output


@pytest.mark.parametrize("args", [("deploy",), ("deploy", "--all", "--detailed-exitcode"),
                                  ("deploy", "api-key-service", "--image", "fiat-gateway=local/x:1"),
                                  ("deploy", "api-key-service", "--image", "api-key-service=a:1", "--image",
                                   "api-key-service=a:2")])
def test_usage_errors(local_cloud, args):
    run = local_cloud(*args)
    assert run.code == 2 and "next:" in run.stderr, run.output
    doc = json.loads(local_cloud("--json", *args).stdout)  # exit 2 too: the envelope tells it from a plan's 2
    assert doc["ok"] is False and doc["errors"][0]["code"] == "usage"


def test_a_failed_first_create_says_what_serves_and_is_not_unchanged_later(local_cloud, tmp_path):
    bad = cli_for(local_cloud, tmp_path / "a", service("e2ed-first", health='["/health", "/missing"]'))
    run = bad("--json", "deploy", "e2ed-first", "--gate-successes", "1", "--gate-deadline", "2", "--no-status")
    assert run.code == 1, run.output
    out = json.loads(run.stdout)["data"]["services"][0]
    assert "health gate failed" in out["reason"] and out["failed_probe"].startswith("GET /missing: HTTP 404")
    # Cloud Run sends a service's traffic to its only revision: said as it is, not "traffic stays on no revision"
    assert f"the service was created and its only revision {out['revision']} serves its URL" in out["reason"]
    assert "it receives the service URL's traffic once it starts" in run.stderr
    row = status_json(bad)["e2ed-first"]
    assert row["serving"] == out["revision"]

    plan = bad("--json", "deploy", "e2ed-first", "--dry-run", "--detailed-exitcode")
    assert plan.code == 2, plan.output  # it never passed the gate: not "unchanged"
    planned = json.loads(plan.stdout)["data"]["services"][0]
    assert planned["target"] == out["revision"] and "never passed" in planned["plan_reason"], planned
    again = bad("deploy", "e2ed-first", "--gate-successes", "1", "--gate-deadline", "2", "--no-status")
    assert again.code == 1 and "health gate failed" in again.stderr, again.output

    fixed = cli_for(local_cloud, tmp_path / "b", service("e2ed-first"))
    assert (run := fixed("deploy", "e2ed-first", "--no-status", *GATE)).code == 0, run.output
    assert fixed("deploy", "e2ed-first", "--dry-run", "--detailed-exitcode").code == 0


def test_depends_on_order_inclusion_and_dependency_failed_skip(local_cloud, tmp_path):
    pepper = json.loads(local_cloud("--json", "secrets", "get", "api-key-pepper", "--reveal").stdout)["data"]["value"]
    crash = '["python", "-c", "import os, sys; print(\'pepper is\', os.environ[\'API_KEY_PEPPER\']); sys.exit(3)"]'
    dep_b = service("e2ed-dep-b") + 'depends_on = ["e2ed-dep-a"]\n'
    broken = cli_for(local_cloud, tmp_path / "a", service("e2ed-dep-a", command=crash) + dep_b)
    # deploying b alone includes a, which is not deployed yet; a fails, so b is skipped
    run = broken("--json", "deploy", "e2ed-dep-b", "--no-status", *GATE)
    assert run.code == 1, run.output
    out = {s["service"]: s for s in json.loads(run.stdout)["data"]["services"]}
    assert "not deployed yet, and e2ed-dep-b depends on it" in out["e2ed-dep-a"]["plan_reason"]
    assert out["e2ed-dep-a"]["status"] == "failed" and "did not start" in out["e2ed-dep-a"]["reason"]
    assert out["e2ed-dep-b"]["status"] == "skipped" and out["e2ed-dep-b"]["reason"] == "dependency failed: e2ed-dep-a"
    assert status_json(broken, "e2ed-dep-b")["e2ed-dep-b"]["deployed"] is False
    # a second run does not call a, whose only revision never started, "unchanged", nor deploy b on top of it
    again = broken("--json", "deploy", "--all", "--no-status", *GATE)
    assert again.code == 1, again.output
    out = {s["service"]: s for s in json.loads(again.stdout)["data"]["services"]}
    assert out["e2ed-dep-a"]["status"] == "failed" and out["e2ed-dep-b"]["status"] == "skipped"
    # a deployed but not Ready: deploying b alone warns about it
    alone = broken("--json", "deploy", "e2ed-dep-b", "--dry-run")
    warnings = json.loads(alone.stdout)["data"]["services"][0]["warnings"]
    assert warnings and warnings[0].startswith("depends on e2ed-dep-a, which is not Ready"), alone.output
    # why, from a's condition, which points to the logs of the revision that printed its secret (never quotes them)
    assert "exited with code 3" in warnings[0] and "Logs for this revision" in warnings[0], warnings
    st = broken("--json", "status", "e2ed-dep-a")
    assert "exited with code 3" in json.loads(st.stdout)["data"]["services"][0]["ready_message"], st.output
    assert pepper not in alone.output + st.output

    fixed = cli_for(local_cloud, tmp_path / "b", service("e2ed-dep-a") + dep_b)
    run = fixed("deploy", "--all", "--no-status", *GATE)
    assert run.code == 0, run.output
    assert run.stderr.index("e2ed-dep-a: deployed") < run.stderr.index("e2ed-dep-b: plan:"), run.stderr


def test_resources_ingress_and_probe_timeout_are_planned_and_deployed(local_cloud, tmp_path):
    plain = cli_for(local_cloud, tmp_path / "a", service("e2ed-res"))
    assert (run := plain("deploy", "e2ed-res", "--no-status", *GATE)).code == 0, run.output
    sized = service("e2ed-res").replace('startup_probe = { path = "/health", period = 1, failure_threshold = 20 }',
                                        'startup_probe = { path = "/health", period = 2, timeout = 2, '
                                        'failure_threshold = 20 }\ncpu = "2"\nmemory = "1Gi"\ningress = "internal"')
    cli = cli_for(local_cloud, tmp_path / "b", sized)
    plan = cli("--json", "deploy", "e2ed-res", "--dry-run", "--detailed-exitcode")
    assert plan.code == 2, plan.output
    fields = {c["field"]: (c["before"], c["after"]) for c in json.loads(plan.stdout)["data"]["services"][0]["changes"]}
    assert fields["cpu"] == ("1", "2") and fields["memory"] == ("512Mi", "1Gi")
    assert fields["ingress"] == ("all", "internal") and fields["probe_timeout"] == (1, 2)
    assert fields["probe_period"] == (1, 2)
    assert (run := cli("deploy", "e2ed-res", "--no-status", *GATE)).code == 0, run.output
    assert cli("deploy", "e2ed-res", "--dry-run", "--detailed-exitcode").code == 0  # deployed as planned

    too_long = cli_for(local_cloud, tmp_path / "c", service("e2ed-res").replace(
        "failure_threshold = 20 }", "failure_threshold = 20, timeout = 5 }"))
    run = too_long("deploy", "e2ed-res", "--dry-run")
    assert run.code == 2 and "timeout (5 s) is longer than its period (1 s)" in run.stderr, run.output


def test_pending_migrations_are_in_the_plan_and_deploy_runs_them(local_cloud, tmp_path):
    from tests.e2e.test_migrate_cli import FIAT_COLUMN, FIAT_HEAD

    cli = cli_for(local_cloud, tmp_path, service("e2ed-mig", module="fiat_gateway",
                                                 health='["/health", "/health/db"]', database=FIAT_DB))
    assert (run := cli("deploy", "e2ed-mig", "--no-status", *GATE)).code == 0, run.output
    try:
        down = local_cloud("--yes", "migrate", "fiat-gateway", "--to", FIAT_COLUMN, "--runner", "local")
        assert down.code == 0, down.output
        plan = cli("--json", "deploy", "e2ed-mig", "--dry-run", "--detailed-exitcode")
        assert plan.code == 2, plan.output  # the spec is unchanged, the database is not at head
        out = json.loads(plan.stdout)["data"]["services"][0]
        assert out["action"] == "update" and out["changes"] == [] and out["migrations_pending"], out
        assert out["plan_migrations"] == f"{FIAT_COLUMN} → {FIAT_HEAD} (1 pending)"
        human = cli("deploy", "e2ed-mig", "--dry-run")
        assert f"migrations: {FIAT_COLUMN} → {FIAT_HEAD} (1 pending)" in human.stdout, human.output
        run = cli("--json", "deploy", "e2ed-mig", *GATE)
        assert run.code == 0, run.output
        out = json.loads(run.stdout)["data"]
        assert out["services"][0]["migrations"].startswith("1 applied"), out["services"][0]
        assert out["status"]["services"][0]["migrations"]["state"] == "at-head"
    finally:
        local_cloud("migrate", "fiat-gateway", "--runner", "local")  # leave the database at head


def test_a_migration_that_cannot_log_in_fails_the_deploy_with_its_sqlstate_and_next_step(local_cloud, tmp_path):
    """The story's failure inside `deploy`: the migration step's 28P01 and migrate's next step (deployctl doctor
    SERVICE) reach the deploy's table and its JSON, not only "fix the cause above"."""
    from sqlalchemy.engine import make_url

    good = local_cloud("secrets", "get", "fiat-gateway-database-url", "--reveal").stdout.strip()
    wrong = make_url(good).set(password="Not-The-Deploy-Pw-31").render_as_string(hide_password=False)
    assert local_cloud("secrets", "set", "e2ed-m28-url", input=wrong).code == 0
    cli = cli_for(local_cloud, tmp_path, service("e2ed-m28", module="fiat_gateway", database=FIAT_DB.replace(
        "fiat-gateway-database-url", "e2ed-m28-url")))
    human = cli("deploy", "e2ed-m28", "--no-status", *GATE)
    assert human.code == 1, human.output
    assert "migrations failed (SQLSTATE 28P01)" in human.stdout, human.output
    assert "e2ed-m28: next: " in human.stdout and "deployctl doctor e2ed-m28" in human.stdout, human.output
    run = cli("--json", "deploy", "e2ed-m28", "--no-status", *GATE)
    assert run.code == 1, run.output
    err = json.loads(run.stdout)["errors"][0]
    assert err["code"] == "deploy-failed" and "deployctl doctor e2ed-m28" in err["hint"], err
    assert "Not-The-Deploy-Pw-31" not in human.output + run.output


def test_status_unknown_migrations_and_an_unreadable_row(local_cloud, tmp_path):
    cli = cli_for(local_cloud, tmp_path, service("e2ed-unk", module="fiat_gateway", database=FIAT_DB.replace(
        "fiat-gateway-database-url", "e2ed-unk-url")))
    assert cli("secrets", "set", "e2ed-unk-url", input="postgresql+pg8000://nobody:wrong@127.0.0.1:9/x").code == 0
    run = cli("--json", "status", "e2ed-unk")
    assert run.code == 3, run.output  # degraded, not failed: the matrix was read
    row = json.loads(run.stdout)["data"]["services"][0]
    assert row["migrations"]["state"] == "unknown" and row["migrations"]["summary"].startswith("unknown: ")
    assert row["migrations"]["reason"], row
    human = cli("status", "e2ed-unk")
    assert "unknown: " in human.stdout, human.output

    name = "projects/deployctl-local/locations/us-central1/services/e2ed-unk"
    faults = local_cloud.state_dir / "faults.json"
    faults.write_text(json.dumps({"permission_denied": [name]}))
    try:
        denied = cli("--json", "status", "e2ed-unk")
    finally:
        faults.unlink()
    assert denied.code == 1, denied.output  # a row that cannot be read is a failure
    doc = json.loads(denied.stdout)
    assert doc["ok"] is False and doc["errors"][0]["code"] == "permission-denied", doc["errors"]
    assert "run.services.get" in doc["errors"][0]["message"] + (doc["errors"][0]["hint"] or "")
    validate(doc)


def test_ctrl_c_while_a_revision_starts_stops_within_seconds(local_cloud, tmp_path):
    from tests.e2e.test_trust_interrupts import interrupt_when

    slow = service("e2ed-slow", command='["python", "tests/fixtures/run_app.py"]',
                   env='APP_START_DELAY = "30"').replace("failure_threshold = 20", "failure_threshold = 60")
    cli = cli_for(local_cloud, tmp_path, slow)
    code, err = interrupt_when(cli, ["deploy", "e2ed-slow", "--no-status"], "creating revision", tmp_path)
    assert code == 130, err  # within 2 s, with no process of the run left (interrupt_when asserts both)
    assert "not done: e2ed-slow stopped before moving traffic" in err and "Traceback" not in err, err


def test_ctrl_c_after_the_traffic_shift_was_sent_says_traffic_may_have_moved(local_cloud, tmp_path):
    """The shift's update takes 2 s to be applied (injected latency); Ctrl-C lands meanwhile. The change was sent
    and goes through: the report must not say traffic stays where it was."""
    from tests.e2e.test_trust_interrupts import interrupt_when

    cli = cli_for(local_cloud, tmp_path, service("e2ed-shift"))
    faults = local_cloud.state_dir / "faults.json"
    faults.write_text(json.dumps({"latency_ms": {"UpdateService": 2000}}))
    try:
        code, err = interrupt_when(cli, ["deploy", "e2ed-shift", "--no-status", *GATE], "health gate passed",
                                   tmp_path)
    finally:
        faults.unlink()
    assert code == 130 and "Traceback" not in err, err
    assert "not done: e2ed-shift stopped after its traffic shift to e2ed-shift-" in err, err
    assert "traffic may have moved to it" in err and "serving stays" not in err, err
    assert status_json(cli, "e2ed-shift")["e2ed-shift"]["serving"] in err  # it did move, to the one named


def test_status_says_what_deploys_a_service_not_deployed_yet(local_cloud, tmp_path):
    """A fresh local cloud: every row 'not deployed', exit 3, and nothing said what to run next."""
    cli = cli_for(local_cloud, tmp_path, service("e2ed-undeployed"))
    run = cli("status")
    assert run.code == 3, run.output
    assert "not deployed" in run.stdout
    assert run.stderr.splitlines()[-1] == "next: deployctl deploy e2ed-undeployed (not deployed yet)", run.stderr
    js = cli("--json", "status")
    assert js.code == 3 and json.loads(js.stdout)["data"]["services"][0]["deployed"] is False and not js.stderr
