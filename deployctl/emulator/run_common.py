"""Shared pieces of the emulated Cloud Run API: names, stored messages, conditions, and how a container becomes
a local command line with its environment."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import string
import sys
import time

import grpc

from deployctl.emulator.rpc import RpcError, invalid, not_found

_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "SSL_CERT_FILE", "VIRTUAL_ENV")


def check_id(kind: str, value: str) -> None:
    if not _ID.match(value or ""):
        raise invalid(f"{kind} id {value!r} must be 1-49 lowercase letters, digits or hyphens, "
                      "start with a letter and not end with a hyphen")


def parent_of(name: str) -> str:
    """projects/p/locations/l/services/s -> projects/p/locations/l"""
    return "/".join(name.split("/")[:4])


def project_of(name: str) -> str:
    return name.split("/")[1] if name.startswith("projects/") else ""


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def check_parent(parent: str) -> None:
    parts = parent.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "locations":
        raise invalid(f"parent must look like projects/PROJECT/locations/LOCATION, got {parent!r}")


def random_suffix(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def now_ts():
    from google.protobuf import timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


# --- stored messages ---------------------------------------------------------------------------------
def dump(msg) -> dict:
    return json.loads(type(msg).to_json(msg))


def load(cls, data: dict):
    return cls.from_json(json.dumps(data), ignore_unknown_fields=True)


def etag_of(msg) -> str:
    body = type(msg).serialize(msg)
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def fetch(store, collection: str, cls, name: str, kind: str):
    """The stored message `name` of `cls` (e.g. Service), or NOT_FOUND naming it as `kind` (e.g. "Service")."""
    data = store.get(collection, name)
    if data is None:
        raise not_found(f"{kind} {name}")
    return load(cls, data)


def save(store, collection: str, msg) -> None:
    """Store `msg` under its name with a fresh etag (computed over the message without its old one)."""
    msg.etag = ""
    msg.etag = etag_of(msg)
    store.put(collection, msg.name, dump(msg))


def check_etag(given: str, current: str, name: str) -> None:
    if given and given != current:
        raise RpcError(grpc.StatusCode.ABORTED,
                       f"etag mismatch for {name}: the resource changed since it was read "
                       f"(given {given}, current {current}); read it again and retry")


def page(items: list, page_size: int, page_token: str) -> tuple[list, str]:
    try:
        start = int(page_token or 0)
    except ValueError as e:
        raise invalid(f"invalid page_token {page_token!r}") from e
    size = page_size or 100
    token = str(start + size) if start + size < len(items) else ""
    return items[start:start + size], token


def condition(type_: str, state: str, message: str = "", *, reason: str | None = None,
              revision_reason: str | None = None, execution_reason: str | None = None,
              severity: str | None = None):
    from google.cloud.run_v2.types import Condition

    c = Condition(type_=type_, state=getattr(Condition.State, state), message=message,
                  last_transition_time=now_ts())
    if severity:
        c.severity = getattr(Condition.Severity, severity)
    if reason:
        c.reason = getattr(Condition.CommonReason, reason)
    if revision_reason:
        c.revision_reason = getattr(Condition.RevisionReason, revision_reason)
    if execution_reason:
        c.execution_reason = getattr(Condition.ExecutionReason, execution_reason)
    return c


# --- containers as local processes --------------------------------------------------------------------
class StartError(Exception):
    """A container cannot be started (no command, secret not accessible): becomes a failed condition."""


def command_line(container) -> list[str]:
    argv = list(container.command) + list(container.args)
    if not argv:
        raise StartError(f"container {container.name or '0'} has no command: the local cloud cannot run image "
                         f"{container.image!r} and runs the container's command/args as a local process")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def resolve_env(container, project: str, secret_access) -> dict[str, str]:
    """The container's env with secret references resolved through the emulated Secret Manager."""
    env: dict[str, str] = {}
    for var in container.env:
        ref = var.value_source.secret_key_ref if "value_source" in var else None
        if ref and ref.secret:
            secret = ref.secret if ref.secret.startswith("projects/") else f"projects/{project}/secrets/{ref.secret}"
            version = f"{secret}/versions/{ref.version or 'latest'}"
            try:
                value = secret_access(version)
            except Exception as e:
                detail = getattr(e, "message", None) or type(e).__name__
                raise StartError(f"env {var.name}: secret version {version} is not accessible: {detail}") from e
            env[var.name] = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
        else:
            env[var.name] = var.value
    return env


def base_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _BASE_ENV if k in os.environ}
    env["PYTHONUNBUFFERED"] = "1"  # Cloud Run delivers log lines as written; so must a piped Python child
    return env


def duration_seconds(d, default: float) -> float:
    """A proto-plus Duration (a timedelta) or a raw protobuf Duration, in seconds; unset gives `default`."""
    if d is None:
        return default
    if hasattr(d, "total_seconds"):
        return d.total_seconds() or default
    return (d.seconds + d.nanos / 1e9) or default


def monotonic() -> float:
    return time.monotonic()
