"""One exception base for everything a user can cause, and the exit codes it maps to.

The CLI catches DeployctlError in exactly one place (cli/common.run, around every command) and turns it into
one message with a hint and the exit code below. Anything else is a bug: its traceback goes to a log file,
not the screen. Usage errors found while parsing the command line are Click's, reported by cli/main.main.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the operation failed, or doctor found a failure
    USAGE = 2  # bad usage or configuration; also "needs --yes" when not interactive
    DEGRADED = 3  # warnings only, or deployed but a health check is slow
    INTERRUPTED = 130


class DeployctlError(Exception):
    """An error with a message for people, a next step, a stable code for machines and an exit code.

    Messages must never contain a secret value: they pass through redact.py anyway, but do not rely on it.
    """

    exit_code: ExitCode = ExitCode.FAILED
    code: str = "failed"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code:
            self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


CREDENTIALS_CODES = frozenset({"no-credentials", "credentials"})  # deployctl.cloud.clients.credentials_error


def is_credentials_error(exc: BaseException) -> bool:
    """No Google Cloud credentials, or ones that cannot be used: no cloud read can work, so a command fails with
    that one error instead of a row (or an unknown database state) per service."""
    return isinstance(exc, DeployctlError) and exc.code in CREDENTIALS_CODES


class UsageError(DeployctlError):
    exit_code = ExitCode.USAGE
    code = "usage"


class ConfigError(DeployctlError):
    exit_code = ExitCode.USAGE
    code = "config"


class ConfirmationRequired(DeployctlError):
    """A step needs confirmation and nobody can be asked (no TTY, CI=true)."""

    exit_code = ExitCode.USAGE
    code = "confirmation-required"


class CloudError(DeployctlError):
    code = "cloud"


class NotFound(CloudError):
    code = "not-found"


class AlreadyExists(CloudError):
    code = "already-exists"


class PermissionDenied(CloudError):
    code = "permission-denied"


class Conflict(CloudError):
    """Someone else changed the resource since we read it (etag mismatch)."""

    code = "conflict"


class Unreachable(CloudError):
    """The endpoint did not answer within the deadline."""

    code = "unreachable"


class DatabaseError(DeployctlError):
    code = "database"

    def __init__(self, message: str, *, sqlstate: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.sqlstate = sqlstate


class LocalCloudError(DeployctlError):
    code = "local-cloud"


class StateDirError(LocalCloudError):
    """The state directory (DEPLOYCTL_STATE_DIR, or .deployctl/<env>) cannot be used: fix the setting."""

    exit_code = ExitCode.USAGE
    code = "state-dir"


class Interrupted(DeployctlError):
    exit_code = ExitCode.INTERRUPTED
    code = "interrupted"
