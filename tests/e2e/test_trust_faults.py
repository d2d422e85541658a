"""Trust under faults: the emulator injects transient errors (UNAVAILABLE / RESOURCE_EXHAUSTED on 30% of RPCs,
GetOperation included) and latency, and deploy, migrate, status and doctor still succeed within their deadline,
saying with -v that they retried; a change whose reply is lost after the server made it is not made twice; a
PERMISSION_DENIED names the resource, the permission and the role in one message; a NOT_FOUND names the config
entry that refers to the missing resource. One local cloud of this module's own (faults.json is per state dir).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from deployctl.cloud.policy import DEFAULT

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


# What each command may take under the faults: a deploy or migrate waits on rollouts and job executions
# (deploy_timeout, 300 s), the read-only commands are a few calls, each bounded by the call deadline.
BUDGET = {"deploy": 300.0, "migrate": 300.0, "status": DEFAULT.deadline, "doctor": DEFAULT.deadline}


def one_error(run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("error: ")]


def test_transient_faults_are_retried_within_the_deadline(cloud):
    set_faults(cloud, transient(7))
    try:
        retried = 0
        for argv in (["deploy", "--all"], ["migrate", "--all"], ["status"], ["migrate", "status"],
                     ["doctor", "fiat-gateway"]):
            started = time.monotonic()
            run = cloud("-v", *argv, timeout=350)
            took = time.monotonic() - started
            assert run.code == 0, (argv, run.output)
            budget = BUDGET["status" if argv[:2] == ["migrate", "status"] else argv[0]]
            assert took < budget, f"{argv} took {took:.1f}s under faults (deadline {budget:g}s)"
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
            (["deploy", "api-key-service"], service, "run.services.get", "roles/run.viewer"),
            (["migrate", "cross-chain-integration"], job, "run.jobs.get", "roles/run.viewer"),
        ]
        for argv, resource, permission, role in cases:
            run = cloud(*argv)
            assert run.code == 1, (argv, run.output)
            assert resource in run.stderr and permission in run.stderr and role in run.stderr, (argv, run.stderr)
            assert run.stderr.count(f"it needs {permission}") == 1, (argv, run.stderr)  # said once on stderr
            if argv[0] != "deploy":  # deploy reports each service's failure in its result, not as `error:`
                [message] = one_error(run)
                assert permission in message and role in message, (argv, run.stderr)
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


def test_permission_denied_during_status_fails_with_the_role(cloud):
    service = f"{LOCATION}/services/api-key-service"
    set_faults(cloud, {"permission_denied": [service]})
    try:
        run = cloud("--json", "status")
        doc = json.loads(run.stdout)
        assert run.code == 1, run.output
        assert doc["ok"] is False and doc["errors"], doc
        assert any("roles/run.viewer" in (e["message"] + (e.get("hint") or "")) for e in doc["errors"]), doc
        human = cloud("status")  # the row says it is unreadable; one line below the matrix says why
        [line] = [ln for ln in human.output.splitlines() if ln.startswith("error: ")]
        assert human.code == 1 and "it needs run.services.get (granted by roles/run.viewer)" in line, human.output
        assert human.output.count("run.services.get") == 1 and "Traceback" not in human.output
    finally:
        set_faults(cloud, None)


def _api(cloud: Cli):
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.run_jobs import RunJobs
    from deployctl.cloud.secrets import SecretStore

    endpoint = json.loads((cloud.state_dir / "emulator.json").read_text())
    clients = Clients(emulator_host=endpoint["grpc"])
    return clients, RunJobs(clients, PROJECT, "us-central1"), SecretStore(clients, PROJECT)


@pytest.mark.parametrize("lost_as", ["DEADLINE_EXCEEDED", "UNAVAILABLE"])
def test_a_change_whose_reply_is_lost_is_not_made_twice(cloud, lost_as):
    """The emulator runs RunJob / AddSecretVersion and then loses the reply: the client sees DEADLINE_EXCEEDED (a
    reply that timed out on its way back) or UNAVAILABLE (a reset stream, a front end's 503 after the backend
    acted). Retrying would start a second migration execution or add a second version: a change is resent only
    when the request certainly never reached the server. The command fails with one message that says to check
    whether the change was made."""
    job = "fiat-gateway-migrate"
    secret = "e2e-lost-reply"
    clients, jobs, secrets = _api(cloud)
    try:
        assert cloud("secrets", "set", secret, input="first-value-1").code == 0
        executions = len(jobs.executions(job)) if jobs.find(job) else 0
        versions = len(secrets.versions(secret))
        set_faults(cloud, {"drop_response_rate": 1.0, "drop_response_methods": ["RunJob", "AddSecretVersion"],
                           "drop_response_code": lost_as})
        try:
            migrate = cloud("migrate", "fiat-gateway", timeout=120)
            stored = cloud("secrets", "set", secret, input="second-value-2")
        finally:
            set_faults(cloud, None)
        for run in (migrate, stored):
            assert run.code == 1, run.output
            [message] = one_error(run)
            assert "no answer from the API" in message, run.stderr
            assert "check whether it was made" in run.stderr, run.stderr
            assert "Traceback" not in run.output
        assert len(jobs.executions(job)) == executions + 1, "RunJob was sent again after the server ran it"
        assert len(secrets.versions(secret)) == versions + 1, "AddSecretVersion was sent again"
    finally:
        clients.close()


def test_a_malformed_faults_file_is_ignored_not_fatal(cloud):
    """faults.json that is not an object (or has a key of the wrong type) must not break the emulator's
    interceptor: calls are served as if there were no faults, and the emulator log says why."""
    for bad in ([1, 2], "just text", {"error_rate": "high", "latency_ms": 5, "error_codes": ["NO_SUCH_CODE"]}):
        set_faults(cloud, bad)
        try:
            run = cloud("secrets", "list")
            assert run.code == 0, (bad, run.output)
        finally:
            set_faults(cloud, None)
    log = (cloud.state_dir / "logs" / "emulator.log").read_text(errors="replace")
    assert "a JSON object is expected at the top level" in log and "'error_rate' ignored" in log


def test_injected_faults_are_reproducible_from_the_seed(tmp_path):
    """The roll and the injected code both come from the seeded generator (the code came from the clock)."""
    from deployctl.emulator.faults import FaultConfig

    path = tmp_path / "faults.json"
    path.write_text(json.dumps(transient(11)))

    def sequence() -> list:
        faults = FaultConfig(path)
        cfg = faults.data()
        return [(faults.roll(cfg["error_rate"]), faults.choose(cfg["error_codes"])) for _ in range(40)]

    first = sequence()
    assert first == sequence()
    assert {code for _, code in first} == {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}
