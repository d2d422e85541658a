"""Terraform state: read what Terraform says about the databases (for doctor), and write a state of the same
shape for the local cloud (as Terraform would have).

Reads both shapes: the state file itself (format version 4, `terraform state pull`), where resources carry
`instances[].attributes` and an optional `module`, and `terraform show -json`, where they sit under
`values.root_module` and `child_modules[]` with `values`. Every password read is registered for redaction.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deployctl import redact
from deployctl.errors import ConfigError, DeployctlError


@dataclass
class TfUser:
    instance: str
    name: str
    password: str | None
    address: str


@dataclass
class TfSecretVersion:
    secret: str  # the secret id
    version: str
    data: str | None
    address: str


@dataclass
class TfState:
    source: str
    users: list[TfUser] = field(default_factory=list)
    databases: list[tuple[str, str]] = field(default_factory=list)  # (instance, database)
    instances: dict[str, dict] = field(default_factory=dict)  # name -> {connection_name, private_ip}
    secret_versions: list[TfSecretVersion] = field(default_factory=list)

    def user(self, instance: str, name: str) -> TfUser | None:
        return next((u for u in self.users if u.name == name and u.instance == instance), None)

    def latest_secret_version(self, secret_id: str) -> TfSecretVersion | None:
        versions = [v for v in self.secret_versions if v.secret == secret_id]
        return max(versions, key=lambda v: int(v.version) if v.version.isdigit() else 0, default=None)


def _resources(doc: dict):
    """Yield (type, address, attributes) from either shape."""
    if "resources" in doc:  # state format v4
        for res in doc.get("resources", []):
            if res.get("mode", "managed") != "managed":
                continue
            prefix = f"{res['module']}." if res.get("module") else ""
            for i, inst in enumerate(res.get("instances", [])):
                key = inst.get("index_key")
                suffix = f"[{json.dumps(key)}]" if key is not None else ("" if i == 0 else f"[{i}]")
                yield res["type"], f"{prefix}{res['type']}.{res['name']}{suffix}", inst.get("attributes", {})
    elif "values" in doc:  # terraform show -json
        stack = [doc["values"].get("root_module", {})]
        while stack:
            mod = stack.pop()
            for res in mod.get("resources", []):
                if res.get("mode", "managed") == "managed":
                    yield res["type"], res.get("address", res["type"]), res.get("values", {})
            stack.extend(mod.get("child_modules", []))
    else:
        raise ValueError("neither a Terraform state (resources) nor `terraform show -json` output (values)")


def parse(text: str, source: str) -> TfState:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("the top level is not an object")
        state = TfState(source=source)
        for rtype, address, attrs in _resources(doc):
            if not isinstance(attrs, dict):
                continue
            if rtype == "google_sql_user":
                pw = attrs.get("password")
                redact.register(pw)
                state.users.append(TfUser(attrs.get("instance", ""), attrs.get("name", ""), pw, address))
            elif rtype == "google_sql_database":
                state.databases.append((attrs.get("instance", ""), attrs.get("name", "")))
            elif rtype == "google_sql_database_instance":
                state.instances[attrs.get("name", "")] = {
                    "connection_name": attrs.get("connection_name"),
                    "private_ip": attrs.get("private_ip_address") or None}
            elif rtype == "google_secret_manager_secret_version":
                data = attrs.get("secret_data")
                redact.register(data)
                secret = str(attrs.get("secret", "")).rsplit("/", 1)[-1]
                version = str(attrs.get("version") or str(attrs.get("name", "")).rsplit("/", 1)[-1])
                state.secret_versions.append(TfSecretVersion(secret, version, data, address))
            elif rtype == "random_password":
                redact.register(attrs.get("result"))
        return state
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ConfigError(f"Terraform state {source} is not readable: {_safe_reason(e)}",
                          hint="check the file is `terraform state pull` or `terraform show -json` output") from None


def _safe_reason(e: Exception) -> str:
    # json's messages quote positions, not content; other errors may carry values, so keep them generic.
    if isinstance(e, RecursionError):
        return "it nests too deeply"
    return str(e) if isinstance(e, json.JSONDecodeError) else type(e).__name__ + ": unexpected structure"


def read(path: Path | None = None, command: str | None = None, timeout: float = 60) -> TfState:
    if command:
        try:
            out = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout,
                                 check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DeployctlError(f"terraform_state_command failed to run: {e}",
                                 hint="check the command in [environment] works in this directory") from None
        if out.returncode != 0:
            raise DeployctlError(f"terraform_state_command exited {out.returncode}",
                                 hint=redact.redact(out.stderr.strip().splitlines()[-1]) if out.stderr.strip()
                                 else "run it by hand to see why")
        return parse(out.stdout, source=f"`{command}`")
    if path is None:
        raise ConfigError("no Terraform state configured",
                          hint="set terraform_state or terraform_state_command in [environment]")
    try:
        return parse(path.read_text("utf-8"), source=str(path))
    except FileNotFoundError:
        raise ConfigError(f"Terraform state {path} does not exist",
                          hint="run `terraform state pull > FILE` or fix terraform_state") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Terraform state {path} is not readable: {type(e).__name__}",
                          hint="check the file's permissions and that it is Terraform's JSON state "
                               "(`terraform state pull > FILE`)") from None


# --- writing (the local cloud's "Terraform") --------------------------------------------------------------

def _resource(rtype: str, name: str, attrs: dict, sensitive: list[str] = (), module: str = "module.database"):
    return {"module": module, "mode": "managed", "type": rtype, "name": name,
            "provider": 'provider["registry.terraform.io/hashicorp/google"]',
            "instances": [{"schema_version": 0, "attributes": attrs,
                           "sensitive_attributes": [[{"type": "get_attr", "value": s}] for s in sensitive]}]}


def render_state(*, project: str, instances: list[dict], users: list[dict], databases: list[dict],
                 secret_versions: list[dict], serial: int = 1, lineage: str | None = None) -> str:
    """A state file (format 4) for instances/users/databases/secret versions, as Terraform would write it."""
    resources = []
    for inst in instances:
        resources.append(_resource("google_sql_database_instance", inst["key"], {
            "name": inst["name"], "connection_name": inst["connection_name"], "database_version": "POSTGRES_15",
            "private_ip_address": inst.get("private_ip") or "", "public_ip_address": "", "project": project}))
    for db in databases:
        resources.append(_resource("google_sql_database", db["key"], {
            "id": f"projects/{project}/instances/{db['instance']}/databases/{db['name']}",
            "instance": db["instance"], "name": db["name"], "project": project}))
    for user in users:
        resources.append(_resource("google_sql_user", user["key"], {
            "id": f"{user['name']}//{user['instance']}", "instance": user["instance"], "name": user["name"],
            "password": user["password"], "project": project}, ["password"]))
    for sv in secret_versions:
        name = f"projects/{project}/secrets/{sv['secret']}/versions/{sv['version']}"
        resources.append(_resource("google_secret_manager_secret_version", sv["key"], {
            "enabled": True, "id": name, "name": name, "secret": f"projects/{project}/secrets/{sv['secret']}",
            "secret_data": sv["data"], "version": str(sv["version"])}, ["secret_data"]))
    return json.dumps({"version": 4, "terraform_version": "1.9.8", "serial": serial,
                       "lineage": lineage or str(uuid.uuid4()), "outputs": {}, "resources": resources,
                       "check_results": None}, indent=2)


def write_state(path: Path, text: str) -> None:
    """Atomically, readable by the owner only (a state file holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
