"""Secret Manager, typed: secrets, versions and their values, with every value registered for redaction.

    store = SecretStore(clients, "acme-dev")
    store.add_version("db-password", "s3cr3t")
    value = store.access("db-password")          # AccessedSecret(version=1, data=<hidden>)

Every call passes the client policy's retry and timeout, and Google errors come back as DeployctlErrors
(cloud/errors.py) naming the resource, the config entry that refers to it, and the IAM role a denial needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from deployctl import errors, redact
from deployctl.cloud.clients import Clients
from deployctl.cloud.crc32c import crc32c
from deployctl.cloud.errors import translated
from deployctl.cloud.resend import Counted

SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_VERSION = re.compile(r"latest|[1-9][0-9]*")
_RESOURCE = re.compile(r"projects/[^/]+/secrets/(?P<id>[^/]+)(?:/versions/(?P<version>[^/]+))?")


@dataclass(frozen=True)
class Secret:
    name: str  # projects/{project}/secrets/{id}
    id: str
    create_time: datetime | None
    labels: dict[str, str]


@dataclass(frozen=True)
class SecretVersion:
    name: str  # projects/{project}/secrets/{id}/versions/{number}
    number: int
    state: str  # ENABLED | DISABLED | DESTROYED
    create_time: datetime | None


@dataclass(frozen=True)
class AccessedSecret:
    """A secret value. Its repr never shows the data; `.text` and `.data` are already registered with redact."""

    version: int
    data: bytes = field(repr=False)

    @property
    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.CloudError(f"version {self.version} of the secret is not UTF-8 text",
                                    hint="store the value as UTF-8 text") from None

    @property
    def has_trailing_newline(self) -> bool:
        """True when the value ends with a newline (e.g. added with --data-file): warn, never strip silently."""
        return self.data.endswith((b"\n", b"\r"))

    @property
    def fingerprint(self) -> str:
        return redact.fingerprint(self.data)


def parse_ref(ref: str) -> tuple[str, str]:
    """`"name:version"` (or `"name"`, or a full `projects/p/secrets/name/versions/v` name) -> (id, version).

    The version is `"latest"` or a version number as a string.
    """
    text = (ref or "").strip()
    m = _RESOURCE.fullmatch(text)
    if m:
        secret_id, version = m["id"], m["version"] or "latest"
    else:
        secret_id, _, version = text.partition(":")
        version = version or "latest"
    if not SECRET_ID.fullmatch(secret_id):
        raise errors.ConfigError(f"invalid secret reference {ref!r}: the secret id must be 1-255 letters, digits, "
                                 "'_' or '-'", hint='write it as "secret-id:latest" or "secret-id:3"')
    if not _VERSION.fullmatch(version):
        raise errors.ConfigError(f"invalid secret reference {ref!r}: the version must be 'latest' or a number",
                                 hint='write it as "secret-id:latest" or "secret-id:3"')
    return secret_id, version


def _state_name(state) -> str:
    return getattr(state, "name", str(state))


def _secret(pb) -> Secret:
    return Secret(name=pb.name, id=pb.name.rsplit("/", 1)[-1], create_time=pb.create_time or None,
                  labels=dict(pb.labels))


def _version(pb) -> SecretVersion:
    return SecretVersion(name=pb.name, number=int(pb.name.rsplit("/", 1)[-1]), state=_state_name(pb.state),
                         create_time=pb.create_time or None)


class SecretStore:
    def __init__(self, clients: Clients, project: str) -> None:
        self.clients = clients
        self.project = project

    @property
    def _api(self):
        return self.clients.secret_manager

    def _call(self) -> dict:
        return self.clients.policy.call()

    def secret_name(self, secret_id: str) -> str:
        return f"projects/{self.project}/secrets/{secret_id}"

    def version_name(self, secret_id: str, version: str | int = "latest") -> str:
        return f"{self.secret_name(secret_id)}/versions/{version}"

    # --- secrets ------------------------------------------------------------------------------------
    def list_secrets(self) -> list[Secret]:
        parent = f"projects/{self.project}"
        with translated(parent, permission="secretmanager.secrets.list"):
            return [_secret(s) for s in self._api.list_secrets(request={"parent": parent}, **self._call())]

    def get_secret(self, secret_id: str, *, config_ref: str | None = None) -> Secret:
        name = self.secret_name(secret_id)
        with translated(name, config_ref, permission="secretmanager.secrets.get"):
            return _secret(self._api.get_secret(request={"name": name}, **self._call()))

    def create_secret(self, secret_id: str, labels: dict[str, str] | None = None, *,
                      exist_ok: bool = False) -> Secret:
        """Create a secret with automatic replication; with `exist_ok`, return the existing one instead."""
        name = self.secret_name(secret_id)
        request = {"parent": f"projects/{self.project}", "secret_id": secret_id,
                   "secret": {"replication": {"automatic": {}}, "labels": labels or {}}}
        try:
            with translated(name, permission="secretmanager.secrets.create"):
                return _secret(self._api.create_secret(request=request, **self.clients.policy.call(mutation=True)))
        except errors.AlreadyExists:
            if not exist_ok:
                raise
            return self.get_secret(secret_id)

    def delete_secret(self, secret_id: str) -> None:
        name = self.secret_name(secret_id)
        with translated(name, permission="secretmanager.secrets.delete"):
            self._api.delete_secret(request={"name": name}, **self.clients.policy.call(mutation=True))

    # --- versions -----------------------------------------------------------------------------------
    def versions(self, secret_id: str, *, config_ref: str | None = None) -> list[SecretVersion]:
        """Every version of the secret, newest first."""
        name = self.secret_name(secret_id)
        with translated(name, config_ref, permission="secretmanager.versions.list"):
            pages = self._api.list_secret_versions(request={"parent": name}, **self._call())
            return sorted((_version(v) for v in pages), key=lambda v: v.number, reverse=True)

    def get_version(self, secret_id: str, version: str | int = "latest", *,
                    config_ref: str | None = None) -> SecretVersion:
        name = self.version_name(secret_id, version)
        with translated(name, config_ref, permission="secretmanager.versions.get"):
            return _version(self._api.get_secret_version(request={"name": name}, **self._call()))

    def add_version(self, secret_id: str, data: bytes | str) -> SecretVersion:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        redact.register(raw)
        name = self.secret_name(secret_id)
        # A client-side checksum lets the service reject a payload corrupted on the way.
        request = {"parent": name, "payload": {"data": raw, "data_crc32c": crc32c(raw)}}
        with translated(name, permission="secretmanager.versions.add"):
            return _version(self._api.add_secret_version(request=request, **self.clients.policy.call(mutation=True)))

    def access(self, secret_id: str, version: str | int = "latest", *,
               config_ref: str | None = None) -> AccessedSecret:
        name = self.version_name(secret_id, version)
        with translated(name, config_ref, permission="secretmanager.versions.access"):
            response = self._api.access_secret_version(request={"name": name}, **self._call())
        data = bytes(response.payload.data)
        redact.register(data)
        if "data_crc32c" in response.payload and response.payload.data_crc32c != crc32c(data):
            raise errors.CloudError(f"the value of {response.name} arrived corrupted (CRC32C mismatch)",
                                    hint="retry; if it persists, check the network path to the API")
        return AccessedSecret(version=int(response.name.rsplit("/", 1)[-1]), data=data)

    def _set_state(self, method: str, permission: str, secret_id: str, version: str | int,
                   target: str) -> SecretVersion:
        """A change: never resent once the server may have acted. When our own resend meets a refusal (a version
        our first attempt already destroyed), the version is read back: in the wanted state, that is success."""
        name = self.version_name(secret_id, version)
        sent = Counted(self.clients.policy.call(mutation=True))
        try:
            with translated(name, permission=permission):
                return _version(getattr(self._api, method)(request={"name": name}, **sent.kwargs))
        except errors.CloudError as e:
            if not sent.resent or e.code not in ("conflict", "failed-precondition"):
                raise
            current = self.get_version(secret_id, version)
            if current.state != target:
                raise
            return current

    def disable(self, secret_id: str, version: str | int) -> SecretVersion:
        return self._set_state("disable_secret_version", "secretmanager.versions.disable", secret_id, version,
                               "DISABLED")

    def enable(self, secret_id: str, version: str | int) -> SecretVersion:
        return self._set_state("enable_secret_version", "secretmanager.versions.enable", secret_id, version,
                               "ENABLED")

    def destroy(self, secret_id: str, version: str | int) -> SecretVersion:
        return self._set_state("destroy_secret_version", "secretmanager.versions.destroy", secret_id, version,
                               "DESTROYED")
