"""`deployctl verify` and `deployctl deploy --verify` as a user runs them, against the shared local cloud.

The shipped configs/local.toml checks run against the three thin services deployed with the README's
`deployctl deploy --all`; the rollback test deploys services of its own (names prefixed "e2ev-").
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, Cli
from tests.e2e.test_deploy_cli import FIAT_DB, GATE, HEADER, service

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
    """The structure the common JUnit schema requires (the one CI systems read), checked without an XSD."""
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    suites = list(root)
    assert suites and all(s.tag == "testsuite" for s in suites)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for suite in suites:
        for attr in ("name", "tests", "failures", "errors", "time"):
            assert attr in suite.attrib, (attr, suite.attrib)
        float(suite.get("time"))
        cases = [c for c in suite if c.tag == "testcase"]
        assert {c.tag for c in suite} <= {"testcase", "properties", "system-out", "system-err"}
        assert int(suite.get("tests")) == len(cases)
        failures = [c for c in cases if c.find("failure") is not None]
        errors = [c for c in cases if c.find("error") is not None]
        assert int(suite.get("failures")) == len(failures) and int(suite.get("errors")) == len(errors)
        for case in cases:
            assert case.get("classname") and case.get("name"), case.attrib
            float(case.get("time"))
            assert {c.tag for c in case} <= {"failure", "error", "skipped", "system-out", "system-err"}
            for bad in case.findall("failure") + case.findall("error"):
                assert bad.get("message"), case.attrib
        for key in totals:
            totals[key] += int(suite.get(key))
    for key, value in totals.items():
        assert int(root.get(key)) == value, key
    return root


@pytest.fixture(scope="module")
def deployed(local_cloud):
    """The README's main job: the three thin services deployed from configs/local.toml."""
    run = local_cloud("deploy", "--all", "--no-status", *GATE)
    assert run.code == 0, run.output
    return local_cloud


def test_shipped_checks_pass_after_deploy_all(deployed, tmp_path):
    report = tmp_path / "junit.xml"
    run = deployed("--json", "verify", "--all", "--junit-xml", str(report))
    assert run.code == 0, run.output
    doc = json.loads(run.stdout)
    assert doc["schema"] == "deployctl/verify/v1" and doc["ok"] and doc["errors"] == []
    data = doc["data"]
    assert set(data["checks"]) == {"api-keys", "deposit-with-key", "signed-transfer"}
    assert {s["service"] for s in data["steps"]} == {"api-key-service", "fiat-gateway", "cross-chain-integration"}
    assert all(s["outcome"] == "passed" for s in data["steps"]) and data["passed"] == len(data["steps"]) == 9
    root = validate_junit(report.read_text())
    assert root.get("tests") == "9" and root.get("failures") == "0" and root.get("errors") == "0"
    text = report.read_text() + run.output
    assert not ISSUED_KEY.search(text), "an issued API key leaked"
    human = deployed("verify", "fiat-gateway")  # only the flows that touch fiat-gateway
    assert human.code == 0, human.output
    assert "deposit-with-key" in human.stdout and "signed-transfer" not in human.stdout
    assert "4 of 4 step(s) passed" in human.stdout


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


CROSS = """
[[checks]]
name = "key-opens-deposits"

[[checks.steps]]
name = "issue"
service = "e2ev-keys"
method = "POST"
path = "/keys"
expect_status = 201
save_secret = { key = "key" }

[[checks.steps]]
name = "deposit"
service = "e2ev-fiat"
method = "POST"
path = "/deposits"
headers = { X-API-Key = "${steps.issue.key}" }
json = { account_id = "e2ev-${run}", amount = 3, currency = "EUR" }
expect_status = 201
expect = { currency = { equals = "EUR" } }
"""


def test_deploy_verify_moves_traffic_back_when_a_cross_service_check_fails(local_cloud, tmp_path):
    keys = service("e2ev-keys")
    first = _cli(local_cloud, tmp_path / "a", keys)
    assert (run := first("deploy", "e2ev-keys", "--no-status", *GATE)).code == 0, run.output
    keys_url = json.loads(first("--json", "status", "e2ev-keys").stdout)["data"]["services"][0]["url"]

    def fiat(key_service_url: str) -> str:
        return service("e2ed-unused", module="fiat_gateway").replace("e2ed-unused", "e2ev-fiat").replace(
            'env = { LOG_LEVEL = "info" }', f'env = {{ LOG_LEVEL = "info", API_KEY_SERVICE_URL = "{key_service_url}" }}'
        ) + f"\n[services.e2ev-fiat.database]\n{FIAT_DB}\n"

    good = _cli(local_cloud, tmp_path / "b", keys + fiat(keys_url) + CROSS)
    run = good("deploy", "--all", "--verify", "--no-status", *GATE)
    assert run.code == 0, run.output
    assert "verify: 2 step(s) passed" in run.stderr
    row = json.loads(good("--json", "status", "e2ev-fiat").stdout)["data"]["services"][0]
    old, url = row["serving"], row["url"]

    # The new revision is healthy (its gate passes) but cannot reach api-key-service: deposits answer 503.
    broken = _cli(local_cloud, tmp_path / "c", keys + fiat("http://127.0.0.1:9") + CROSS)
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
    row = json.loads(broken("--json", "status", "e2ev-fiat").stdout)["data"]["services"][0]
    assert row["serving"] == old
