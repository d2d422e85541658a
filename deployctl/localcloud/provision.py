"""Provision the local cloud from the config, the way Terraform provisions dev: Cloud SQL instances,
databases, users with generated passwords stored in Secret Manager, the services' connection-string and
other secrets, and a Terraform-style state file recording it all.

It runs when the config changed since the last time (a digest in provisioned.json), never on every command:
a secret or user changed by hand stays changed, so that `doctor` can find it.
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
from deployctl.errors import AlreadyExists, CloudError, NotFound
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


def provision_if_needed(cfg: Config, state_dir: Path, endpoint, progress: Callable = lambda *a, **k: None,
                        force: bool = False) -> bool:
    marker = state_dir / MARKER
    want = digest(cfg)
    try:
        if not force and json.loads(marker.read_text()).get("digest") == want:
            return False
    except (OSError, ValueError):
        pass
    provision(cfg, state_dir, endpoint, progress)
    atomic_write_text(marker, json.dumps({"digest": want}))
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
                    admin.insert_instance(inst.name, cfg.environment.region)
                except AlreadyExists:  # an interrupted `local up` started creating it: wait for that one
                    _wait_for_instance(admin, inst.name)
                live = admin.get_instance(inst.name)
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


def _wait_for_instance(admin, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.get_instance(name)
            return
        except NotFound:
            if time.monotonic() > deadline:
                raise
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
    if user is None or secret is None:
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
    tf["databases"].append({"key": db.name, "instance": inst.name, "name": db.name})
    tf["users"].append({"key": db.user, "instance": inst.name, "name": db.user, "password": password})
    tf["secret_versions"].append({"key": db.password_secret.replace("-", "_"), "secret": db.password_secret,
                                  "version": version, "data": password})
    if db.url_secret and not _latest(store, db.url_secret):
        url = dsn_mod.build(driver=db.driver, user=db.user, password=password, database=db.name,
                            host=ips[db.instance], port=inst.port, sslmode=inst.ssl).url
        progress("local cloud", f"storing {sname}'s connection string in secret {db.url_secret}")
        store.create_secret(db.url_secret, exist_ok=True)
        store.add_version(db.url_secret, url)
