"""The verify engine without a cloud: the template syntax, the config schema of checks, and the runner against
a real HTTP server on loopback (stdlib), with its JUnit report."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployctl import errors
from deployctl.config import Check, parse
from deployctl.errors import ConfigError
from deployctl.verify import junit, template
from deployctl.verify.runner import Runner

SECRET = "pepper-Zq9-unit-secret"
ISSUED = "ak_0123456789ab_unit-issued-key-value-000000"
LONG = "tok_" + "A1b2C3d4E5" * 10  # longer than the 80 characters a value is cut to in a failure message
JUNIT_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "schemas" / "junit-10.xsd"


def test_render_keeps_types_for_a_whole_reference_and_inserts_text_elsewhere():
    saved = {"steps.a.n": 42, "steps.a.s": "x y"}
    resolve = lambda ref: saved[f"steps.{ref.name}.{ref.key}"] if ref.kind == "steps" else "RUN"  # noqa: E731
    assert template.render({"n": "${steps.a.n}", "p": "/q?id=${steps.a.n}&r=${run}", "l": ["$$5"]}, resolve) \
        == {"n": 42, "p": "/q?id=42&r=RUN", "l": ["$5"]}
    assert template.references("${secret:pepper:3} ${steps.a.s}") == [template.Ref("secret", "pepper", "3"),
                                                                      template.Ref("steps", "a", "s")]
    with pytest.raises(template.TemplateError, match="unknown reference"):
        template.references("${__import__('os')}")
    assert template.lookup({"d": [{"id": 7}]}, "d.0.id") == 7
    with pytest.raises(KeyError, match="d.1"):
        template.lookup({"d": [{"id": 7}]}, "d.1.id")


HEAD = """
[environment]
project = "deployctl-local"
region = "us-central1"
[services.svc]
image = "local/svc:dev"
"""


@pytest.mark.parametrize(("checks", "message"), [
    ('[[checks]]\nname="c"\n[[checks.steps]]\nname="a"\nservice="nope"\npath="/"\n', "no service 'nope'"),
    ('[[checks]]\nname="c"\n[[checks.steps]]\nname="a"\nservice="svc"\npath="/${steps.b.x}"\n',
     "does not name a value saved by an earlier step"),
    ('[[checks]]\nname="c"\n[[checks.steps]]\nname="a"\nservice="svc"\npath="/"\nexpect={k={}}\n',
     "give present, equals, matches or type"),
    ('[[checks]]\nname="c"\n[[checks.steps]]\nname="a"\nservice="svc"\npath="/"\nbody={}\n', "unknown key"),
])
def test_config_rejects_bad_checks(checks, message):
    with pytest.raises(ConfigError) as err:
        parse(HEAD + checks, path=Path("x/configs/local.toml"), env="local")
    assert message in err.value.message


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/keys":
            self._send(201, {"key": ISSUED, "id": "0123456789ab", "token": self.headers.get("X-Token")})
        elif self.path == "/long":
            self._send(201, {"token": LONG})
        elif self.path == "/hostile":
            data = b'{"error": "\x1b]0;pwned\x07\x1b[2J\x00 down"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send(200, {"valid": body.get("key") == ISSUED, "n": 3})


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def flow(**issue_overrides) -> Check:
    issue = {"name": "issue", "service": "svc", "method": "POST", "path": "/keys",
             "headers": {"X-Token": "${secret:pepper}"}, "expect_status": 201,
             "expect": {"key": {"matches": "^ak_"}}, "save_secret": {"key": "key"}, **issue_overrides}
    check = {"name": "keys", "steps": [issue, {
        "name": "verify", "service": "svc", "method": "POST", "path": "/verify", "json": {"key": "${steps.issue.key}"},
        "expect": {"valid": {"equals": True}, "n": {"type": "integer"}, "gone": {"present": False}}}]}
    return Check.model_validate(check)


def test_runner_chains_steps_and_passes(server):
    reports = Runner({"svc": server}, lambda sid, v: SECRET).run([flow()])
    assert [(r.step, r.outcome, r.status) for r in reports] == [("issue", "passed", 201), ("verify", "passed", 200)]
    assert reports[1].request[1] == '{"key": "***"}'  # the saved credential is redacted in the request


def test_runner_failure_is_reported_redacted_and_skips_the_rest(server, tmp_path):
    reports = Runner({"svc": server}, lambda sid, v: SECRET).run(
        [flow(expect_status=200, expect={"token": {"equals": "other"}})])
    issue, verify = reports
    assert issue.outcome == "failed" and verify.outcome == "skipped"
    assert issue.failures[0] == "expected HTTP 200, got 201"
    assert issue.failures[1] == 'token: expected "other", got "***"'
    assert any('"key": "***"' in line for line in issue.body)  # first lines of the answer, masked
    path = junit.write(tmp_path / "r.xml", reports, environment="unit")
    text = path.read_text()
    assert SECRET not in text and ISSUED not in text
    root = ET.fromstring(text)
    suite = root.find("testsuite")
    assert (root.get("tests"), root.get("failures"), suite.get("skipped")) == ("2", "1", "1")
    case = suite.find("testcase")
    assert case.get("classname") == "verify.unit.keys" and case.find("failure").get("message") == issue.failures[0]


def test_unreachable_service_and_unreadable_secret_are_errors():
    def no_secret(sid, version):
        raise errors.NotFound(f"secret {sid} not found")

    down = errors.NotFound("service svc is not deployed")
    [issue, _] = Runner({"svc": down}, no_secret).run([flow()])
    assert issue.outcome == "error" and "svc is not deployed" in issue.message
    [issue, _] = Runner({"svc": "http://127.0.0.1:9"}, no_secret).run([flow()])
    assert issue.outcome == "error" and "secret pepper" in issue.message
    [issue, _] = Runner({"svc": "http://127.0.0.1:9"}, lambda s, v: SECRET).run([flow()])
    assert issue.outcome == "error" and issue.message.startswith("request failed")


def step_check(**step) -> Check:
    return Check.model_validate({"name": "c", "steps": [{"name": "s", "service": "svc", **step}]})


def test_a_long_secret_is_masked_before_a_failure_message_cuts_it(server, tmp_path):
    check = step_check(method="POST", path="/long", expect_status=201, save_secret={"t": "token"},
                       expect={"token": {"matches": "^nope"}})
    [report] = Runner({"svc": server}, lambda sid, v: SECRET).run([check])
    assert report.outcome == "failed" and report.failures == ['token: "***" does not match /^nope/']
    text = junit.write(tmp_path / "r.xml", [report], environment="unit").read_text()
    everything = text + "".join(report.failures + report.body + report.request)
    assert LONG[:20] not in everything  # not even a prefix of it


def test_control_characters_in_an_answer_never_reach_the_report_raw(server, tmp_path):
    import xmlschema

    [report] = Runner({"svc": server}, lambda sid, v: SECRET).run([step_check(method="POST", path="/hostile")])
    assert report.outcome == "failed" and report.status == 500
    shown = "\n".join(report.body)
    assert "\x1b" not in shown and "\x00" not in shown and "\\x1b]0;pwned\\x07" in shown
    text = junit.write(tmp_path / "r.xml", [report], environment="unit").read_text()
    xmlschema.XMLSchema(str(JUNIT_SCHEMA)).validate(text)  # well-formed, and valid against junit-10.xsd
    assert "\\x1b[2J" in text and "\x1b" not in text
