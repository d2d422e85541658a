"""`deployctl endpoints render` against the local cloud: addresses come from the deployed Cloud Run services, and
every route of the rendered gateway spec reaches a path its service serves."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployctl.cli.main import app
from deployctl.cloud.run import ContainerSpec, RunServices
from deployctl.endpoints import rules
from deployctl.endpoints.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-central1"
SERVICES = {"fiat-gateway": "fiat_gateway", "cross-chain-integration": "cross_chain_integration",
            "api-key-service": "api_key_service"}


@pytest.fixture()
def env_dir(tmp_path, emulator, monkeypatch):
    """A config of its own (a project no other test uses, the three services) pointed at the session's emulator."""
    project = f"endpoints-{secrets.token_hex(3)}"
    services = "".join(f'\n[services.{name}]\nimage = "local/{name}:dev"\ncommand = ["python", "-m", "services.{mod}"]\n'
                       for name, mod in SERVICES.items())
    (tmp_path / "test.toml").write_text(f'[environment]\nproject = "{project}"\nregion = "{REGION}"\n{services}')
    monkeypatch.setenv("DEPLOYCTL_EMULATOR_HOST", emulator.address)
    return tmp_path, project


def render_cli(config_dir: Path, *args: str):
    return CliRunner().invoke(app, ["--config-dir", str(config_dir), "--env", "test", *args])


def test_render_uses_deployed_urls_and_refuses_undeployed_services(clients, env_dir, tmp_path):
    config_dir, project = env_dir
    run = RunServices(clients, project, REGION)
    svc = run.deploy("fiat-gateway", ContainerSpec(image="local/app", command=["python"],
                                                   args=["tests/fixtures/run_app.py"], startup_path="/health",
                                                   probe_period=1))
    try:
        out = render_cli(config_dir, "endpoints", "render", str(ROOT / "tests/fixtures/openapi/valid_v2.yaml"))
        assert out.exit_code == 0, out.output
        assert f'address: "{svc.uri.rstrip("/")}/api"' in out.stdout
        assert out.stdout.startswith("# A minimal spec")  # stdout carries the spec alone

        refused = render_cli(config_dir, "--json", "endpoints", "render", str(ROOT / "configs/openapi/gateway.yaml"),
                             "--output", str(tmp_path / "g.yaml"))
        assert refused.exit_code == 1
        [err] = json.loads(refused.stdout)["errors"]
        assert err["code"] == "not-deployed"
        assert "api-key-service, cross-chain-integration" in err["message"] and "fiat-gateway" not in err["message"]
        assert not (tmp_path / "g.yaml").exists()
    finally:
        run.delete("fiat-gateway", deadline=30)


def test_every_rendered_route_reaches_its_service(clients, env_dir, tmp_path):
    """The three real services deployed; the project's gateway spec rendered against them; then the URL the
    gateway would call for each route (CONSTANT_ADDRESS: the address; APPEND_PATH_TO_ADDRESS: the address plus
    the request path) answers that route's method, never 404/405. (Without databases or keys configured the
    answers are 422/503: the route exists, the service answered.)"""
    config_dir, project = env_dir
    run = RunServices(clients, project, REGION)
    deployed = {}
    try:
        for name, module in SERVICES.items():
            deployed[name] = run.deploy(name, ContainerSpec(image=f"local/{name}", command=["python", "-m",
                                                                                         f"services.{module}"],
                                                            startup_path="/health", probe_period=1))
        out = tmp_path / "gateway.rendered.yaml"
        res = render_cli(config_dir, "endpoints", "render", str(ROOT / "configs/openapi/gateway.yaml"), "-o", str(out))
        assert res.exit_code == 0, res.output
        spec = parse_spec(out.read_text(), out)
        assert spec.data["host"] == f"story-gateway.endpoints.{project}.cloud.goog"
        routes = list(rules.operations(spec.data))
        assert len(routes) >= 6
        for (_, route, method), op in routes:
            backend = op["x-google-backend"]
            url = backend["address"]  # an operation's backend defaults to CONSTANT_ADDRESS
            if backend.get("path_translation") == "APPEND_PATH_TO_ADDRESS":
                url = url.rstrip("/") + spec.data.get("basePath", "").rstrip("/") + route
            assert any(url.startswith(s.uri.rstrip("/")) for s in deployed.values()), url
            status = _request(method, url)
            assert status not in (404, 405), f"{method.upper()} {route} -> {url} answered {status}"
    finally:
        for name in deployed:
            run.delete(name, deadline=30)


def _request(method: str, url: str) -> int:
    body = b"{}" if method in ("post", "put", "patch") else None
    request = urllib.request.Request(url, data=body, method=method.upper(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
