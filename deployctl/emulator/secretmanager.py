"""Emulated Secret Manager v1 (google.cloud.secretmanager.v1.SecretManagerService) over gRPC.

Behaviour follows the real service where a client can observe it:
- `versions/latest` is the most recently *created* version whatever its state (Google's documented alias, and
  what production does): accessing it while that version is DISABLED or DESTROYED is FAILED_PRECONDITION, it
  does not fall back to an older enabled version.
- version numbers are never reused within a secret; destroying a version wipes its data but keeps the record.
- ALREADY_EXISTS on a second create, NOT_FOUND on a missing secret/version, INVALID_ARGUMENT on a bad id, a
  payload over 64 KiB or a checksum mismatch, ABORTED on a stale etag.
The project segment of a name is kept as given (number or id), as an opaque string.

Payloads are registered with deployctl.redact (on add and when loaded after a restart) and never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets as _random
from datetime import UTC, datetime

import grpc

from deployctl import redact
from deployctl.cloud.crc32c import crc32c
from deployctl.emulator import rpc
from deployctl.emulator.rpc import Method, RpcError

log = logging.getLogger("deployctl.emulator.secretmanager")

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
SECRETS = "secretmanager_secrets"
VERSIONS = "secretmanager_versions"
MAX_PAYLOAD = 64 * 1024
MAX_PAGE_SIZE = 25000

_PARENT = r"projects/[^/]+(?:/locations/[^/]+)?"
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SECRET_NAME = re.compile(rf"(?P<parent>{_PARENT})/secrets/(?P<id>[^/]+)")
_VERSION_NAME = re.compile(rf"(?P<secret>{_PARENT}/secrets/[^/]+)/versions/(?P<version>[^/]+)")


def create(emulator) -> SecretManager:
    # Defence in depth: nothing here logs a payload, but a message that ever did would still be masked.
    if not any(isinstance(f, redact.RedactingFilter) for f in log.filters):
        log.addFilter(redact.RedactingFilter())
    return SecretManager(emulator.store)


def _now() -> datetime:
    return datetime.now(UTC)


def _etag() -> str:
    # Google's etags are opaque quoted strings; a fresh random one per change is all a client can rely on.
    return f'"{_random.token_hex(7)}"'


def _parse_secret_name(name: str) -> str:
    m = _SECRET_NAME.fullmatch(name or "")
    if not m:
        raise rpc.invalid(f"Invalid resource field value in the request: name [{name}] must match "
                          "projects/*/secrets/*")
    return name


def _parse_version_name(name: str) -> tuple[str, str]:
    m = _VERSION_NAME.fullmatch(name or "")
    if not m or not (m["version"] == "latest" or m["version"].isdigit()):
        raise rpc.invalid(f"Invalid resource field value in the request: name [{name}] must match "
                          "projects/*/secrets/*/versions/{number|latest}")
    return m["secret"], m["version"]


def _check_parent(parent: str) -> str:
    if not re.fullmatch(_PARENT, parent or ""):
        raise rpc.invalid(f"Invalid resource field value in the request: parent [{parent}] must match projects/*")
    return parent


class SecretManager:
    def __init__(self, store) -> None:
        from google.cloud.secretmanager_v1 import types

        self.store = store
        self.types = types

    # --- component interface ------------------------------------------------------------------------
    def handlers(self):
        t = self.types
        methods = {
            "CreateSecret": Method(self.create_secret, t.CreateSecretRequest, t.Secret),
            "GetSecret": Method(self.get_secret, t.GetSecretRequest, t.Secret),
            "ListSecrets": Method(self.list_secrets, t.ListSecretsRequest, t.ListSecretsResponse),
            "DeleteSecret": Method(self.delete_secret, t.DeleteSecretRequest, _empty()),
            "AddSecretVersion": Method(self.add_secret_version, t.AddSecretVersionRequest, t.SecretVersion),
            "GetSecretVersion": Method(self.get_secret_version, t.GetSecretVersionRequest, t.SecretVersion),
            "ListSecretVersions": Method(self.list_secret_versions, t.ListSecretVersionsRequest,
                                         t.ListSecretVersionsResponse),
            "AccessSecretVersion": Method(self.access_secret_version, t.AccessSecretVersionRequest,
                                          t.AccessSecretVersionResponse),
            "DisableSecretVersion": Method(self.disable_secret_version, t.DisableSecretVersionRequest,
                                           t.SecretVersion),
            "EnableSecretVersion": Method(self.enable_secret_version, t.EnableSecretVersionRequest,
                                          t.SecretVersion),
            "DestroySecretVersion": Method(self.destroy_secret_version, t.DestroySecretVersionRequest,
                                           t.SecretVersion),
        }
        return [rpc.service(SERVICE, methods)]

    def start(self) -> None:
        # After a restart the values on disk must be masked in this process's output as well.
        for record in self.store.list(VERSIONS):
            if record.get("data"):
                redact.register(base64.b64decode(record["data"]))

    def stop(self) -> None:
        pass

    # --- in-process use by other components (Cloud Run resolves secret env vars here) ----------------
    def access(self, name: str) -> bytes:
        """The payload of `projects/p/secrets/s/versions/{n|latest}`; raises RpcError as the RPC would."""
        _, data = self._accessible(name)
        return data

    # --- secrets ------------------------------------------------------------------------------------
    def _secret_record(self, name: str) -> dict:
        record = self.store.get(SECRETS, _parse_secret_name(name))
        if record is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found.")
        return record

    def _secret(self, record: dict):
        return self.types.Secret.from_json(record["secret"])

    def create_secret(self, req):
        parent = _check_parent(req.parent)
        if not _SECRET_ID.fullmatch(req.secret_id or ""):
            raise rpc.invalid(f"Invalid secret id [{req.secret_id}]: a secret id must be 1 to 255 characters "
                              "of letters, digits, underscores (_) and hyphens (-).")
        replication = req.secret.replication
        if not ("automatic" in replication or "user_managed" in replication):
            raise rpc.invalid("Secret.replication must be specified (automatic or user_managed).")
        name = f"{parent}/secrets/{req.secret_id}"
        secret = self.types.Secret(req.secret)
        secret.name = name
        secret.create_time = _now()
        secret.etag = _etag()
        with self.store.locked():
            if self.store.get(SECRETS, name) is not None:
                raise rpc.already_exists(f"Secret [{name}]")
            self.store.put(SECRETS, name, {"secret": self.types.Secret.to_json(secret), "next_version": 1})
        log.info("secretmanager: created %s", name)
        return secret

    def get_secret(self, req):
        return self._secret(self._secret_record(req.name))

    def list_secrets(self, req):
        parent = _check_parent(req.parent)
        if req.filter:
            raise rpc.invalid("The emulator does not support filters on ListSecrets.")
        records = self.store.list(SECRETS, parent + "/secrets/")
        secrets = [self._secret(r) for r in records]
        page, token = _page([(s.name, s) for s in secrets], req.page_size, req.page_token)
        return self.types.ListSecretsResponse(secrets=page, next_page_token=token, total_size=len(secrets))

    def delete_secret(self, req):
        with self.store.locked():
            secret = self._secret(self._secret_record(req.name))
            _check_etag(req.etag, secret.etag, req.name)
            for version in self.store.list(VERSIONS, req.name + "/versions/"):
                self.store.delete(VERSIONS, version["name"])
            self.store.delete(SECRETS, req.name)
        log.info("secretmanager: deleted %s", req.name)
        return _empty()()

    # --- versions -----------------------------------------------------------------------------------
    def _version_records(self, secret_name: str) -> list[dict]:
        """The secret's version records, newest first (as Google lists them)."""
        records = self.store.list(VERSIONS, secret_name + "/versions/")
        return sorted(records, key=lambda r: r["number"], reverse=True)

    def _version_record(self, name: str) -> dict:
        secret_name, version = _parse_version_name(name)
        self._secret_record(secret_name)
        if version == "latest":
            records = self._version_records(secret_name)
            if not records:
                raise RpcError(grpc.StatusCode.NOT_FOUND, f"Secret [{secret_name}] not found or has no versions.")
            return records[0]
        record = self.store.get(VERSIONS, f"{secret_name}/versions/{int(version)}")
        if record is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"Secret Version [{name}] not found.")
        return record

    def _version(self, record: dict):
        return self.types.SecretVersion.from_json(record["version"])

    def add_secret_version(self, req):
        secret_name = _parse_secret_name(req.parent)
        data = req.payload.data
        if len(data) > MAX_PAYLOAD:
            raise rpc.invalid(f"Secret payload is {len(data)} bytes; it must be no larger than {MAX_PAYLOAD} bytes.")
        checksum = crc32c(data)
        client_checksum = "data_crc32c" in req.payload
        if client_checksum and req.payload.data_crc32c != checksum:
            raise rpc.invalid("Checksum mismatch: the payload's data_crc32c does not match its data "
                              "(data corruption detected).")
        redact.register(data)
        with self.store.locked():
            record = self._secret_record(secret_name)
            number = record["next_version"]
            record["next_version"] = number + 1
            version = self.types.SecretVersion(
                name=f"{secret_name}/versions/{number}", create_time=_now(),
                state=self.types.SecretVersion.State.ENABLED, etag=_etag(),
                client_specified_payload_checksum=client_checksum)
            self.store.put(VERSIONS, version.name, {
                "name": version.name, "number": number, "version": self.types.SecretVersion.to_json(version),
                "data": base64.b64encode(data).decode(), "crc32c": checksum})
            self.store.put(SECRETS, secret_name, record)
        log.info("secretmanager: added %s (%d bytes)", version.name, len(data))
        return version

    def get_secret_version(self, req):
        return self._version(self._version_record(req.name))

    def list_secret_versions(self, req):
        secret_name = _parse_secret_name(req.parent)
        self._secret_record(secret_name)
        if req.filter:
            raise rpc.invalid("The emulator does not support filters on ListSecretVersions.")
        versions = [self._version(r) for r in self._version_records(secret_name)]
        page, token = _page([(f"{int(v.name.rsplit('/', 1)[1]):012d}", v) for v in versions],
                            req.page_size, req.page_token, descending=True)
        return self.types.ListSecretVersionsResponse(versions=page, next_page_token=token,
                                                     total_size=len(versions))

    def _accessible(self, name: str) -> tuple[object, bytes]:
        record = self._version_record(name)
        version = self._version(record)
        if version.state != self.types.SecretVersion.State.ENABLED:
            raise rpc.failed_precondition(f"Secret Version [{version.name}] is in {version.state.name} state.")
        return version, base64.b64decode(record["data"])

    def access_secret_version(self, req):
        version, data = self._accessible(req.name)
        return self.types.AccessSecretVersionResponse(
            name=version.name, payload=self.types.SecretPayload(data=data, data_crc32c=crc32c(data)))

    def _change_state(self, req, target: str):
        State = self.types.SecretVersion.State  # noqa: N806
        with self.store.locked():
            record = self._version_record(req.name)
            version = self._version(record)
            _check_etag(req.etag, version.etag, version.name)
            if version.state == State.DESTROYED:
                raise rpc.failed_precondition(f"Secret Version [{version.name}] is in DESTROYED state.")
            version.state = State[target]
            version.etag = _etag()
            if target == "DESTROYED":
                version.destroy_time = _now()
                record.pop("data", None)
                record.pop("crc32c", None)
            record["version"] = self.types.SecretVersion.to_json(version)
            self.store.put(VERSIONS, version.name, record)
        log.info("secretmanager: %s is now %s", version.name, target)
        return version

    def disable_secret_version(self, req):
        return self._change_state(req, "DISABLED")

    def enable_secret_version(self, req):
        return self._change_state(req, "ENABLED")

    def destroy_secret_version(self, req):
        return self._change_state(req, "DESTROYED")


def _check_etag(given: str, current: str, name: str) -> None:
    if given and given != current:
        raise RpcError(grpc.StatusCode.ABORTED, f"The etag provided for [{name}] does not match the current etag.")


def _page(items: list[tuple[str, object]], page_size: int, page_token: str, *, descending: bool = False):
    """One page of `items` (already in list order, each with a sort key) and the token for the next one.

    The token encodes the last key returned rather than an offset, so items added or deleted between two
    calls neither repeat nor get skipped.
    """
    if page_size < 0:
        raise rpc.invalid("page_size must not be negative.")
    size = min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    if page_token:
        try:
            after = base64.urlsafe_b64decode(page_token.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            after = None
        if after is None or base64.urlsafe_b64encode(after.encode()).decode() != page_token:
            raise rpc.invalid(f"Invalid page_token [{page_token}].")
        items = [(k, v) for k, v in items if (k < after if descending else k > after)]
    page = items[:size]
    token = ""
    if len(items) > size:
        token = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
    return [v for _, v in page], token


def _empty():
    from google.protobuf import empty_pb2

    return empty_pb2.Empty
