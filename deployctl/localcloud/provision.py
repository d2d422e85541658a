"""Provision the local cloud from the config, the way Terraform provisions dev: Cloud SQL instances,
databases, users with generated passwords stored in Secret Manager, the services' connection-string and
other secrets, and a Terraform-style state file recording it all.

It runs when the config changed since the last time (a digest in provisioned.json), or when the emulator had
to re-create an instance whose data was lost, never on every command: a secret or user changed by hand stays
changed, so that `doctor` can find it.
"""

from __future__ import annotations

import hashlib
import json
import secrets as pysecrets
import string
import time
from collections.abc import Callable
from pathlib import Path

from deployctl import dsn as dsn_mod
from deployctl import interrupt, redact, terraform
from deployctl.config import Config
from deployctl.errors import AlreadyExists, CloudError, LocalCloudError, NotFound
from deployctl.osutil import atomic_write_text

MARKER = "provisioned.json"
# Terraform's random_password with special = true and this override_special, as in the story's state.
SPECIALS = "!#$%&*()-_=+[]{}<>:?"


def generate_password(length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits + SPECIALS
    while True:
        pw = "".join(pysecrets.choice(alphabet) for _ in range(length))
        if any(c in SPECIALS for c in pw) and any(c.isdigit() for c in pw):
            return pw


def digest(cfg: Config) -> str:
    wanted = {"instances": {k: v.model_dump(mode="json") for k, v in cfg.instances.items()},
              "services": {k: {"db": v.database.model_dump(mode="json") if v.database else None,
                               "secrets": v.secrets} for k, v in cfg.services.items()}}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def _marker(state_dir: Path) -> dict:
    try:
        data = json.loads((state_dir / MARKER).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def is_current(cfg: Config, state_dir: Path, endpoint, *, compare_config: bool) -> bool:
    """Cheap (no RPC): provisioning was checked against this very run of the emulator (and, with
    compare_config, for this config)."""
    marker = _marker(state_dir)
    return (bool(marker) and marker.get("emulator_started") == endpoint.started
            and (not compare_config or marker.get("digest") == digest(cfg)))


def provision_if_needed(cfg: Config, state_dir: Path, endpoint, progress: Callable = lambda *a, **k: None, *,
                        compare_config: bool = True, force: bool = False) -> bool:
    """Provision when the config changed since the last time (with compare_config: `local up`, or a command
    that had to start the local cloud) or when the emulator had to re-create an instance whose data was lost."""
    marker = _marker(state_dir)
    want = digest(cfg)
    handled = marker.get("recreated") or {}
    ours = {f"{cfg.environment.project}:{inst.name}" for inst in cfg.instances.values()}
    lost = [r for r in endpoint.recreated if r.get("instance") in ours and handled.get(r["instance"]) != r.get("at")]
    changed = marker.get("digest") != want and (compare_config or not marker)
    new_marker = {"digest": want if changed or force or lost else marker.get("digest"),
                  "emulator_started": endpoint.started,
                  "recreated": {r["instance"]: r.get("at") for r in endpoint.recreated}}
    if not (force or changed or lost):
        if marker != new_marker:
            atomic_write_text(state_dir / MARKER, json.dumps(new_marker))
        return False
    for r in lost:
        progress("local cloud", f"Cloud SQL instance {r['instance']} lost its data ({r.get('reason')}) and was "
                                "re-created empty: provisioning its databases, users and secrets again", "warn")
    provision(cfg, state_dir, endpoint, progress)
    atomic_write_text(state_dir / MARKER, json.dumps(new_marker))
    return True


def provision(cfg: Config, state_dir: Path, endpoint, progress: Callable) -> None:
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore
    from deployctl.cloud.sqladmin import SqlAdmin

    clients = Clients(emulator_host=endpoint.grpc, sqladmin_endpoint=endpoint.rest)
    project = cfg.environment.project
    store = SecretStore(clients, project)
    admin = SqlAdmin(clients, project)
    tf = {"instances": [], "users": [], "databases": [], "secret_versions": []}
    try:
        ips = {}
        for key, inst in cfg.instances.items():
            try:
                live = admin.get_instance(inst.name)
            except NotFound:
                progress("local cloud", f"creating Cloud SQL instance {inst.name} (PostgreSQL 15)")
                try:
                    live = admin.insert_instance(inst.name, cfg.environment.region)
                except AlreadyExists:  # someone else is creating it: wait for that one
                    live = admin.get_instance(inst.name)
            if live.state == "PENDING_CREATE":
                progress("local cloud", f"waiting for Cloud SQL instance {inst.name} to be created")
                live = _wait_for_instance(admin, inst.name, state_dir)
            ips[key] = live.private_ip
            tf["instances"].append({"key": key, "name": inst.name, "connection_name": inst.connection_name,
                                    "private_ip": live.private_ip})
        for sname, svc in cfg.services.items():
            if svc.database:
                _provision_database(cfg, sname, svc, admin, store, ips, tf, progress)
            for ref in svc.secrets.values():
                secret_id = ref.split(":", 1)[0]
                if not _latest(store, secret_id):
                    progress("local cloud", f"creating secret {secret_id}")
                    store.create_secret(secret_id, exist_ok=True)
                    store.add_version(secret_id, pysecrets.token_urlsafe(32))
    finally:
        clients.close()
    path = state_dir / "terraform.tfstate"
    terraform.write_state(path, terraform.render_state(project=project, **tf))


def _wait_for_instance(admin, name: str, state_dir: Path, timeout: float = 120.0):
    """The instance once it is RUNNABLE (or FAILED: provisioning then says why); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        live = admin.get_instance(name)  # NotFound: its creation failed, and the error says so
        if live.state != "PENDING_CREATE":
            return live
        if time.monotonic() > deadline:
            raise LocalCloudError(
                f"Cloud SQL instance {name} is still being created after {timeout:.0f} s",
                hint=f"see {state_dir / 'logs' / 'emulator.log'}; `deployctl local down` then `deployctl local up` "
                     "creates it again")
        interrupt.sleep(0.2)


def _latest(store, secret_id: str):
    try:
        return store.access(secret_id, "latest")
    except NotFound:
        return None
    except CloudError as e:  # latest version disabled or destroyed: as good as missing
        if e.code == "failed-precondition":
            return None
        raise


def _provision_database(cfg, sname, svc, admin, store, ips, tf, progress) -> None:
    db = svc.database
    inst = cfg.instances[db.instance]
    if db.name not in admin.list_databases(inst.name):
        progress("local cloud", f"creating database {db.name} on {inst.name}")
        admin.insert_database(inst.name, db.name)
    secret = _latest(store, db.password_secret)
    user = admin.get_user(inst.name, db.user)
    new_password = secret is None
    if new_password:
        password = generate_password()
        redact.register(password)
        if user is None:
            progress("local cloud", f"creating user {db.user} (password in secret {db.password_secret})")
            admin.insert_user(inst.name, db.user, password)
        else:
            admin.set_password(inst.name, db.user, password)
        store.create_secret(db.password_secret, exist_ok=True)
        version = store.add_version(db.password_secret, password).number
    else:
        password, version = secret.text, secret.version
        if user is None:  # as Terraform would: the user again, with the password its state (the secret) holds
            progress("local cloud", f"creating user {db.user} (password from secret {db.password_secret})")
            admin.insert_user(inst.name, db.user, password)
    tf["databases"].append({"key": db.name, "instance": inst.name, "name": db.name})
    tf["users"].append({"key": db.user, "instance": inst.name, "name": db.user, "password": password})
    tf["secret_versions"].append({"key": db.password_secret.replace("-", "_"), "secret": db.password_secret,
                                  "version": version, "data": password})
    if db.url_secret and (new_password or not _latest(store, db.url_secret)):  # never a stale password
        url = dsn_mod.build(driver=db.driver, user=db.user, password=password, database=db.name,
                            host=ips[db.instance], port=inst.port, sslmode=inst.ssl).url
        progress("local cloud", f"storing {sname}'s connection string in secret {db.url_secret}")
        store.create_secret(db.url_secret, exist_ok=True)
        store.add_version(db.url_secret, url)
