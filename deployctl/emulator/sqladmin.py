"""Cloud SQL Admin v1 (instances, users, databases), backed by one real PostgreSQL 15 cluster per instance.

An instance gets its own loopback "private IP" with PostgreSQL on 5432 (scram, SSL only) and the connector's
TLS listener on 3307. Users and databases are read from the live cluster (pg_roles, pg_database), so a role
dropped by hand with SQL disappears from users.list, as on Cloud SQL. Instance metadata (IP, data directory,
superuser password) is kept in the Store: a restarted emulator brings the same clusters back on the same IPs.
Every operation finishes before the call returns, so the Operation is already DONE.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import secrets
import threading
import uuid

import grpc

from deployctl import redact
from deployctl.emulator import certs, connector
from deployctl.emulator import sqladmin_messages as msg
from deployctl.emulator.netaddr import allocate_private_ip
from deployctl.emulator.postgres import (
    CLOUDSQL_SUPERUSER,
    PG_USER,
    Cluster,
    UnsafeClusterBase,
    cluster_base,
    cluster_base_path,
    quote_ident,
)
from deployctl.emulator.rpc import Method, RpcError, already_exists, failed_precondition, invalid, service
from deployctl.osutil import cmdline, pid_alive

log = logging.getLogger("deployctl.emulator.sqladmin")

COLLECTION = "sql_instances"
DEFAULT_VERSION = "POSTGRES_15"
SERVICE_PREFIX = "google.cloud.sql.v1"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _not_found(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.NOT_FOUND, message)


class SqlAdminEmulator:
    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.store = emulator.store
        self.ca = certs.load_or_make_ca(emulator.state_dir / "ca")
        self.forwarder: connector.TlsForwarder | None = None
        self._lock = threading.RLock()  # serialises instance create/delete
        connector.install_rest_routes(emulator, self.record, self.ca)

    # --- records and clusters ------------------------------------------------------------------------
    @staticmethod
    def _key(project: str, name: str) -> str:
        return f"{project}/{name}"

    def record(self, project: str, name: str) -> dict | None:
        """A RUNNABLE instance's record (what the connector may connect to), else None."""
        rec = self.store.get(COLLECTION, self._key(project, name))
        return rec if rec and rec.get("state") == "RUNNABLE" else None

    def _require(self, project: str, name: str, *, pending_ok: bool = False) -> dict:
        rec = self.store.get(COLLECTION, self._key(project, name))
        if rec is None:
            raise _not_found(f"The Cloud SQL instance {project}:{name} does not exist.")
        if rec.get("state") != "RUNNABLE" and not pending_ok:
            raise failed_precondition(f"Invalid request since instance {name} is being created (state "
                                      f"{rec.get('state')}); retry once it is RUNNABLE.")
        return rec

    @staticmethod
    def _cluster(rec: dict) -> Cluster:
        redact.register(rec["superuser_password"])
        return Cluster(rec["data_dir"], host=rec["ip"], port=5432, superuser_password=rec["superuser_password"])

    def instance_cluster(self, name: str, project: str | None = None) -> Cluster:
        """The cluster behind instance `name` (in `project`, or in any project), for in-process helpers."""
        for rec in self.store.list(COLLECTION):
            if rec["name"] == name and (project is None or rec["project"] == project):
                return self._cluster(rec)
        raise KeyError(f"no Cloud SQL instance named {name!r}")

    def _execute(self, rec: dict, sql: str, **params) -> list:
        from pg8000.exceptions import InterfaceError

        try:
            return self._cluster(rec).execute(sql, **params)
        except (InterfaceError, OSError) as e:  # no server behind the socket
            raise failed_precondition(
                f"Invalid request since instance {rec['name']} is not running ({type(e).__name__}).") from e

    def _bring_up(self, rec: dict) -> None:
        cluster = self._cluster(rec)
        cluster.init(self.ca)
        cluster.start()
        cluster.wait_ready()
        cluster.ensure_cloudsql_roles()
        self._forwarder().add(rec["ip"], cluster.socket_dir / f".s.PGSQL.{cluster.port}",
                              f"{rec['project']}:{rec['name']}")

    def _create(self, rec: dict) -> None:
        """Make the instance's cluster from nothing and mark it RUNNABLE; on failure leave no trace of it."""
        key = self._key(rec["project"], rec["name"])
        cluster = self._cluster(rec)
        try:
            cluster.end_strays()  # an initdb a SIGKILLed emulator had started may still be writing there
            cluster.destroy()
            self._bring_up(rec)
        except Exception:
            cluster.destroy()
            self.store.delete(COLLECTION, key)
            raise
        rec["state"] = "RUNNABLE"
        self.store.put(COLLECTION, key, rec)

    def _forwarder(self) -> connector.TlsForwarder:
        if self.forwarder is None:
            self.forwarder = connector.TlsForwarder(self.ca, self.emulator.state_dir / "sqladmin")
        return self.forwarder

    # --- component interface -------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            for rec in self.store.list(COLLECTION):
                try:
                    self._restart(rec)
                except Exception:
                    log.exception("sqladmin: could not restart instance %s", rec["name"])

    def _restart(self, rec: dict) -> None:
        if rec.get("state") == "PENDING_CREATE":
            # The emulator died while creating it: whatever is in its data directory is half made.
            log.warning("sqladmin: instance %s was still being created when the emulator stopped; creating it "
                        "again", rec["name"])
            self._create(rec)
            return
        if not self._cluster(rec).initialised:
            # Its data directory is gone (a reboot, a tmp cleaner). Bring up an empty cluster, and say so where
            # `deployctl local up` looks (recreated_instances), so that it provisions the instance again.
            reason = f"its data directory {rec['data_dir']} was missing"
            log.warning("sqladmin: instance %s: %s; it starts again with an empty cluster", rec["name"], reason)
            rec["recreated"] = {"at": _now(), "reason": reason}
            self.store.put(COLLECTION, self._key(rec["project"], rec["name"]), rec)
        self._bring_up(rec)

    def endpoint_info(self) -> dict:
        """For emulator.json: the instances whose cluster had to be made anew (their data was lost), with when
        and why, so that `deployctl local up` provisions them again."""
        return {"recreated_instances": [{"instance": f"{r['project']}:{r['name']}", **r["recreated"]}
                                        for r in self.store.list(COLLECTION) if r.get("recreated")]}

    def stop(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        for rec in self.store.list(COLLECTION):
            self._cluster(rec).stop()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        from google.cloud.sqladmin_v1 import types as t

        return [
            service(f"{SERVICE_PREFIX}.SqlInstancesService", {
                "Get": Method(self.get_instance, t.SqlInstancesGetRequest, t.DatabaseInstance),
                "List": Method(self.list_instances, t.SqlInstancesListRequest, t.InstancesListResponse),
                "Insert": Method(self.insert_instance, t.SqlInstancesInsertRequest, t.Operation),
                "Delete": Method(self.delete_instance, t.SqlInstancesDeleteRequest, t.Operation),
            }),
            service(f"{SERVICE_PREFIX}.SqlUsersService", {
                "List": Method(self.list_users, t.SqlUsersListRequest, t.UsersListResponse),
                "Get": Method(self.get_user, t.SqlUsersGetRequest, t.User),
                "Insert": Method(self.insert_user, t.SqlUsersInsertRequest, t.Operation),
                "Update": Method(self.update_user, t.SqlUsersUpdateRequest, t.Operation),
                "Delete": Method(self.delete_user, t.SqlUsersDeleteRequest, t.Operation),
            }),
            service(f"{SERVICE_PREFIX}.SqlDatabasesService", {
                "List": Method(self.list_databases, t.SqlDatabasesListRequest, t.DatabasesListResponse),
                "Get": Method(self.get_database, t.SqlDatabasesGetRequest, t.Database),
                "Insert": Method(self.insert_database, t.SqlDatabasesInsertRequest, t.Operation),
                "Delete": Method(self.delete_database, t.SqlDatabasesDeleteRequest, t.Operation),
            }),
        ]

    def _instance_message(self, rec: dict):
        if rec.get("state") == "PENDING_CREATE":
            state = "PENDING_CREATE"
        else:
            pid = self._cluster(rec).postmaster_pid()
            state = "RUNNABLE" if pid and pid_alive(pid) else "FAILED"  # killed by hand: report it (doctor)
        return msg.instance(rec, state, self.ca.cert_pem.decode())

    # --- instances -----------------------------------------------------------------------------------
    def get_instance(self, req):
        # While it is being created, Cloud SQL answers with state PENDING_CREATE, not NOT_FOUND.
        return self._instance_message(self._require(req.project, req.instance, pending_ok=True))

    def list_instances(self, req):
        from google.cloud.sqladmin_v1 import types as t

        recs = self.store.list(COLLECTION, f"{req.project}/")
        return t.InstancesListResponse(kind="sql#instancesList",
                                       items=[self._instance_message(r) for r in recs])

    def insert_instance(self, req):
        from google.cloud.sqladmin_v1 import types as t

        body, project = req.body, req.project
        if not project or not body.name:
            raise invalid("project and body.name are required")
        version = t.SqlDatabaseVersion(body.database_version).name if body.database_version else DEFAULT_VERSION
        if not version.startswith("POSTGRES_"):
            raise invalid(f"the local cloud runs PostgreSQL only, not {version}")
        key = self._key(project, body.name)
        with self._lock:
            if self.store.get(COLLECTION, key) is not None:
                raise RpcError(grpc.StatusCode.ALREADY_EXISTS,
                               f"The Cloud SQL instance {project}:{body.name} already exists.")
            # root_password becomes the postgres user's password, as on Cloud SQL; else a random one.
            password = body.root_password or secrets.token_urlsafe(24)
            redact.register(password)
            suffix = hashlib.sha256(project.encode()).hexdigest()[:6]
            try:
                data_dir = cluster_base(str(self.emulator.state_dir)) / f"{body.name}-{suffix}"
            except UnsafeClusterBase as e:
                raise failed_precondition(str(e)) from None
            rec = {"project": project, "name": body.name, "region": body.region or "us-central1",
                   "database_version": version, "ip": allocate_private_ip(),
                   "data_dir": str(data_dir), "superuser_password": password,
                   "tier": body.settings.tier if body.settings else "", "labels": dict(body.settings.user_labels),
                   "create_time": _now(), "etag": uuid.uuid4().hex, "state": "PENDING_CREATE"}
            self.store.put(COLLECTION, key, rec)  # PENDING_CREATE: a restart after a crash finishes it
            self._create(rec)
        log.info("sqladmin: instance %s:%s running on %s", project, body.name, rec["ip"])
        return msg.operation(project, body.name, "CREATE")

    def delete_instance(self, req):
        with self._lock:  # waits for a create in progress
            rec = self._require(req.project, req.instance)
            if self.forwarder is not None:
                self.forwarder.remove(rec["ip"])
            self._cluster(rec).destroy()
            self.store.delete(COLLECTION, self._key(req.project, req.instance))
        return msg.operation(req.project, req.instance, "DELETE")

    # --- users: the live pg_roles ----------------------------------------------------------------------
    # Cloud SQL does not list its own roles (cloudsqlsuperuser, a NOLOGIN group role, and the other cloudsql*
    # ones) as users; PostgreSQL's predefined pg_* roles are not users either.
    _NOT_USERS = "rolname !~ '^(pg_|cloudsql)'"

    def _roles(self, rec: dict) -> list[str]:
        rows = self._execute(rec, f"SELECT rolname FROM pg_roles WHERE {self._NOT_USERS} ORDER BY rolname")
        return [r[0] for r in rows]

    def _user_exists(self, rec: dict, name: str) -> bool:
        return bool(self._execute(rec, f"SELECT 1 FROM pg_roles WHERE rolname = :n AND {self._NOT_USERS}", n=name))

    def list_users(self, req):
        from google.cloud.sqladmin_v1 import types as t

        rec = self._require(req.project, req.instance)
        return t.UsersListResponse(kind="sql#usersList",
                                   items=[msg.user(rec, n) for n in self._roles(rec)])

    def get_user(self, req):
        rec = self._require(req.project, req.instance)
        if not self._user_exists(rec, req.name):
            raise _not_found(f"The user {req.name} does not exist in instance {req.instance}.")
        return msg.user(rec, req.name)

    def insert_user(self, req):
        rec = self._require(req.project, req.instance)
        name, password = req.body.name, req.body.password
        if not name:
            raise invalid("body.name is required")
        redact.register(password or None)
        if self._execute(rec, "SELECT 1 FROM pg_roles WHERE rolname = :n", n=name):  # pg_* too: taken
            raise already_exists(f"user {name} in instance {req.instance}")
        self._cluster(rec).create_role(name, password or None, in_role=CLOUDSQL_SUPERUSER)
        return msg.operation(req.project, req.instance, "CREATE_USER")

    def update_user(self, req):
        rec = self._require(req.project, req.instance)
        name = req.name or req.body.name
        if not self._user_exists(rec, name):
            raise _not_found(f"The user {name} does not exist in instance {req.instance}.")
        if req.body.password:
            redact.register(req.body.password)
            self._cluster(rec).set_password(name, req.body.password)
            if name == PG_USER:  # the emulator administers the cluster as postgres: keep up
                rec["superuser_password"] = req.body.password
                self.store.put(COLLECTION, self._key(req.project, req.instance), rec)
        return msg.operation(req.project, req.instance, "UPDATE_USER")

    def delete_user(self, req):
        rec = self._require(req.project, req.instance)
        if req.name == PG_USER:
            raise invalid("the postgres user cannot be deleted")
        if not self._user_exists(rec, req.name):
            raise _not_found(f"The user {req.name} does not exist in instance {req.instance}.")
        try:
            self._execute(rec, f"DROP ROLE {quote_ident(req.name)}")
        except Exception as e:  # dependent objects (2BP01): Cloud SQL refuses too
            raise failed_precondition(f"user {req.name} cannot be dropped: {getattr(e, 'args', [e])[0]}") from e
        return msg.operation(req.project, req.instance, "DELETE_USER")

    # --- databases: the live pg_database ---------------------------------------------------------------
    def _databases(self, rec: dict) -> list[str]:
        rows = self._execute(rec, "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname")
        return [r[0] for r in rows]

    def list_databases(self, req):
        from google.cloud.sqladmin_v1 import types as t

        rec = self._require(req.project, req.instance)
        return t.DatabasesListResponse(kind="sql#databasesList",
                                       items=[msg.database(rec, n) for n in self._databases(rec)])

    def get_database(self, req):
        rec = self._require(req.project, req.instance)
        if req.database not in self._databases(rec):
            raise _not_found(f"The database {req.database} does not exist in instance {req.instance}.")
        return msg.database(rec, req.database)

    def insert_database(self, req):
        rec = self._require(req.project, req.instance)
        name = req.body.name
        if not name:
            raise invalid("body.name is required")
        if name in self._databases(rec):
            raise already_exists(f"database {name} in instance {req.instance}")
        self._cluster(rec).create_database(name, owner=CLOUDSQL_SUPERUSER)
        return msg.operation(req.project, req.instance, "CREATE_DATABASE")

    def delete_database(self, req):
        rec = self._require(req.project, req.instance)
        if req.database not in self._databases(rec):
            raise _not_found(f"The database {req.database} does not exist in instance {req.instance}.")
        self._cluster(rec).drop_database(req.database)
        return msg.operation(req.project, req.instance, "DELETE_DATABASE")


def create(emulator) -> SqlAdminEmulator:
    return SqlAdminEmulator(emulator)


def cleanup(state_dir) -> None:
    """After a crash of the emulator: stop the clusters it had started (they outlive it)."""
    from pathlib import Path

    from deployctl.emulator.state import Store

    for rec in Store(Path(state_dir) / "state").list(COLLECTION):
        SqlAdminEmulator._cluster(rec).stop()


def leftovers(state_dir) -> list[dict]:
    """The clusters a crashed emulator left running."""
    from pathlib import Path

    from deployctl.emulator.state import Store

    out = []
    for rec in Store(Path(state_dir) / "state").list(COLLECTION):
        cluster = SqlAdminEmulator._cluster(rec)
        pid = cluster.postmaster_pid()
        if pid and pid_alive(pid) and str(cluster.data_dir) in cmdline(pid):  # not a reused pid
            out.append({"kind": "postgres", "pid": pid, "instance": rec["name"]})
    return out


def purge(state_dir) -> None:
    """Destroy the clusters of the emulator whose state is in `state_dir` (they live outside it)."""
    import shutil
    from pathlib import Path

    from deployctl.emulator.state import Store

    for rec in Store(Path(state_dir) / "state").list(COLLECTION):
        SqlAdminEmulator._cluster(rec).destroy()
    base = cluster_base_path(str(state_dir))
    shutil.rmtree(base, ignore_errors=True)
    with contextlib.suppress(OSError):  # shared by every local cloud of this user: only if now empty
        base.parent.rmdir()
