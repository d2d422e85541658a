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
