"""Google API errors turned into deployctl errors that say what failed and what to do next.

Every wrapper in cloud/ runs its calls inside `translated(resource, ...)`. google.api_core is imported only
when an exception is being translated, so importing this module costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from deployctl import errors
from deployctl.redact import redact

ACT_AS_ROLE = "roles/iam.serviceAccountUser"

# The IAM permissions deployctl needs, each with the narrowest predefined role that grants it.
ROLE_FOR_PERMISSION: dict[str, str] = {
    # Secret Manager
    "secretmanager.versions.access": "roles/secretmanager.secretAccessor",
    "secretmanager.versions.add": "roles/secretmanager.secretVersionAdder",
    "secretmanager.versions.get": "roles/secretmanager.viewer",
    "secretmanager.versions.list": "roles/secretmanager.viewer",
    "secretmanager.versions.enable": "roles/secretmanager.secretVersionManager",
    "secretmanager.versions.disable": "roles/secretmanager.secretVersionManager",
    "secretmanager.versions.destroy": "roles/secretmanager.secretVersionManager",
    "secretmanager.secrets.get": "roles/secretmanager.viewer",
    "secretmanager.secrets.list": "roles/secretmanager.viewer",
    "secretmanager.secrets.create": "roles/secretmanager.admin",
    "secretmanager.secrets.update": "roles/secretmanager.admin",
    "secretmanager.secrets.delete": "roles/secretmanager.admin",
    # Cloud Run
    "run.services.get": "roles/run.viewer",
    "run.services.list": "roles/run.viewer",
    "run.services.create": "roles/run.developer",
    "run.services.update": "roles/run.developer",
    "run.revisions.get": "roles/run.viewer",
    "run.revisions.list": "roles/run.viewer",
    "run.jobs.get": "roles/run.viewer",
    "run.jobs.create": "roles/run.developer",
    "run.jobs.update": "roles/run.developer",
    "run.jobs.run": "roles/run.developer",
    "run.jobs.runWithOverrides": "roles/run.developer",  # what migrate needs: it always passes its args
    "run.executions.get": "roles/run.viewer",
    "run.executions.list": "roles/run.viewer",
    "run.executions.cancel": "roles/run.developer",
    "run.services.delete": "roles/run.developer",
    "run.operations.get": "roles/run.viewer",
    "run.routes.invoke": "roles/run.invoker",
    "iam.serviceAccounts.actAs": ACT_AS_ROLE,  # deploying as a runtime service account: granted on that account
    # Cloud SQL: the client role connects and reads its instance; the viewer role reads everything else
    "cloudsql.instances.connect": "roles/cloudsql.client",
    "cloudsql.instances.get": "roles/cloudsql.client",
    "cloudsql.instances.list": "roles/cloudsql.viewer",
    "cloudsql.instances.create": "roles/cloudsql.admin",
    "cloudsql.users.get": "roles/cloudsql.viewer",
    "cloudsql.users.list": "roles/cloudsql.viewer",
    "cloudsql.users.create": "roles/cloudsql.admin",
    "cloudsql.users.update": "roles/cloudsql.admin",
    "cloudsql.users.delete": "roles/cloudsql.admin",
    "cloudsql.databases.get": "roles/cloudsql.viewer",
    "cloudsql.databases.list": "roles/cloudsql.viewer",
    "cloudsql.databases.create": "roles/cloudsql.admin",
    "cloudsql.databases.delete": "roles/cloudsql.admin",
    # Logging
    "logging.logEntries.list": "roles/logging.viewer",
    "logging.logs.list": "roles/logging.viewer",
}

# Google spells some permissions in lower case in its messages (Cloud Run: 'iam.serviceaccounts.actAs').
_ROLE_BY_LOWER = {p.lower(): role for p, role in ROLE_FOR_PERMISSION.items()}
_PERMISSION_IN_MESSAGE = re.compile(r"[Pp]ermission '?([a-zA-Z]+\.[a-zA-Z]+\.[a-zA-Z]+)'? denied")
_SERVICE_ACCOUNT = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+\.gserviceaccount\.com")

UNREACHABLE_HINT = ("check the API endpoint and your network; for a local environment run `deployctl local up` "
                    "(or set DEPLOYCTL_EMULATOR_HOST to a running emulator)")


def role_for(permission: str) -> str | None:
    """The predefined IAM role that grants `permission`, if deployctl knows it."""
    return _ROLE_BY_LOWER.get(permission.lower())


def translate(exc: BaseException, *, resource: str, config_ref: str | None = None,
              permission: str | None = None, service_account: str | None = None) -> errors.DeployctlError:
    """A DeployctlError for `exc`, raised while working on `resource`.

    `config_ref` names the configuration entry that points at the resource (e.g. "services.api.secrets.KEY");
    `permission` is the IAM permission the call needs, used when the error itself does not name one;
    `service_account` is the runtime service account the request runs as (where an actAs denial is fixed).
    """
    if isinstance(exc, errors.DeployctlError):
        return exc
    from google.api_core import exceptions as gexc

    detail = redact(_message(exc))
    referred = f" (referred to by {config_ref})" if config_ref else ""
    details = {"resource": resource, **({"config_ref": config_ref} if config_ref else {})}

    if isinstance(exc, gexc.NotFound):
        hint = f"check the name in {config_ref}, or create it" if config_ref else "check the name, or create it"
        return errors.NotFound(f"{resource} was not found{referred}: {detail}", hint=hint, details=details)
    if isinstance(exc, gexc.PermissionDenied | gexc.Unauthenticated):
        return _permission_denied(exc, gexc, resource, referred, detail, permission, details, service_account)
    if isinstance(exc, gexc.AlreadyExists):
        return errors.AlreadyExists(f"{resource} already exists: {detail}",
                                    hint="use the existing resource, or pick another name", details=details)
    if isinstance(exc, gexc.Aborted):
        return errors.Conflict(f"{resource} was changed by someone else: {detail}",
                               hint="read it again and retry", details=details)
    if isinstance(exc, gexc.FailedPrecondition):
        return errors.CloudError(f"{resource} is not in a state that allows this{referred}: {detail}",
                                 hint="check its state (for a secret version: enabled, disabled, destroyed)",
                                 code="failed-precondition", details=details)
    if isinstance(exc, gexc.InvalidArgument):
        return errors.CloudError(f"the request for {resource} was rejected as invalid{referred}: {detail}",
                                 hint="check the name and values" + (f" in {config_ref}" if config_ref else ""),
                                 code="invalid-argument", details=details)
    auth = _credentials_failure(exc)
    if auth is not None:
        return auth
    if isinstance(exc, gexc.RetryError | gexc.DeadlineExceeded | gexc.ServiceUnavailable):
        # grpc's own text nests "last error: ..." over several lines; say what happened in a few words and
        # keep the library's text in details (shown by --json) for whoever debugs the network.
        detail = " ".join(detail.split())
        why = ("connection refused" if "refused" in detail.lower()
               else "the endpoint accepted the connection but did not answer" if "deadline" in detail.lower()
               else detail)
        return errors.Unreachable(f"no answer from the API while working on {resource}: {why}",
                                  hint=UNREACHABLE_HINT + _change_hint(exc), details={**details, "detail": detail})
    return errors.CloudError(f"the API call for {resource} failed: {detail}",
                             hint="retry; if it fails again, run with -v and check the resource's state "
                                  "(`deployctl doctor`)" + _change_hint(exc), details=details)


def _credentials_failure(exc: BaseException) -> errors.DeployctlError | None:
    """On a gRPC channel an expired or revoked credential is not google.auth's RefreshError: the auth plugin turns it
    into UNAVAILABLE "Getting metadata from plugin failed with error: ...". It is the credentials, not the network."""
    from deployctl.cloud.clients import CREDENTIALS_HINT
    from deployctl.cloud.policy import credentials_failed

    failed = next((e for e in (exc, getattr(exc, "cause", None)) if e is not None and credentials_failed(e)), None)
    if failed is None:
        return None
    why = " ".join(redact(_message(failed)).split()).partition("with error: ")[2]
    first = re.match(r"""\(['"](.+?)['"], """, why)  # google.auth's (message, response body) tuple
    why = (first.group(1) if first else why) or "the token could not be refreshed"
    return errors.PermissionDenied(f"the Google Cloud credentials could not be used: {why}", hint=CREDENTIALS_HINT,
                                   code="credentials")


def _change_hint(exc: BaseException) -> str:
    """A change whose call failed without a definite answer may have been made: never repeat it blindly."""
    from deployctl.cloud.policy import sent_change

    return "; this was a change: check whether it was made before retrying" if sent_change(exc) else ""


def _permission_denied(exc, gexc, resource, referred, detail, permission, details,
                       service_account) -> errors.PermissionDenied:
    if isinstance(exc, gexc.Unauthenticated):
        return errors.PermissionDenied(
            f"not authenticated for {resource}: {detail}",
            hint="run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
            details=details)
    permission = _permission_of(exc) or permission
    role = role_for(permission) if permission else None
    needs = f"; it needs {permission}" if permission else ""
    grants = f" (granted by {role})" if role else ""
    if role == ACT_AS_ROLE:
        hint = _act_as_hint(_message(exc), service_account)
    elif role:
        target = re.sub(r"/versions/[^/]+$", "", resource)  # IAM binds on the secret, not on a version
        hint = f"grant {role} on {target} (or its project) to the identity deployctl runs as"
    elif permission:
        hint = f"grant a role that includes {permission} to the identity deployctl runs as"
    else:
        hint = "check the IAM roles of the identity deployctl runs as (`gcloud auth list`)"
    details = {**details, "permission": permission, "role": role, "detail": detail}
    return errors.PermissionDenied(f"permission denied on {resource}{referred}{needs}{grants}",
                                   hint=hint, details=details)


def _act_as_hint(message: str, service_account: str | None) -> str:
    """actAs is granted on the runtime service account (or its project), never on the Cloud Run resource."""
    named = _SERVICE_ACCOUNT.search(message)
    account = named.group(0) if named else service_account
    if not account:
        return (f"grant {ACT_AS_ROLE} on the runtime service account (the service's service_account, or the "
                "project's default compute service account) to the identity deployctl runs as")
    return (f"grant {ACT_AS_ROLE} on the service account {account} to the identity deployctl runs as (MEMBER): "
            f"gcloud iam service-accounts add-iam-policy-binding {account} --member=MEMBER --role={ACT_AS_ROLE}")


def _permission_of(exc) -> str | None:
    """The permission Google names in its ErrorInfo metadata or message, if any."""
    metadata = getattr(exc, "metadata", None) or {}
    if metadata.get("permission"):
        return metadata["permission"]
    m = _PERMISSION_IN_MESSAGE.search(_message(exc))
    return m.group(1) if m else None


def _message(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RetryError keeps the last attempt's error here
    if cause is not None and cause is not exc:
        return f"{getattr(exc, 'message', exc)} (last error: {_message(cause)})"
    return str(getattr(exc, "message", None) or exc)


@contextmanager
def translated(resource: str, config_ref: str | None = None, *, permission: str | None = None,
               service_account: str | None = None) -> Iterator[None]:
    """`with translated(name):` re-raises Google API errors as DeployctlErrors (the original as __cause__)."""
    try:
        yield
    except errors.DeployctlError:
        raise
    except Exception as exc:
        if not _is_google_error(exc):
            from deployctl.cloud.clients import credentials_error  # google.auth: no or expired credentials

            auth = credentials_error(exc)
            if auth is None:
                raise
            raise auth from exc
        raise translate(exc, resource=resource, config_ref=config_ref, permission=permission,
                        service_account=service_account) from exc


def _is_google_error(exc: Exception) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.GoogleAPIError)
