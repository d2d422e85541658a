"""Trust under faults: the emulator injects transient errors (UNAVAILABLE / RESOURCE_EXHAUSTED on 30% of RPCs,
GetOperation included) and latency, and deploy, migrate, status and doctor still succeed, saying with -v that
they retried; a PERMISSION_DENIED names the resource, the permission and the role; a NOT_FOUND names the config
entry that refers to the missing resource. One local cloud of this module's own (faults.json is per state dir).
"""

from __future__ import annotations

import json
import os

import pytest

from .conftest import Cli

PROJECT = "deployctl-local"
LOCATION = f"projects/{PROJECT}/locations/us-central1"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    cli = Cli(tmp_path_factory.mktemp("faults"))
    up = cli("local", "up")
    assert up.code == 0, up.output
    yield cli
    cli("--yes", "local", "down", "--purge")


def set_faults(cli: Cli, faults: dict | None) -> None:
    path = cli.state_dir / "faults.json"
    if faults is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(faults))


def transient(seed: int) -> dict:
    return {"error_rate": 0.3, "error_codes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"], "latency_ms": {"*": 20},
            "seed": seed}


def test_transient_faults_are_retried_within_the_deadline(cloud):
    set_faults(cloud, transient(7))
    try:
        retried = 0
        for argv in (["deploy", "--all"], ["migrate", "--all"], ["status"], ["migrate", "status"],
                     ["doctor", "fiat-gateway"]):
            run = cloud("-v", *argv, timeout=150)
            assert run.code == 0, (argv, run.output)
            assert "Traceback" not in run.output
            if "retrying after a transient error: injected fault" in run.stderr:
                retried += 1
                # the summary is the last line of stderr in verbose mode
                assert run.stderr.rstrip().splitlines()[-1].endswith("retried"), (argv, run.stderr[-500:])
        assert retried >= 3, "at 30% injected errors most commands must have retried something"
        st = json.loads(cloud("--json", "status").stdout)
        assert st["ok"] is True
        quiet = cloud("secrets", "list")
        assert quiet.code == 0 and "retrying" not in quiet.stderr and "retried" not in quiet.stderr
    finally:
        set_faults(cloud, None)


def test_permission_denied_names_resource_permission_and_role(cloud):
    secret = f"projects/{PROJECT}/secrets/fiat-gateway-db-password"
    service = f"{LOCATION}/services/api-key-service"
    job = f"{LOCATION}/jobs/cross-chain-integration-migrate"
    set_faults(cloud, {"permission_denied": [secret, service, job]})
    try:
        cases = [
            (["secrets", "get", "fiat-gateway-db-password"], secret, "secretmanager.versions.access",
             "roles/secretmanager.secretAccessor"),
            (["dsn", "fiat-gateway"], secret, "secretmanager.versions.access", "roles/secretmanager.secretAccessor"),
            (["deploy", "api-key-service"], service, "run.services.get", "roles/run.developer"),
            (["migrate", "cross-chain-integration"], job, "run.jobs.get", "roles/run.developer"),
        ]
        for argv, resource, permission, role in cases:
            run = cloud(*argv)
            assert run.code == 1, (argv, run.output)
            assert resource in run.stderr and permission in run.stderr and role in run.stderr, (argv, run.stderr)
            assert "Traceback" not in run.output
        js = cloud("--json", "dsn", "fiat-gateway")
        err = json.loads(js.stdout)["errors"][0]
        assert err["code"] == "permission-denied" and "services.fiat-gateway.database.password_secret" in err["message"]
    finally:
        set_faults(cloud, None)


def test_not_found_names_the_config_entry(cloud):
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore

    endpoint = json.loads((cloud.state_dir / "emulator.json").read_text())
    clients = Clients(emulator_host=endpoint["grpc"])
    try:
        SecretStore(clients, PROJECT).delete_secret("api-key-pepper")
    finally:
        clients.close()
    try:
        run = cloud("deploy", "api-key-service")
        assert run.code == 1, run.output
        assert "services.api-key-service.secrets.API_KEY_PEPPER" in run.stderr, run.stderr
        assert "api-key-pepper" in run.stderr
        doctor = cloud("doctor", "api-key-service")
        assert doctor.code == 1, doctor.output
        assert "services.api-key-service.secrets.API_KEY_PEPPER" in doctor.output, doctor.output
    finally:
        assert cloud("secrets", "set", "api-key-pepper", input=os.urandom(16).hex()).code == 0
