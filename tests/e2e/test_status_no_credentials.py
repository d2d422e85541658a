"""Without Google Cloud credentials, status and migrate fail with the one credentials error (exit 2), not a
row per service, and `migrate status` is never "degraded" (exit 3, which CI scripts accept) for it."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Cli


@pytest.fixture(scope="module")
def no_adc_cli(tmp_path_factory):
    home = tmp_path_factory.mktemp("no-adc")
    cli = Cli(home / "state")
    cli.env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    cli.env.update(HOME=str(home), CLOUDSDK_CONFIG=str(home / "gcloud"), NO_GCE_CHECK="True")
    return cli


@pytest.mark.parametrize("args", [["status"], ["migrate", "status"], ["migrate", "status", "fiat-gateway"],
                                  ["migrate", "--all"], ["migrate", "fiat-gateway", "--runner", "local"],
                                  # --watch printed this error every interval until killed, then exited 0
                                  ["status", "--watch", "--interval", "0.5"]])
def test_one_credentials_error_with_exit_2(no_adc_cli, args):
    run = no_adc_cli("--env", "dev", *args, timeout=60)
    assert run.code == 2, run.output
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no Google Cloud credentials" in errors[0], run.output
    assert "application-default login" in run.stderr and "Traceback" not in run.output
    assert "fiat-gateway" not in run.output  # the command failed, not each service


def test_migrate_status_json_is_a_failure_not_a_degraded_state(no_adc_cli):
    run = no_adc_cli("--env", "dev", "--json", "migrate", "status", timeout=60)
    assert run.code == 2, run.output
    doc = json.loads(run.stdout)
    assert doc["ok"] is False and doc["data"] is None
    assert [e["code"] for e in doc["errors"]] == ["no-credentials"]
