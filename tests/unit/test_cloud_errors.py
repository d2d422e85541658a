"""cloud/errors.py: Google API exceptions become DeployctlErrors with a resource, a role and a next step;
cloud/secrets.parse_ref reads config references."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.rpc import error_details_pb2

from deployctl import errors
from deployctl.cloud.errors import role_for, translate, translated
from deployctl.cloud.secrets import parse_ref

RES = "projects/p/secrets/db-password/versions/latest"


def test_not_found_names_resource_and_config_entry():
    err = translate(gexc.NotFound("Secret [x] not found."), resource=RES, config_ref="services.api.database")
    assert isinstance(err, errors.NotFound)
    assert RES in err.message and "services.api.database" in err.message and "services.api.database" in err.hint
    plain = translate(gexc.NotFound("gone"), resource=RES)
    assert "referred" not in plain.message and plain.hint


@pytest.mark.parametrize("permission, role", [
    ("secretmanager.versions.access", "roles/secretmanager.secretAccessor"),
    ("run.services.update", "roles/run.developer"),
    ("run.services.get", "roles/run.viewer"),  # a read: the narrowest role that grants it
    ("run.routes.invoke", "roles/run.invoker"),
    ("cloudsql.instances.connect", "roles/cloudsql.client"),
    ("cloudsql.users.update", "roles/cloudsql.admin"),
    ("logging.logEntries.list", "roles/logging.viewer"),
])
def test_permission_denied_from_google_message(permission, role):
    exc = gexc.PermissionDenied(f"Permission '{permission}' denied for resource '{RES}' (or it may not exist).")
    err = translate(exc, resource=RES)
    assert isinstance(err, errors.PermissionDenied)
    assert permission in err.message and role in err.message and role in err.hint
    assert err.details["role"] == role and role_for(permission) == role


def test_permission_denied_from_error_info_wins_over_caller_guess():
    info = error_details_pb2.ErrorInfo(reason="IAM_PERMISSION_DENIED", domain="iam.googleapis.com",
                                       metadata={"permission": "cloudsql.instances.connect"})
    err = translate(gexc.PermissionDenied("denied", error_info=info), resource="projects/p/instances/core",
                    permission="cloudsql.instances.get")
    assert "cloudsql.instances.connect" in err.message and "roles/cloudsql.client" in err.hint


def test_permission_denied_unknown_permission_still_has_a_hint():
    err = translate(gexc.PermissionDenied("nope"), resource=RES, permission="storage.objects.get")
    assert "storage.objects.get" in err.message and "storage.objects.get" in err.hint
    bare = translate(gexc.PermissionDenied("nope"), resource=RES)
    assert bare.hint and bare.details["permission"] is None


SERVICE = "projects/acme-dev/locations/us-central1/services/fiat-gateway"
RUNTIME_SA = "deployctl-runtime@acme-dev.iam.gserviceaccount.com"


@pytest.mark.parametrize("spelled", ["iam.serviceAccounts.actAs", "iam.serviceaccounts.actAs"])
def test_act_as_denial_names_the_service_account_to_grant_on(spelled):
    """Cloud Run spells actAs in lower case; either way the role is named, and granted on the runtime service
    account (from the error text), not on the Cloud Run service."""
    exc = gexc.PermissionDenied(f"Permission '{spelled}' denied on service account {RUNTIME_SA} (or it may not "
                                "exist).")
    err = translate(exc, resource=SERVICE)
    assert err.details["role"] == "roles/iam.serviceAccountUser"
    assert RUNTIME_SA in err.hint and SERVICE not in err.hint
    assert f"gcloud iam service-accounts add-iam-policy-binding {RUNTIME_SA}" in err.hint


def test_act_as_denial_falls_back_to_the_configured_service_account():
    exc = gexc.PermissionDenied("Permission 'iam.serviceaccounts.actAs' denied on resource (or it may not exist).")
    err = translate(exc, resource=SERVICE, service_account=RUNTIME_SA)
    assert RUNTIME_SA in err.hint and SERVICE not in err.hint
    unknown = translate(exc, resource=SERVICE)
    assert "runtime service account" in unknown.hint and SERVICE not in unknown.hint
    with pytest.raises(errors.PermissionDenied) as info, translated(SERVICE, service_account=RUNTIME_SA):
        raise exc
    assert RUNTIME_SA in info.value.hint


@pytest.mark.parametrize("permission, role", [
    ("run.jobs.runWithOverrides", "roles/run.developer"),  # migrate always runs its job with overrides
    ("cloudsql.instances.list", "roles/cloudsql.viewer"),  # reads: not the admin role, which can delete
    ("cloudsql.users.list", "roles/cloudsql.viewer"),
    ("cloudsql.databases.list", "roles/cloudsql.viewer"),
    ("cloudsql.instances.get", "roles/cloudsql.client"),
    ("CloudSQL.Users.List", "roles/cloudsql.viewer"),  # looked up case-insensitively
])
def test_the_narrowest_role_for_reads_and_job_overrides(permission, role):
    assert role_for(permission) == role
    err = translate(gexc.PermissionDenied(f"Permission '{permission}' denied on resource"), resource=RES)
    assert role in err.hint


@pytest.mark.parametrize("exc", [
    gexc.DeadlineExceeded("deadline"),
    gexc.ServiceUnavailable("connection refused"),
    gexc.RetryError("Timeout of 30.0s exceeded", cause=gexc.ServiceUnavailable("failed to connect")),
])
def test_unreachable(exc):
    err = translate(exc, resource=RES)
    assert isinstance(err, errors.Unreachable) and "deployctl local up" in err.hint and "endpoint" in err.hint


def test_other_codes():
    assert isinstance(translate(gexc.AlreadyExists("dup"), resource=RES), errors.AlreadyExists)
    assert isinstance(translate(gexc.Aborted("etag"), resource=RES), errors.Conflict)
    pre = translate(gexc.FailedPrecondition("Secret Version [v] is in DISABLED state."), resource=RES)
    assert pre.code == "failed-precondition" and "DISABLED" in pre.message
    assert translate(gexc.InvalidArgument("bad"), resource=RES).code == "invalid-argument"
    assert isinstance(translate(gexc.Unauthenticated("who"), resource=RES), errors.PermissionDenied)


def test_messages_are_redacted():
    from deployctl import redact

    redact.register("leaky-value-123")
    err = translate(gexc.InvalidArgument("value leaky-value-123 rejected"), resource=RES)
    assert "leaky-value-123" not in err.message


def test_translated_context_manager():
    with pytest.raises(errors.NotFound) as info, translated(RES, "services.api.secrets.KEY"):
        raise gexc.NotFound("missing")
    assert isinstance(info.value.__cause__, gexc.NotFound)
    with pytest.raises(KeyError), translated(RES):  # not a Google error: untouched
        raise KeyError("x")
    original = errors.ConfigError("already ours")
    with pytest.raises(errors.ConfigError) as info, translated(RES):
        raise original
    assert info.value is original


@pytest.mark.parametrize("ref, expected", [
    ("cross-chain-signing-key:latest", ("cross-chain-signing-key", "latest")),
    ("db_password:3", ("db_password", "3")),
    ("plain-name", ("plain-name", "latest")),
    (" spaced:12 ", ("spaced", "12")),
    ("projects/acme/secrets/k/versions/4", ("k", "4")),
    ("projects/acme/secrets/k", ("k", "latest")),
])
def test_parse_ref(ref, expected):
    assert parse_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", ":latest", "bad name:1", "k:0", "k:newest", "k:-1", "a/b:1"])
def test_parse_ref_rejects(ref):
    with pytest.raises(errors.ConfigError) as info:
        parse_ref(ref)
    assert info.value.hint


# --- the call policy: reads retry transient errors, mutations only what certainly never reached the server -------
REFUSED = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote "
           "host: Connection refused")


@pytest.mark.parametrize("exc, read, mutation", [
    (gexc.ServiceUnavailable(REFUSED), True, True),  # grpc's words: no connection, the request was never sent
    (gexc.ServiceUnavailable("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:10.0.0.1:443: "
                             "recvmsg:Connection reset by peer (104)"), True, True),  # reset during the handshake
    (gexc.ServiceUnavailable("errors resolving run.googleapis.com:443: Domain name not found"), True, True),
    (gexc.ServiceUnavailable("DNS resolution failed for run.googleapis.com:443"), True, True),
    (gexc.ServiceUnavailable("connection attempt timed out before receiving SETTINGS frame"), True, True),
    (gexc.TooManyRequests("rate"), True, True),
    (gexc.ResourceExhausted("quota"), True, True),
    # UNAVAILABLE after the request was sent: the server may have acted (this case was wrongly retried before)
    (gexc.ServiceUnavailable("down"), True, False),
    (gexc.ServiceUnavailable("Connection reset by peer"), True, False),
    (gexc.ServiceUnavailable("Socket closed"), True, False),
    (gexc.ServiceUnavailable("Received http2 header with status: 502 (GOAWAY)"), True, False),
    (gexc.ServiceUnavailable("The service is currently unavailable."), True, False),  # a front end's bare 503
    # the channel's auth plugin could not refresh the token: no retry mends revoked credentials
    (gexc.ServiceUnavailable("Getting metadata from plugin failed with error: ('invalid_grant: Token has been "
                             "expired or revoked.', {'error': 'invalid_grant'})"), False, False),
    (gexc.DeadlineExceeded("no reply"), True, False),  # the server may have acted: a second execution, version
    (gexc.InternalServerError("oops"), True, False),
    (gexc.Aborted("etag"), False, False),
    (gexc.PermissionDenied("no"), False, False),
])
def test_mutations_are_retried_only_when_the_server_did_not_act(exc, read, mutation):
    from deployctl.cloud.policy import DEFAULT

    assert DEFAULT.call()["retry"]._predicate(exc) is read
    assert DEFAULT.call(mutation=True)["retry"]._predicate(exc) is mutation


@pytest.mark.parametrize("raised", [gexc.ServiceUnavailable("Socket closed"), gexc.DeadlineExceeded("no reply"),
                                    gexc.InternalServerError("oops")])
def test_a_failed_change_says_to_check_whether_it_was_made(raised):
    """Through the policy's real Retry: whatever ends a change's call without a definite answer says the change
    may have been made; the same error of a read does not."""
    from deployctl.cloud.policy import DEFAULT

    def rpc(timeout=None):
        raise raised

    def fails(**call) -> errors.DeployctlError:
        with pytest.raises(errors.DeployctlError) as info, translated(RES):
            call["retry"](rpc)(timeout=call["timeout"])
        return info.value

    policy = DEFAULT.with_deadline(0.5)
    change, read = fails(**policy.call(mutation=True)), fails(**policy.call())
    assert "check whether it was made" in change.hint, change.hint
    assert "check whether it was made" not in read.hint, read.hint
    denied = gexc.PermissionDenied("Permission 'secretmanager.versions.add' denied")
    with pytest.raises(errors.PermissionDenied) as info, translated(RES):
        policy.call(mutation=True)["retry"](lambda: (_ for _ in ()).throw(denied))()
    assert "check whether" not in info.value.hint  # a definite refusal: nothing was made


def test_a_quota_error_waits_longer_before_the_retry():
    from deployctl.cloud.policy import _Backoff

    backoff = _Backoff(0.1, 2.0, 2.0)
    assert next(backoff) <= 0.1
    backoff.saw(gexc.ResourceExhausted("Quota exceeded for quota metric 'Read requests' per minute"))
    waits = [next(backoff) for _ in range(4)]
    assert waits[0] >= _Backoff.QUOTA_INITIAL / 2 and waits[-1] >= waits[0]


def test_the_breaker_opens_only_on_repeated_silence_and_then_gives_whole_attempts():
    """One slow attempt never opens it; several attempts without an answer spanning a whole deadline do. Open, a
    call gets the policy's full attempt timeout and no retries (it used to get 0.3 s, failing a healthy endpoint
    that answers in 0.5 s); any answer closes it."""
    import dataclasses

    from deployctl.cloud.policy import DEFAULT, Breaker

    clock = [100.0]
    breaker = Breaker(clock=lambda: clock[0])
    policy = dataclasses.replace(DEFAULT, breaker=breaker)  # attempts of 10 s, a 30 s deadline
    breaker.failed(started=60.0)  # one attempt silent for 40 s: still one attempt
    assert not breaker.open(policy.deadline)
    assert policy.call()["retry"]._predicate(gexc.ServiceUnavailable("x"))
    breaker.answered()
    for started in (70.0, 80.0, 90.0):  # three in a row, 30 s of silence together: open
        clock[0] = started + 10.0
        breaker.failed(started=started)
    assert breaker.open(policy.deadline)
    call = policy.call()
    assert call["timeout"] == policy.attempt_timeout and call["retry"].timeout == policy.attempt_timeout
    assert call["retry"]._predicate(gexc.ServiceUnavailable("x")) is False
    assert policy.call(mutation=True)["timeout"] == policy.attempt_timeout
    breaker.answered()
    assert not breaker.open(policy.deadline) and policy.call()["retry"].timeout == policy.deadline
    for started in (100.0, 100.1, 100.2):  # three quick failures in 0.2 s: not a whole deadline of silence
        clock[0] = started
        breaker.failed(started=started)
    assert not breaker.open(policy.deadline)


# --- credentials: no Application Default Credentials is a setup error with the next step, not a crash -----------
@pytest.fixture()
def no_adc(monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata-server probe
    return tmp_path


def test_missing_application_default_credentials_is_a_clear_error(no_adc):
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore

    clients = Clients(emulator_host=None)
    with pytest.raises(errors.ConfigError) as info:
        SecretStore(clients, "acme-dev").list_secrets()
    err = info.value
    assert err.exit_code == errors.ExitCode.USAGE and err.code == "no-credentials"
    assert "credentials" in err.message and "gcloud auth application-default login" in err.hint
    assert "DEPLOYCTL_EMULATOR_HOST" in err.hint


def test_credentials_that_cannot_be_refreshed_are_a_permission_error():
    from google.auth import exceptions as auth_exc

    with pytest.raises(errors.PermissionDenied) as info, translated(RES):
        raise auth_exc.RefreshError("invalid_grant: Token has been expired or revoked.")
    assert "expired" in info.value.message and "application-default login" in info.value.hint


def test_the_cli_without_credentials_says_so_without_a_crash_log(no_adc):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYCTL_")}
    env.update(DEPLOYCTL_STATE_DIR=str(no_adc / "state"), CI="true", NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "deployctl", "--env", "dev", "secrets", "list"], cwd=str(root),
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "no Google Cloud credentials" in lines[0], proc.stderr
    assert "unexpected error" not in proc.stderr and "Traceback" not in proc.stderr
    assert not list((no_adc / "state").rglob("crash-*.log"))
