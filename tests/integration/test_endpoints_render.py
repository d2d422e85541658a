"""`deployctl endpoints render` against the local cloud: addresses come from the deployed Cloud Run services."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployctl.cli.main import app
from deployctl.cloud.run import ContainerSpec, RunServices

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-central1"


@pytest.fixture()
def env_dir(tmp_path, emulator, monkeypatch):
    """A config of its own (a project no other test uses) pointed at the session's emulator."""
    project = f"endpoints-{secrets.token_hex(3)}"
    (tmp_path / "test.toml").write_text(f'[environment]\nproject = "{project}"\nregion = "{REGION}"\n')
    monkeypatch.setenv("DEPLOYCTL_EMULATOR_HOST", emulator.address)
    return tmp_path, project


def test_render_uses_deployed_urls_and_refuses_undeployed_services(clients, env_dir, tmp_path):
    config_dir, project = env_dir
    run = RunServices(clients, project, REGION)
    svc = run.deploy("fiat-gateway", ContainerSpec(image="local/app", command=["python"],
                                                   args=["tests/fixtures/run_app.py"], startup_path="/health",
                                                   probe_period=1))
    try:
        base = ["--config-dir", str(config_dir), "--env", "test", "endpoints", "render"]
        out = CliRunner().invoke(app, base + [str(ROOT / "tests/fixtures/openapi/valid_v2.yaml")])
        assert out.exit_code == 0, out.output
        assert f'address: "{svc.uri.rstrip("/")}/api"' in out.stdout
        assert out.stdout.startswith("# A minimal spec")  # stdout carries the spec alone

        refused = CliRunner().invoke(app, ["--json"] + base + [str(ROOT / "configs/openapi/gateway.yaml"),
                                                                "--output", str(tmp_path / "g.yaml")])
        assert refused.exit_code == 1
        [err] = json.loads(refused.stdout)["errors"]
        assert err["code"] == "not-deployed"
        assert "api-key-service, cross-chain-integration" in err["message"] and "fiat-gateway" not in err["message"]
        assert not (tmp_path / "g.yaml").exists()
    finally:
        run.delete("fiat-gateway", deadline=30)
