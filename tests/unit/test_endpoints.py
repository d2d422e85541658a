"""deployctl endpoints lint|render: the rules on fixture specs, through the functions and the CLI in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployctl.cli.main import app
from deployctl.commands import endpoints as cmd
from deployctl.context import Context
from deployctl.endpoints import render as render_mod
from deployctl.endpoints import rules
from deployctl.endpoints.load import SpecError, load_spec, parse_spec
from deployctl.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "openapi"
GATEWAY = ROOT / "configs" / "openapi" / "gateway.yaml"
URLS = {"fiat-gateway": "https://fiat-gateway-abc-uc.a.run.app/",
        "cross-chain-integration": "https://cross-chain-integration-abc-uc.a.run.app",
        "api-key-service": "https://api-key-service-abc-uc.a.run.app"}


def lint(name: str | Path, target: str = "endpoints", config_id: str | None = None) -> cmd.LintResult:
    path = name if isinstance(name, Path) else FIXTURES / name
    return cmd.lint(Context(), path, target, config_id)


def by_rule(result: cmd.LintResult, rule: str) -> list:
    return [f for f in result.findings if f.rule == rule]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


# --- lint: the functions -------------------------------------------------------------------------------

@pytest.mark.parametrize("target", rules.TARGETS)
def test_valid_swagger2_spec_passes_both_targets(target):
    result = lint("valid_v2.yaml", target)
    assert result.exit_code() == ExitCode.OK
    assert result.counts["error"] == 0 and result.counts["warning"] == 0
    assert result.version == "2.0"
    # the ${fiat-gateway}/api address is noted once, as something render fills
    [note] = by_rule(result, "backend-placeholder")
    assert note.severity == "info" and "fiat-gateway" in note.message
    assert note.path == "paths./v1/deposits.get.x-google-backend.address" and note.line == 28


@pytest.mark.parametrize("target", rules.TARGETS)
def test_the_projects_gateway_spec_lints_clean(target):
    result = lint(GATEWAY, target)
    assert result.exit_code() == ExitCode.OK, result.findings
    spec = load_spec(GATEWAY)
    routes = {(at[1], at[2]) for at, _ in rules.operations(spec.data)}
    assert routes == {("/v1/deposits", "post"), ("/v1/deposits", "get"), ("/v1/transfers", "post"),
                      ("/v1/transfers", "get"), ("/v1/keys", "post"), ("/v1/keys/verify", "post")}
    assert render_mod.services(spec) == ["api-key-service", "cross-chain-integration", "fiat-gateway"]


def test_openapi3_for_endpoints_without_its_extensions_is_an_error_that_says_what_to_add():
    """Cloud Endpoints takes OpenAPI 3.x since November 2025 (the issue's "2.0 only" is outdated): a 3.0 spec
    without the server that names the Endpoints service, and without x-google-api-management backends, fails
    with a fix for each; the summary says how to move to API Gateway instead."""
    result = lint("openapi3.yaml", "endpoints")
    assert result.exit_code() == ExitCode.FAILED
    [server] = by_rule(result, "endpoints-v3-server")
    assert server.path == "servers" and "x-google-endpoint" in server.fix and "${project}" in server.fix
    [backends] = by_rule(result, "gateway-v3-backends")
    assert "x-google-api-management" in backends.fix and "x-google-backend: <name>" in backends.fix
    assert not by_rule(result, "endpoints-swagger2-only")
    steps = " | ".join(result.conversion.steps)
    assert result.conversion.target == "api-gateway" and "x-google-api-management" in steps


def test_openapi31_passes_both_targets_with_the_endpoint_server_and_backends():
    for target in rules.TARGETS:
        result = lint("openapi3_endpoints.yaml", target)
        assert result.exit_code() == ExitCode.OK, (target, result.findings)
        assert result.version == "3.1.0"
    # the X-API-Key header is the x-api-key header: HTTP header names are case-insensitive
    assert not by_rule(lint("openapi3_endpoints.yaml"), "api-key-definition")


@pytest.mark.parametrize("servers, problem", [
    ("servers:\n  - url: https://deposits.example.com\n", "no server has it"),
    ("servers:\n  - url: /v1\n    x-google-endpoint: {}\n", "has no host"),
    ("servers:\n  - url: https://a.endpoints.p.cloud.goog\n    x-google-endpoint: {}\n"
     "  - url: https://b.endpoints.p.cloud.goog\n    x-google-endpoint: {}\n", "takes exactly one"),
])
def test_endpoints_v3_needs_exactly_one_server_with_a_host(tmp_path, servers, problem):
    text = (FIXTURES / "openapi3_endpoints.yaml").read_text()
    start, end = text.index("servers:"), text.index("x-google-api-management:")
    (tmp_path / "s.yaml").write_text(text[:start] + servers + text[end:])
    [err] = by_rule(lint(tmp_path / "s.yaml", "endpoints"), "endpoints-v3-server")
    assert problem in err.message
    assert not by_rule(lint(tmp_path / "s.yaml", "api-gateway"), "endpoints-v3-server")  # the gateway ignores it


def test_endpoints_v3_refuses_x_google_allow(tmp_path):
    text = (FIXTURES / "openapi3_endpoints.yaml").read_text().replace("x-google-backend: fiat\n",
                                                                      "x-google-backend: fiat\nx-google-allow: all\n")
    (tmp_path / "s.yaml").write_text(text)
    assert by_rule(lint(tmp_path / "s.yaml", "endpoints"), "endpoints-v3-allow")


def test_openapi3_for_api_gateway_needs_backends():
    result = lint("openapi3.yaml", "api-gateway")
    assert result.exit_code() == ExitCode.FAILED
    [err] = by_rule(result, "gateway-v3-backends")
    assert "x-google-api-management" in err.fix


def test_openapi3_with_api_management_backends_passes_api_gateway():
    result = lint("openapi3_backends.yaml", "api-gateway")
    assert result.exit_code() == ExitCode.OK, result.findings
    assert result.conversion.target == "endpoints"
    # for Endpoints the same backends serve; what it lacks is the server naming the Endpoints service
    steps = " | ".join(result.conversion.steps)
    assert "x-google-endpoint" in steps and "x-google-api-management" not in steps


def test_openapi31_for_api_gateway(tmp_path):
    text = (FIXTURES / "openapi3_backends.yaml").read_text().replace("openapi: 3.0.3", "openapi: 3.1.0")
    (tmp_path / "s.yaml").write_text(text)
    result = lint(tmp_path / "s.yaml", "api-gateway")
    assert result.exit_code() == ExitCode.OK, result.findings
    assert not by_rule(result, "gateway-openapi-version")


def test_openapi3_backend_names_must_exist(tmp_path):
    # the operation-level reference (indented deeper than the top-level one) names a backend that is not there
    text = (FIXTURES / "openapi3_backends.yaml").read_text().replace("      x-google-backend: fiat",
                                                                     "      x-google-backend: fiet")
    (tmp_path / "s.yaml").write_text(text)
    result = lint(tmp_path / "s.yaml", "api-gateway")
    [err] = by_rule(result, "backend-unknown")
    assert err.path == "paths./v1/deposits.post.x-google-backend" and "fiat" in err.fix


def test_missing_backend():
    result = lint("missing_backend.yaml")
    assert result.exit_code() == ExitCode.FAILED
    [err] = by_rule(result, "backend-missing")
    assert err.path == "paths./v1/deposits.get" and err.line == 19
    assert "x-google-backend" in err.fix


def test_duplicate_operation_id():
    result = lint("duplicate_operation_id.yaml", "api-gateway")
    assert result.exit_code() == ExitCode.FAILED
    [err] = by_rule(result, "operation-id-unique")
    assert err.path == "paths./v1/deposits.get.operationId" and err.line == 19
    assert "POST /v1/deposits" in err.message
    assert not by_rule(result, "openapi-schema")  # the validator's own duplicate report is folded into ours


def test_wrong_api_key_definition():
    result = lint("bad_api_key.yaml")
    [err] = by_rule(result, "api-key-definition")
    assert err.path == "securityDefinitions.api_key" and err.line == 7
    assert "name: key, in: query" in err.fix and "x-api-key" in err.fix
    assert result.exit_code() == ExitCode.FAILED


@pytest.mark.parametrize("target", rules.TARGETS)
def test_a_path_template_that_is_not_a_whole_segment_is_an_error(target):
    result = lint("partial_path_template.yaml", target)
    [err] = by_rule(result, "path-template-segment")
    assert err.path == "paths./v1/keys/verify.{format}" and "verify.{format}" in err.message
    assert result.exit_code() == ExitCode.FAILED and not by_rule(result, "openapi-schema")  # /{id}: whole
    assert [bool(rules.WHOLE_SEGMENT.match(seg)) for seg in ("{id}", "{path=**}", "prefix_{id}_suffix", "{a}{b}")] == [
        True, True, False, False]


@pytest.mark.parametrize("target", rules.TARGETS)
def test_an_api_key_as_one_of_several_alternatives_is_an_error(target):
    result = lint("api_key_or.yaml", target)
    [err] = by_rule(result, "security-api-key-or")  # the operation's AND of both is fine
    assert err.path == "security" and "api_key" in err.message and "{api_key: [], <other>: []}" in err.fix
    assert result.exit_code() == ExitCode.FAILED


@pytest.mark.parametrize("target", rules.TARGETS)
def test_a_v3_backend_without_jwt_audience_or_disable_auth_is_a_warning(target):
    name = "openapi3_backend_no_auth.yaml"
    result = lint(name, target)
    [warn] = by_rule(result, "backend-auth")
    assert warn.severity == "warning" and warn.path == "x-google-api-management.backends.fiat"
    assert "jwtAudience" in warn.fix and "disableAuth" in warn.fix
    if target == "api-gateway":
        assert result.exit_code() == ExitCode.DEGRADED


def test_bad_config_id_from_option():
    result = lint("valid_v2.yaml", "api-gateway", config_id="Gateway_V1")
    [err] = by_rule(result, "config-id")
    assert err.path == "--config-id" and "Gateway_V1" in err.message
    assert result.config_id_source == "--config-id"
    assert result.exit_code() == ExitCode.FAILED


@pytest.mark.parametrize("config_id", ["2026-gw", "gw", "a" * 63, "gateway-v1"])
def test_config_ids_google_accepts(config_id):
    """At most 63 lowercase letters, digits and hyphens, not starting with a hyphen: a leading digit is fine."""
    assert not by_rule(lint("valid_v2.yaml", "api-gateway", config_id=config_id), "config-id")


@pytest.mark.parametrize("config_id", ["-gw", "Gw", "gw_1", "a" * 64, "gw.1"])
def test_config_ids_google_refuses(config_id):
    [err] = by_rule(lint("valid_v2.yaml", "api-gateway", config_id=config_id), "config-id")
    assert err.severity == "error"


def test_a_config_id_made_from_the_title_is_only_a_note(tmp_path):
    """The config id is a gcloud argument, not part of the spec: a long title does not fail a valid spec."""
    text = (FIXTURES / "valid_v2.yaml").read_text().replace("title: Deposits API", f"title: {'Story ' * 12}")
    (tmp_path / "s.yaml").write_text(text)
    result = lint(tmp_path / "s.yaml", "api-gateway")
    [note] = by_rule(result, "config-id")
    assert note.severity == "info" and note.path == "info.title" and "at most 63" in note.message
    assert result.config_id_source == "info.title" and result.exit_code() == ExitCode.OK
    # Endpoints has no config id of its own: the title is not held against it there
    assert not by_rule(lint(tmp_path / "s.yaml", "endpoints"), "config-id")


def test_good_config_id_is_the_title_slug():
    assert lint("valid_v2.yaml", "api-gateway").config_id == "deposits-api"


def test_warnings_only_exit_3(tmp_path):
    text = (FIXTURES / "valid_v2.yaml").read_text().replace("https://fiat-gateway-abc123", "http://fiat-gateway-abc123")
    (tmp_path / "s.yaml").write_text(text)
    result = lint(tmp_path / "s.yaml")
    assert [f.rule for f in result.findings if f.severity != "info"] == ["backend-insecure"]
    assert result.exit_code() == ExitCode.DEGRADED and result.ok


def test_schema_errors_carry_json_paths_and_lines(tmp_path):
    (tmp_path / "s.yaml").write_text((FIXTURES / "valid_v2.yaml").read_text().replace('version: "1.0.0"',
                                                                                     "version: 1.0"))
    [err] = by_rule(lint(tmp_path / "s.yaml"), "openapi-schema")
    assert err.path == "info.version" and err.line == 5 and "string" in err.message


def test_host_is_required_for_endpoints_only(tmp_path):
    text = (FIXTURES / "valid_v2.yaml").read_text().replace("host: deposits.endpoints.acme-dev.cloud.goog\n", "")
    (tmp_path / "s.yaml").write_text(text)
    assert by_rule(lint(tmp_path / "s.yaml", "endpoints"), "host-required")
    assert lint(tmp_path / "s.yaml", "api-gateway").exit_code() == ExitCode.OK


# --- loading ---------------------------------------------------------------------------------------------

def test_yaml_syntax_error_names_the_line():
    with pytest.raises(SpecError) as e:
        load_spec(FIXTURES / "syntax_error.yaml")
    assert "syntax_error.yaml:9:" in e.value.message and e.value.exit_code == ExitCode.USAGE
    assert e.value.details["line"] == 9 and "line 9" in e.value.hint


def test_json_specs_and_their_syntax_errors(tmp_path):
    data = parse_spec((FIXTURES / "valid_v2.yaml").read_text(), Path("x.yaml")).data
    (tmp_path / "s.json").write_text(json.dumps(data, indent=2))
    assert lint(tmp_path / "s.json").exit_code() == ExitCode.OK
    (tmp_path / "bad.json").write_text('{\n  "swagger": "2.0",\n  "info": {,}\n}\n')
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "bad.json")
    assert "bad.json:3:" in e.value.message


def test_duplicate_yaml_keys_are_refused():
    with pytest.raises(SpecError) as e:
        parse_spec("swagger: '2.0'\npaths:\n  /a: {}\n  /a: {}\n", Path("s.yaml"))
    assert "s.yaml:4" in e.value.message and "/a" in e.value.message


def test_integer_keys_and_dates_stay_strings():
    spec = parse_spec("a:\n  200: {d: 2026-01-01}\n", Path("s.yaml"))
    assert spec.data == {"a": {"200": {"d": "2026-01-01"}}}


# --- render ----------------------------------------------------------------------------------------------

def test_render_fills_addresses_and_keeps_the_rest(tmp_path):
    out = tmp_path / "rendered.yaml"
    result = cmd.render(Context(), FIXTURES / "valid_v2.yaml", out, urls=URLS)
    text = out.read_text()
    assert '"https://fiat-gateway-abc-uc.a.run.app/api"' in text  # trailing slash of the URL not doubled
    assert text.startswith("# A minimal spec")  # comments survive
    original = (FIXTURES / "valid_v2.yaml").read_text()
    assert text.replace('"https://fiat-gateway-abc-uc.a.run.app/api"', "${fiat-gateway}/api") == original
    assert [(f.path, f.service, f.line) for f in result.filled] == [
        ("paths./v1/deposits.get.x-google-backend.address", "fiat-gateway", 28)]
    assert result.text is None and result.output == str(out)


def test_render_gateway_spec_then_it_lints_without_placeholders(tmp_path):
    out = tmp_path / "gateway.yaml"
    result = cmd.render(Context(env="dev"), GATEWAY, out, urls=URLS)
    backends = [f for f in result.filled if f.service != "project"]
    assert len(backends) == 6 and {f.service for f in backends} == set(URLS)
    rendered = load_spec(out)
    addresses = dict(rules.address_sites(rendered.data))
    # each route goes to the path its service serves (the services have no /v1 prefix)
    assert addresses[("paths", "/v1/transfers", "post", "x-google-backend", "address")] == URLS[
        "cross-chain-integration"] + "/transfers"
    assert addresses[("paths", "/v1/keys/verify", "post", "x-google-backend", "address")] == URLS[
        "api-key-service"] + "/keys/verify"
    # the Endpoints service name is the environment's project (configs/dev.toml), not the local one
    dev = Context(env="dev").project
    assert rendered.data["host"] == f"story-gateway.endpoints.{dev}.cloud.goog" and result.warnings == []
    after = lint(out)
    assert after.exit_code() == ExitCode.OK and not by_rule(after, "backend-placeholder")


def test_the_gateway_spec_declares_what_the_services_return():
    """List routes return an object with the list inside, as the services do; fiat-gateway's own key header is
    declared beside the gateway's ?key=."""
    data = load_spec(GATEWAY).data
    for route, key in (("/v1/deposits", "deposits"), ("/v1/transfers", "transfers")):
        schema = data["paths"][route]["get"]["responses"]["200"]["schema"]
        assert schema["type"] == "object" and schema["properties"][key]["type"] == "array"
    assert data["parameters"]["ServiceKey"]["name"] == "X-API-Key"
    for route in ("/v1/deposits", "/v1/transfers"):  # fiat-gateway's routes (it also lists transfers)
        assert {"$ref": "#/parameters/ServiceKey"} in data["paths"][route]["get"]["parameters"]


def test_render_warns_when_the_host_names_another_project():
    local = cmd.render(Context(), FIXTURES / "valid_v2.yaml", None, urls=URLS)
    [warning] = local.warnings  # valid_v2.yaml's host is written for acme-dev
    assert "acme-dev" in warning and Context().project in warning
    assert cmd.render(Context(env="dev"), FIXTURES / "valid_v2.yaml", None, urls=URLS).warnings == []


def test_render_openapi3_backends():
    text, filled = render_mod.render(load_spec(FIXTURES / "openapi3_backends.yaml"), URLS)
    assert [f.path for f in filled] == ["x-google-api-management.backends.fiat.address"]
    assert "address: \"https://fiat-gateway-abc-uc.a.run.app\"" in text


def test_render_refuses_when_a_service_is_not_deployed():
    urls = {k: v for k, v in URLS.items() if k != "api-key-service"}
    with pytest.raises(render_mod.NotDeployed) as e:
        cmd.render(Context(env="dev"), GATEWAY, None, urls=urls)
    assert "api-key-service" in e.value.message and "fiat-gateway" not in e.value.message
    assert e.value.exit_code == ExitCode.FAILED and "deploy api-key-service" in e.value.hint


def test_render_through_a_yaml_merge_key_falls_back_to_a_dump():
    text = ("swagger: '2.0'\nx-base: &base\n  address: ${fiat-gateway}\npaths:\n  /a:\n    get:\n"
            "      x-google-backend:\n        <<: *base\n        deadline: 5\n      responses: {'200': {description: ok}}\n")
    rendered, filled = render_mod.render(parse_spec(text, Path("s.yaml")), URLS)
    again = parse_spec(rendered, Path("s.yaml"))
    assert again.data["paths"]["/a"]["get"]["x-google-backend"]["address"] == URLS["fiat-gateway"].rstrip("/")
    assert len(filled) == 1


# --- the CLI, in-process -------------------------------------------------------------------------------

def test_cli_lint_json_envelope_and_exit_codes():
    ok = cli("--json", "endpoints", "lint", str(FIXTURES / "valid_v2.yaml"))
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["schema"] == "deployctl/endpoints/lint/v1" and doc["ok"] is True and doc["errors"] == []

    bad = cli("--json", "endpoints", "lint", str(FIXTURES / "openapi3.yaml"), "--target", "endpoints")
    assert bad.exit_code == 1
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False
    assert sorted(e["code"] for e in doc["errors"]) == ["endpoints-v3-server", "gateway-v3-backends"]
    assert doc["data"]["conversion"]["target"] == "api-gateway"

    passes = cli("--json", "endpoints", "lint", str(FIXTURES / "openapi3_backends.yaml"), "--target", "api-gateway")
    assert passes.exit_code == 0 and json.loads(passes.stdout)["ok"] is True


def test_cli_lint_warnings_exit_3_and_people_see_the_findings(tmp_path):
    text = (FIXTURES / "valid_v2.yaml").read_text().replace("https://fiat-gateway-abc123", "http://fiat-gateway-abc123")
    (tmp_path / "s.yaml").write_text(text)
    res = cli("--no-color", "endpoints", "lint", str(tmp_path / "s.yaml"))
    assert res.exit_code == 3
    assert "backend-insecure" in res.stdout and "0 errors, 1 warning" in res.stdout


def test_cli_config_id_option():
    res = cli("--json", "endpoints", "lint", str(FIXTURES / "valid_v2.yaml"), "--target", "api-gateway",
              "--config-id", "-bad")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["data"]["config_id_source"] == "--config-id"
    assert doc["errors"][0]["code"] == "config-id" and doc["errors"][0]["message"].startswith("--config-id:")


def test_cli_yaml_syntax_error_exit_2():
    res = cli("--json", "endpoints", "lint", str(FIXTURES / "syntax_error.yaml"))
    assert res.exit_code == 2
    [err] = json.loads(res.stdout)["errors"]
    assert err["code"] == "spec-syntax" and ":9:" in err["message"] and "line 9" in err["hint"]
    human = cli("endpoints", "lint", str(FIXTURES / "syntax_error.yaml"))
    assert human.exit_code == 2 and "YAML syntax error" in human.stderr


def test_cli_bad_target_and_missing_file_are_usage_errors():
    assert cli("endpoints", "lint", str(FIXTURES / "valid_v2.yaml"), "--target", "esp").exit_code == 2
    res = cli("--json", "endpoints", "lint", str(FIXTURES / "nope.yaml"))
    assert res.exit_code == 2 and json.loads(res.stdout)["errors"][0]["code"] == "spec-missing"


def test_help_does_not_import_the_heavy_libraries():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom deployctl.cli.main import app\n"
            "r = CliRunner().invoke(app, ['endpoints', '--help'])\nassert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in ('yaml', 'openapi_spec_validator') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- nice-to-haves: no network from lint, placeholders checked against the config, other security schemes -------

def test_lint_never_fetches_a_remote_ref(tmp_path):
    """A $ref to a host that accepts and never answers: lint does not connect; the finding says to inline it."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    text = (FIXTURES / "valid_v2.yaml").read_text().replace(
        "          description: ok\n    get:",
        f"          description: ok\n          schema:\n            $ref: 'http://127.0.0.1:{port}/s.json#/D'\n"
        "    get:")
    (tmp_path / "s.yaml").write_text(text)
    try:
        start = time.monotonic()
        result = lint(tmp_path / "s.yaml")
        assert time.monotonic() - start < 5
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    [err] = by_rule(result, "ref-external")
    assert "does not fetch" in err.message and "inline" in err.fix


def test_placeholders_are_checked_against_the_configured_services(tmp_path):
    text = (FIXTURES / "valid_v2.yaml").read_text().replace("${fiat-gateway}", "${fiat-gatewy}")
    (tmp_path / "s.yaml").write_text(text)
    [warning] = by_rule(lint(tmp_path / "s.yaml"), "backend-unknown-service")
    assert "fiat-gatewy" in warning.message and "fiat-gateway" in warning.fix
    with pytest.raises(render_mod.UnknownService) as e:
        cmd.render(Context(), tmp_path / "s.yaml", None, urls=URLS)
    assert e.value.exit_code == ExitCode.USAGE and "fiat-gatewy" in e.value.message
    assert "deploy" not in e.value.hint and "fiat-gateway" in e.value.hint


def test_no_api_key_is_a_warning_when_another_scheme_authenticates(tmp_path):
    text = (FIXTURES / "valid_v2.yaml").read_text().replace(
        "  api_key:\n    type: apiKey\n    name: key\n    in: query\n",
        "  google_id_token:\n    type: oauth2\n    flow: implicit\n    authorizationUrl: ''\n"
        "    x-google-issuer: https://accounts.google.com\n").replace("  - api_key: []", "  - google_id_token: []")
    (tmp_path / "s.yaml").write_text(text)
    result = lint(tmp_path / "s.yaml")
    [finding] = by_rule(result, "api-key-missing")
    assert finding.severity == "warning" and "google_id_token" in finding.message
    assert result.exit_code() == ExitCode.DEGRADED


def test_an_operation_backend_without_path_translation_is_a_warning(tmp_path):
    text = (FIXTURES / "valid_v2.yaml").read_text().replace("        path_translation: CONSTANT_ADDRESS\n", "")
    (tmp_path / "s.yaml").write_text(text)
    [warning] = by_rule(lint(tmp_path / "s.yaml"), "backend-path-translation-default")
    assert warning.path == "paths./v1/deposits.get.x-google-backend" and "CONSTANT_ADDRESS" in warning.message
