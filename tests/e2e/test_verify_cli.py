"""`deployctl verify` and `deployctl deploy --verify` as a user runs them, against the shared local cloud.

The shipped configs/local.toml checks run against the three thin services deployed with the README's
`deployctl deploy --all`; the rollback test deploys services of its own (names prefixed "e2ev-").
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import xmlschema

from tests.e2e.conftest import ROOT, Cli
from tests.e2e.test_deploy_cli import FIAT_DB, GATE, HEADER, service

JUNIT_SCHEMA = xmlschema.XMLSchema(str(ROOT / "tests" / "fixtures" / "schemas" / "junit-10.xsd"))
ISSUED_KEY = re.compile(r"ak_(?!0{12})[0-9a-f]{12}_[A-Za-z0-9_-]{8}")  # the forged check key is all zeros
BROKEN = """
[[checks]]
name = "broken"

[[checks.steps]]
name = "issue"
service = "api-key-service"
method = "POST"
path = "/keys"
headers = { X-Verify-Token = "${secret:api-key-pepper}" }
json = { name = "broken-${run}" }
expect_status = 200
expect = { key = { matches = "^nope_" }, id = { present = true } }
save_secret = { key = "key" }

[[checks.steps]]
name = "after"
service = "api-key-service"
path = "/health"
"""


def validate_junit(text: str) -> ET.Element:
    """The report validates against the common JUnit schema (jenkinsci xunit-plugin's junit-10.xsd, which CI
    systems read), and its counts add up."""
    JUNIT_SCHEMA.validate(text)  # raises XMLSchemaValidationError (or a parse error when not well-formed)
    root = ET.fromstring(text)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for suite in root:
        cases = [c for c in suite if c.tag == "testcase"]
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
        assert int(suite.get("errors")) == sum(c.find("error") is not None for c in cases)
        for key in totals:
            totals[key] += int(suite.get(key))
    for key, value in totals.items():
        assert int(root.get(key)) == value, key
    return root


@pytest.fixture(scope="module")
def main_job(local_cloud):
    """The README's main job: `deployctl deploy --all` from configs/local.toml, ending with the matrix."""
    run = local_cloud("--json", "deploy", "--all", *GATE)
    assert run.code == 0, run.output
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def deployed(local_cloud, main_job):
    return local_cloud


def test_the_main_job_matrix_shows_all_three_ready_healthy_and_at_head(main_job, local_cloud):
    assert main_job["ok"] and main_job["errors"] == []
    rows = {r["service"]: r for r in main_job["data"]["status"]["services"]}
    assert set(rows) == {"fiat-gateway", "cross-chain-integration", "api-key-service"}
    for row in rows.values():
        assert row["deployed"] and row["ready"] and row["healthy"], row
        assert row["serving"] == row["latest_created"] and all(h["status"] == 200 for h in row["health"]), row
    for name in ("fiat-gateway", "cross-chain-integration"):
        assert rows[name]["migrations"]["state"] == "at-head", rows[name]["migrations"]
        assert rows[name]["migrations"]["summary"].endswith("(at head)")
    assert rows["api-key-service"]["migrations"]["summary"] == "N/A"
    # fiat-gateway was deployed after what it depends on, with their deployed URLs in its env
    fiat = next(s for s in main_job["data"]["services"] if s["service"] == "fiat-gateway")
    env = {c["field"]: c["after"] for c in fiat["changes"]}
    assert env["env.API_KEY_SERVICE_URL"] == rows["api-key-service"]["url"]
    assert env["env.CROSS_CHAIN_URL"] == rows["cross-chain-integration"]["url"]


def test_shipped_checks_pass_after_deploy_all(deployed, tmp_path):
    report = tmp_path / "junit.xml"
    run = deployed("--json", "verify", "--all", "--junit-xml", str(report))
    assert run.code == 0, run.output
    doc = json.loads(run.stdout)
    assert doc["schema"] == "deployctl/verify/v1" and doc["ok"] and doc["errors"] == []
    data = doc["data"]
    assert set(data["checks"]) == {"api-keys", "deposit-with-key", "signed-transfer"}
    assert {s["service"] for s in data["steps"]} == {"api-key-service", "fiat-gateway", "cross-chain-integration"}
    assert all(s["outcome"] == "passed" for s in data["steps"]) and data["passed"] == len(data["steps"]) == 10
    steps = {(s["check"], s["step"]): s for s in data["steps"]}
    # cross-service for real: fiat-gateway asked api-key-service (a forged key is refused) and listed the
    # transfers through cross-chain-integration
    assert steps[("deposit-with-key", "forged-key")]["status"] == 401
    assert steps[("deposit-with-key", "transfers-through-gateway")]["service"] == "fiat-gateway"
    root = validate_junit(report.read_text())
    assert root.get("tests") == "10" and root.get("failures") == "0" and root.get("errors") == "0"
    text = report.read_text() + run.output
    assert not ISSUED_KEY.search(text), "an issued API key leaked"
    human = deployed("verify", "fiat-gateway")  # only the flows that touch fiat-gateway
    assert human.code == 0, human.output
    assert "deposit-with-key" in human.stdout and "signed-transfer" not in human.stdout
    assert "5 of 5 step(s) passed" in human.stdout


def test_fiat_gateway_authenticates_through_the_deployed_api_key_service(deployed):
    rows = {r["service"]: r for r in json.loads(deployed("--json", "status").stdout)["data"]["services"]}
    fiat = rows["fiat-gateway"]["url"]
    body = {"account_id": "e2ev-direct", "amount": "1.00", "currency": "USD"}
    assert httpx.post(fiat + "/deposits", json=body, timeout=5).status_code == 401  # no key
    forged = httpx.post(fiat + "/deposits", json=body, headers={"X-API-Key": "garbage"}, timeout=5)
    assert forged.status_code == 401 and forged.json() == {"error": "the API key is not valid"}
    key = httpx.post(rows["api-key-service"]["url"] + "/keys", json={"name": "e2ev"}, timeout=5).json()["key"]
    listed = httpx.get(fiat + "/transfers?limit=2", headers={"X-API-Key": key}, timeout=5)
    assert listed.status_code == 200 and isinstance(listed.json()["transfers"], list), listed.text
    plan = deployed("--json", "deploy", "fiat-gateway", "--dry-run")
    assert plan.code == 0 and json.loads(plan.stdout)["data"]["services"][0]["action"] == "unchanged", plan.output


def test_broken_check_fails_with_a_clear_redacted_report(deployed, tmp_path):
    pepper = json.loads(deployed("--json", "secrets", "get", "api-key-pepper", "--reveal").stdout)["data"]["value"]
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "local.toml").write_text((ROOT / "configs" / "local.toml").read_text() + BROKEN)
    cli = Cli(deployed.state_dir, config_dir=config_dir)
    report = tmp_path / "out" / "junit.xml"
    run = cli("verify", "api-key-service", "--junit-xml", str(report))
    assert run.code == 1, run.output
    assert "broken/issue (api-key-service)" in run.stdout
    assert "expected HTTP 200, got 201" in run.stdout
    assert "key: \"***\" does not match /^nope_/" in run.stdout  # the issued key is masked
    assert "POST http://127.0.0.1:" in run.stdout and "X-Verify-Token: ***" in run.stdout  # the request
    assert "response: HTTP 201" in run.stdout and '"id":' in run.stdout  # the first lines of the answer
    assert "not run: step issue failed" in run.stdout
    assert "api-keys" in run.stdout and "deposit-with-key" in run.stdout  # the good flows still ran
    as_json = cli("--json", "verify", "api-key-service")
    assert as_json.code == 1
    doc = json.loads(as_json.stdout)
    assert not doc["ok"] and [e["code"] for e in doc["errors"]] == ["verify-failed"]
    steps = {(s["check"], s["step"]): s for s in doc["data"]["steps"]}
    assert steps[("broken", "issue")]["status"] == 201 and steps[("broken", "after")]["outcome"] == "skipped"
    xml = report.read_text()
    root = validate_junit(xml)
    broken = next(s for s in root if s.get("name") == "broken")
    assert (broken.get("tests"), broken.get("failures"), broken.get("skipped")) == ("2", "1", "1")
    failure = broken.find("testcase/failure")
    assert failure.get("message") == "expected HTTP 200, got 201" and "does not match" in failure.text
    for text in (xml, run.output, as_json.output):
        assert pepper not in text and not ISSUED_KEY.search(text)


def _cli(local_cloud: Cli, tmp_path: Path, text: str) -> Cli:
    config_dir = tmp_path / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "local.toml").write_text(HEADER + text)
    return Cli(local_cloud.state_dir, config_dir=config_dir)


def cross(keys: str, fiat: str) -> str:
    """A flow across two services: a key issued by `keys` opens a deposit at `fiat`."""
    return f"""
[[checks]]
name = "key-opens-deposits"

[[checks.steps]]
name = "issue"
service = "{keys}"
method = "POST"
path = "/keys"
expect_status = 201
save_secret = {{ key = "key" }}

[[checks.steps]]
name = "deposit"
service = "{fiat}"
method = "POST"
path = "/deposits"
headers = {{ X-API-Key = "${{steps.issue.key}}" }}
json = {{ account_id = "e2ev-${{run}}", amount = 3, currency = "EUR" }}
expect_status = 201
expect = {{ currency = {{ equals = "EUR" }} }}
"""


def fiat(name: str, key_service_url: str, log_level: str = "info") -> str:
    """A fiat-gateway service asking the api-key-service at `key_service_url`."""
    env = f'env = {{ LOG_LEVEL = "{log_level}", API_KEY_SERVICE_URL = "{key_service_url}" }}'
    return service(name, module="fiat_gateway").replace('env = { LOG_LEVEL = "info" }', env) + \
        f"\n[services.{name}.database]\n{FIAT_DB}\n"


def url_of(cli: Cli, name: str) -> str:
    return json.loads(cli("--json", "status", name).stdout)["data"]["services"][0]["url"]


def serving(cli: Cli, name: str) -> str:
    return json.loads(cli("--json", "status", name).stdout)["data"]["services"][0]["serving"]


def test_deploy_verify_moves_traffic_back_when_a_cross_service_check_fails(local_cloud, tmp_path):
    keys, cross_check = service("e2ev-keys"), cross("e2ev-keys", "e2ev-fiat")
    first = _cli(local_cloud, tmp_path / "a", keys)
    assert (run := first("deploy", "e2ev-keys", "--no-status", *GATE)).code == 0, run.output
    keys_url = url_of(first, "e2ev-keys")

    good = _cli(local_cloud, tmp_path / "b", keys + fiat("e2ev-fiat", keys_url) + cross_check)
    run = good("deploy", "--all", "--verify", "--no-status", *GATE)
    assert run.code == 0, run.output
    assert "verify: 2 step(s) passed" in run.stderr
    row = json.loads(good("--json", "status", "e2ev-fiat").stdout)["data"]["services"][0]
    old, url = row["serving"], row["url"]

    # The new revision is healthy (its gate passes) but cannot reach api-key-service: deposits answer 503.
    broken = _cli(local_cloud, tmp_path / "c", keys + fiat("e2ev-fiat", "http://127.0.0.1:9") + cross_check)
    run = broken("--json", "deploy", "e2ev-fiat", "--verify", "--no-status", *GATE)
    assert run.code == 1, run.output
    out = json.loads(run.stdout)["data"]["services"][0]
    assert out["status"] == "failed" and out["revision"] != old
    assert out["reason"].startswith("verify failed: key-opens-deposits/deposit: expected HTTP 201, got 503")
    assert f"traffic moved back to {old} (100%)" in out["reason"]
    assert "api-key-service unavailable" in run.stderr  # the answer's first lines reach the person
    assert not ISSUED_KEY.search(run.output)
    health = httpx.get(url + "/health", timeout=5).json()
    assert health["revision"] == old  # the service answers with the previous revision again
    assert serving(broken, "e2ev-fiat") == old
    failed_revision = out["revision"]

    # A plain deploy of the same config would put the revision that failed verify back: refused, unless forced.
    again = broken("--json", "deploy", "e2ev-fiat", "--no-status", *GATE)
    assert again.code == 1, again.output
    out = json.loads(again.stdout)["data"]["services"][0]
    assert out["blocked"].startswith(f"would undo the rollback of {failed_revision} (failed `deploy --verify`")
    assert json.loads(again.stdout)["errors"][0]["code"] == "deploy-blocked"
    assert serving(broken, "e2ev-fiat") == old
    plan = broken("deploy", "e2ev-fiat", "--dry-run")
    assert plan.code == 1 and f"refused: would undo the rollback of {failed_revision}" in plan.stdout, plan.output
    forced = broken("deploy", "e2ev-fiat", "--force", "--no-status", *GATE)
    assert forced.code == 0, forced.output
    assert serving(broken, "e2ev-fiat") == failed_revision  # the retained revision, not a duplicate of it


@pytest.fixture(scope="module")
def pair(local_cloud, tmp_path_factory):
    """e2ew-keys and an e2ew-fiat that asks it, deployed together with --verify once; their config pieces."""
    tmp = tmp_path_factory.mktemp("pair")
    keys, cross_check = service("e2ew-keys"), cross("e2ew-keys", "e2ew-fiat")
    first = _cli(local_cloud, tmp / "a", keys)
    assert (run := first("deploy", "e2ew-keys", "--no-status", *GATE)).code == 0, run.output
    keys_url = url_of(first, "e2ew-keys")
    good = _cli(local_cloud, tmp / "b", keys + fiat("e2ew-fiat", keys_url) + cross_check)
    assert (run := good("deploy", "--all", "--verify", "--no-status", *GATE)).code == 0, run.output
    return SimpleNamespace(keys=keys, cross=cross_check, keys_url=keys_url, cli=good)


def test_deploy_verify_blames_only_the_service_whose_step_failed(local_cloud, pair, tmp_path):
    """Two services changed in one run: the checks run once both have moved their traffic, and only the one whose
    step failed is moved back."""
    keys, keys_url, cross_check = pair.keys, pair.keys_url, pair.cross
    old = {n: serving(pair.cli, n) for n in ("e2ew-keys", "e2ew-fiat")}

    # api-key-service loses its pepper (its /health still passes the gate; issuing keys answers 503); fiat-gateway
    # changes its log level and is fine.
    broken_keys = keys.replace('secrets = { API_KEY_PEPPER = "api-key-pepper:latest" }', "secrets = {}")
    both = _cli(local_cloud, tmp_path / "c", broken_keys + fiat("e2ew-fiat", keys_url, "debug") + cross_check)
    run = both("--json", "deploy", "--all", "--verify", "--no-status", *GATE)
    assert run.code == 1, run.output
    out = {s["service"]: s for s in json.loads(run.stdout)["data"]["services"]}
    assert out["e2ew-keys"]["status"] == "failed", out["e2ew-keys"]
    assert out["e2ew-keys"]["reason"].startswith("verify failed: key-opens-deposits/issue: expected HTTP 201, got 503")
    assert f"traffic moved back to {old['e2ew-keys']} (100%)" in out["e2ew-keys"]["reason"]
    assert out["e2ew-fiat"]["status"] == "deployed" and not out["e2ew-fiat"]["verify_failed"], out["e2ew-fiat"]
    assert serving(both, "e2ew-keys") == old["e2ew-keys"]
    assert serving(both, "e2ew-fiat") == out["e2ew-fiat"]["revision"] != old["e2ew-fiat"]


def test_deploy_verify_moves_back_a_change_that_breaks_a_step_on_a_service_it_did_not_change(local_cloud, pair,
                                                                                              tmp_path):
    """Issue 9's cross-service case: api-key-service "v2" refuses the gateway's /keys/verify. Every step on it
    passes; the gateway's step fails, and this run did not change the gateway. The changed service in that flow is
    the suspect: moved back, the flow passes again, so the change broke it and it stays moved back."""
    old = serving(pair.cli, "e2ew-keys")
    v2 = pair.keys.replace('["python", "-m", "services.api_key_service"]', '["python", "tests/fixtures/keys_v2.py"]')
    cli = _cli(local_cloud, tmp_path, v2 + fiat("e2ew-fiat", pair.keys_url) + pair.cross)
    run = cli("--json", "deploy", "e2ew-keys", "--verify", "--no-status", *GATE)
    assert run.code == 1, run.output
    out = json.loads(run.stdout)["data"]["services"][0]
    assert out["status"] == "failed" and out["verify_failed"] and out["revision"] != old, out
    assert out["reason"].startswith("verify failed: key-opens-deposits/deposit on e2ew-fiat (not changed by this "
                                    "run"), out["reason"]
    assert f"traffic moved back to {old} (100%)" in out["reason"] and "this deploy broke it" in out["reason"]
    assert "api-key-service unavailable" in run.stderr and not ISSUED_KEY.search(run.output)
    assert serving(cli, "e2ew-keys") == old
