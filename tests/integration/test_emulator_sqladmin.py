"""The emulated Cloud SQL Admin API through the real google-cloud-sql client and deployctl's typed wrapper, the
connector's REST endpoints and TLS listener through the real Cloud SQL Python Connector, and real PostgreSQL
behind them. One instance is shared by the whole module; the restart test makes a second, in its own cloud."""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request

import pg8000.native
import pytest

from deployctl import errors
from deployctl.cloud.sqladmin import SqlAdmin, connector_options

PROJECT = "deployctl-test"
REGION = "us-central1"


@pytest.fixture(scope="module")
def admin(clients) -> SqlAdmin:
    return SqlAdmin(clients, PROJECT)


@pytest.fixture(scope="module")
def instance(admin):
    name = "core-" + secrets.token_hex(3)
    inst = admin.insert_instance(name, REGION)
    yield inst
    from google.cloud.sqladmin_v1 import types as t

    op = admin.clients.sql_instances.delete(request=t.SqlInstancesDeleteRequest(project=PROJECT, instance=name))
    assert op.status == t.Operation.SqlOperationStatus.DONE
    with pytest.raises(errors.NotFound):  # teardown doubles as the Delete test
        admin.get_instance(name)


@pytest.fixture(scope="module")
def server_ca(clients, instance) -> str:
    from google.cloud.sqladmin_v1 import types as t

    msg = clients.sql_instances.get(request=t.SqlInstancesGetRequest(project=PROJECT, instance=instance.name))
    return msg.server_ca_cert.cert


def _login(host: str, user: str, password: str, ca_pem: str, database: str = "postgres"):
    ctx = ssl.create_default_context(cadata=ca_pem)  # verify-full against the instance's server CA
    conn = pg8000.native.Connection(user, host=host, port=5432, password=password, database=database,
                                    ssl_context=ctx, timeout=10)
    try:
        return conn.run("SELECT current_user")[0][0]
    finally:
        conn.close()


def _sqlstate(exc: BaseException) -> str:
    return getattr(exc, "orig", exc).args[0]["C"]


# --- instances ---------------------------------------------------------------------------------------------

def test_inserted_instance_runs_postgres_15_on_a_private_loopback_ip(admin, instance):
    got = admin.get_instance(instance.name)
    assert got == instance
    assert got.state == "RUNNABLE"
    assert got.database_version == "POSTGRES_15"
    assert got.connection_name == f"{PROJECT}:{REGION}:{instance.name}"
    assert got.private_ip.startswith("127.") and got.public_ip is None
    assert got.ssl_mode == "ENCRYPTED_ONLY"
    assert instance.name in [i.name for i in admin.list_instances()]


def test_instance_reports_a_server_ca_that_verifies_postgres(server_ca, instance, emulator):
    assert "BEGIN CERTIFICATE" in server_ca
    cluster = emulator.component("sqladmin").instance_cluster(instance.name)
    assert _login(instance.private_ip, "postgres", cluster.superuser_password, server_ca) == "postgres"


def test_tcp_without_ssl_is_refused_like_cloud_sql_private_ip(instance, emulator):
    cluster = emulator.component("sqladmin").instance_cluster(instance.name)
    with pytest.raises(pg8000.exceptions.DatabaseError) as exc:
        pg8000.native.Connection("postgres", host=instance.private_ip, password=cluster.superuser_password,
                                 ssl_context=False, timeout=10)
    assert _sqlstate(exc.value) == "28000"
    assert "no encryption" in exc.value.args[0]["M"]


def test_missing_instance_is_not_found(admin, clients):
    from google.api_core import exceptions as gexc
    from google.cloud.sqladmin_v1 import types as t

    with pytest.raises(errors.NotFound) as exc:
        admin.get_instance("no-such-instance")
    assert "no-such-instance" in exc.value.message and exc.value.hint
    with pytest.raises(errors.NotFound):
        admin.list_users("no-such-instance")
    with pytest.raises(errors.NotFound):
        admin.get_user("no-such-instance", "postgres")  # a missing instance is not a missing user
    with pytest.raises(gexc.NotFound):
        clients.sql_databases.get(request=t.SqlDatabasesGetRequest(project=PROJECT, instance="no-such-instance",
                                                                   database="x"))


def test_inserting_an_existing_instance_is_already_exists(admin, clients, instance):
    from google.api_core import exceptions as gexc
    from google.cloud.sqladmin_v1 import types as t

    with pytest.raises(errors.AlreadyExists):
        admin.insert_instance(instance.name, REGION)
    with pytest.raises(gexc.AlreadyExists):
        clients.sql_instances.insert(request=t.SqlInstancesInsertRequest(
            project=PROJECT, body=t.DatabaseInstance(name=instance.name, region=REGION)))



def test_permission_denied_names_the_cloudsql_role(admin, emulator):
    faults = emulator.state_dir / "faults.json"
    previous = faults.read_text() if faults.exists() else None
    denied = "denied-" + secrets.token_hex(3)
    faults.write_text(json.dumps({"permission_denied": [denied]}))
    try:
        with pytest.raises(errors.PermissionDenied) as exc:
            admin.list_users(denied)
        assert exc.value.details["role"] == "roles/cloudsql.viewer"  # a read: not the admin role (review 2)
        with pytest.raises(errors.PermissionDenied) as exc:
            admin.get_instance(denied)
        assert exc.value.details["role"] == "roles/cloudsql.client"
    finally:
        if previous is None:
            faults.unlink()
        else:
            faults.write_text(previous)

def test_an_instance_being_created_is_pending_not_missing(admin, clients, tmp_path):
    """While Insert runs, Get and List answer PENDING_CREATE (as Cloud SQL does), not NOT_FOUND; provisioning
    waits for it (bounded) instead of failing."""
    import threading

    from deployctl.localcloud.provision import _wait_for_instance

    name = "pending-" + secrets.token_hex(3)
    creating = threading.Thread(target=admin.insert_instance, args=(name, REGION))
    creating.start()
    states: list[str] = []
    while creating.is_alive():
        try:
            states.append(admin.get_instance(name).state)
        except errors.NotFound:
            states.append("NOT_FOUND")  # only before the create has begun
    creating.join()
    assert "PENDING_CREATE" in states
    assert "NOT_FOUND" not in states[states.index("PENDING_CREATE"):]
    assert _wait_for_instance(admin, name, tmp_path).state == "RUNNABLE"
    assert name in [i.name for i in admin.list_instances()]
    from google.cloud.sqladmin_v1 import types as t

    clients.sql_instances.delete(request=t.SqlInstancesDeleteRequest(project=PROJECT, instance=name))


# --- users -------------------------------------------------------------------------------------------------

def test_users_insert_list_get(admin, instance):
    name = "u_" + secrets.token_hex(3)
    assert admin.get_user(instance.name, name) is None
    admin.insert_user(instance.name, name, secrets.token_urlsafe(12))
    user = admin.get_user(instance.name, name)
    assert user is not None and user.name == name and user.type == "BUILT_IN" and user.host == ""
    names = [u.name for u in admin.list_users(instance.name)]
    assert name in names and "postgres" in names
    assert not any(n.startswith("pg_") for n in names)  # predefined roles are not users
    assert "cloudsqlsuperuser" not in names  # nor is Cloud SQL's own group role
    assert admin.get_user(instance.name, "cloudsqlsuperuser") is None
    with pytest.raises(errors.AlreadyExists):
        admin.insert_user(instance.name, name, "another-password")


def test_set_password_changes_what_the_database_accepts(admin, instance, server_ca):
    name = "u_" + secrets.token_hex(3)
    old, new = "old pw%/" + secrets.token_hex(4), "new:pw@" + secrets.token_hex(4)
    admin.insert_user(instance.name, name, old)
    assert _login(instance.private_ip, name, old, server_ca) == name
    admin.set_password(instance.name, name, new)
    assert _login(instance.private_ip, name, new, server_ca) == name
    with pytest.raises(pg8000.exceptions.DatabaseError) as exc:
        _login(instance.private_ip, name, old, server_ca)
    assert _sqlstate(exc.value) == "28P01"


def test_a_password_update_whose_reply_is_lost_is_not_resent(emulator, instance, server_ca):
    """A mutation (review 2, trust finding 9): sent again while the first update runs, Cloud SQL answers 409
    "operation in progress". One attempt; the error says to check whether it was made; the password was set."""
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.policy import CallPolicy

    c = Clients(emulator_host=emulator.address, policy=CallPolicy(attempt_timeout=1.0, deadline=4.0))
    name, new = "u_" + secrets.token_hex(3), "pw-" + secrets.token_hex(6)
    faults = emulator.state_dir / "faults.json"
    try:
        SqlAdmin(c, PROJECT).insert_user(instance.name, name, "first-" + secrets.token_hex(4))
        faults.write_text(json.dumps({"drop_response_rate": 1.0, "drop_response_methods": ["Update"],
                                      "drop_response_code": "DEADLINE_EXCEEDED"}))
        try:
            with pytest.raises(errors.DeployctlError) as info:
                SqlAdmin(c, PROJECT).set_password(instance.name, name, new)
        finally:
            faults.unlink()
    finally:
        c.close()
    assert "check whether it was made" in info.value.hint, info.value
    assert _login(instance.private_ip, name, new, server_ca) == name


def test_set_password_of_missing_user_is_not_found(admin, instance):
    with pytest.raises(errors.NotFound):
        admin.set_password(instance.name, "nobody_here", "whatever-pw")


def test_users_reflect_roles_dropped_by_hand(admin, instance, emulator):
    name = "u_" + secrets.token_hex(3)
    admin.insert_user(instance.name, name, secrets.token_urlsafe(12))
    emulator.component("sqladmin").instance_cluster(instance.name).execute(f'DROP ROLE "{name}"')
    assert name not in [u.name for u in admin.list_users(instance.name)]
    assert admin.get_user(instance.name, name) is None


# --- databases ---------------------------------------------------------------------------------------------

def test_databases_list_and_insert(admin, clients, instance):
    from google.api_core import exceptions as gexc
    from google.cloud.sqladmin_v1 import types as t

    name = "db_" + secrets.token_hex(3)
    assert "postgres" in admin.list_databases(instance.name)
    admin.insert_database(instance.name, name)
    assert name in admin.list_databases(instance.name)
    got = clients.sql_databases.get(request=t.SqlDatabasesGetRequest(project=PROJECT, instance=instance.name,
                                                                     database=name))
    assert got.name == name and got.charset == "UTF8"
    with pytest.raises(errors.AlreadyExists):
        admin.insert_database(instance.name, name)
    with pytest.raises(gexc.NotFound):
        clients.sql_databases.get(request=t.SqlDatabasesGetRequest(project=PROJECT, instance=instance.name,
                                                                   database="no_such_db"))


# --- the Cloud SQL Python Connector -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app_user(admin, instance):
    name, password, db = "app_" + secrets.token_hex(3), "c0nn pw+%&" + secrets.token_hex(4), "appdb"
    admin.insert_user(instance.name, name, password)
    admin.insert_database(instance.name, db)
    return name, password, db


@pytest.fixture()
def connector(clients):
    from google.cloud.sql.connector import Connector

    c = Connector(ip_type="private", timeout=20, **connector_options(clients))
    yield c
    c.close()


def test_connector_connects_over_private_ip(connector, instance, app_user):
    user, password, db = app_user
    conn = connector.connect(instance.connection_name, "pg8000", user=user, password=password, db=db)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1, current_user, current_database()")
        assert cur.fetchone() == [1, user, db]
    finally:
        conn.close()


def test_connector_wrong_password_is_28p01(connector, instance, app_user):
    user, _, db = app_user
    with pytest.raises(Exception) as exc:
        connector.connect(instance.connection_name, "pg8000", user=user, password="wrong-password", db=db)
    assert _sqlstate(exc.value) == "28P01"


def test_connector_missing_database_is_3d000(connector, instance, app_user):
    user, password, _ = app_user
    with pytest.raises(Exception) as exc:
        connector.connect(instance.connection_name, "pg8000", user=user, password=password, db="no_such_db")
    assert _sqlstate(exc.value) == "3D000"


def test_tls_listener_requires_a_client_certificate(instance, server_ca):
    import socket

    ctx = ssl.create_default_context(cadata=server_ca)
    ctx.check_hostname = False
    with socket.create_connection((instance.private_ip, 3307), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=instance.private_ip) as tls:
        # TLS 1.3 reports a missing client certificate on the first read, not in the handshake
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
            if not tls.recv(1):
                raise ConnectionError("closed")


def test_connect_settings_need_credentials_and_an_existing_instance(emulator, instance):
    url = f"{emulator.rest_address}/sql/v1beta4/projects/{PROJECT}/instances/{instance.name}/connectSettings"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": "Bearer x"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.load(resp)
    assert body["ipAddresses"] == [{"type": "PRIVATE", "ipAddress": instance.private_ip}]
    assert body["region"] == REGION and body["databaseVersion"] == "POSTGRES_15" and body["pscEnabled"] is False
    missing = urllib.request.Request(url.replace(instance.name, "nope"), headers={"Authorization": "Bearer x"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(missing, timeout=10)
    assert exc.value.code == 404


# --- persistence -------------------------------------------------------------------------------------------

def test_restarted_emulator_brings_the_instance_back_on_the_same_ip_and_purge_removes_it(tmp_path):
    from deployctl.cloud.clients import Clients
    from deployctl.emulator import sqladmin
    from deployctl.emulator.server import Emulator

    state = (tmp_path / "cloud").resolve()
    with Emulator(state) as first:
        c1 = Clients(emulator_host=first.address)
        before = SqlAdmin(c1, PROJECT).insert_instance("persist", REGION)
        SqlAdmin(c1, PROJECT).insert_database("persist", "kept")
        c1.close()
        cluster = first.component("sqladmin").instance_cluster("persist")
    assert not cluster.is_running()  # stopping the emulator stops its clusters
    second = Emulator(state)
    second.start()
    try:
        c2 = Clients(emulator_host=second.address)
        admin = SqlAdmin(c2, PROJECT)
        after = admin.get_instance("persist")
        assert after == before and after.state == "RUNNABLE"
        assert "kept" in admin.list_databases("persist")  # the same data directory, not a fresh cluster
        c2.close()
    finally:
        second.stop()
    assert (cluster.data_dir / "PG_VERSION").exists()
    sqladmin.purge(state)  # `local down --purge`: clusters live outside the state directory
    assert not cluster.data_dir.exists()


def test_runtime_engine_in_connector_mode(monkeypatch, emulator, instance, app_user):
    """dsn.build(instance_connection_name=...) -> runtime.build_engine: the connector path deployctl ships."""
    from sqlalchemy import text

    from deployctl import dsn, runtime
    from deployctl.db.sqlstate import sqlstate_of

    user, password, db = app_user
    monkeypatch.setenv("DEPLOYCTL_SQLADMIN_ENDPOINT", emulator.rest_address)
    good = dsn.build(driver="pg8000", user=user, password=password, database=db,
                     instance_connection_name=instance.connection_name, ip_type="private")
    assert good.connector and "host" not in good.masked.split("@", 1)[1].split("?")[0]
    before = connector_threads()
    engine = runtime.build_engine(good.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user, ssl FROM pg_stat_ssl "
                                     "WHERE pid = pg_backend_pid()")).one()[0] == user
    finally:
        runtime.dispose(engine)
    bad = dsn.build(driver="pg8000", user=user, password="not-the-password", database=db,
                    instance_connection_name=instance.connection_name, ip_type="private")
    engine = runtime.build_engine(bad.url)
    try:
        with pytest.raises(Exception) as exc, engine.connect():
            pass
        assert sqlstate_of(exc.value) == "28P01"
    finally:
        runtime.dispose(engine)
    assert connector_threads() == before  # each engine's connector (its event loop thread) ended with it


def connector_threads() -> int:
    """Live threads running a Cloud SQL connector's background event loop."""
    import threading

    return sum(1 for t in threading.enumerate() if "run_forever" in t.name)


def test_reading_the_migration_state_in_connector_mode_leaves_no_connector_running(monkeypatch, emulator,
                                                                                   instance, app_user):
    """`migrate status`, the status matrix and deploy read alembic_version once per service (status --watch:
    every refresh); each read in connector mode left its connector's thread, event loop and HTTP session."""
    from deployctl import dsn
    from deployctl.migration.status import read_current

    user, password, db = app_user
    monkeypatch.setenv("DEPLOYCTL_SQLADMIN_ENDPOINT", emulator.rest_address)
    url = dsn.build(driver="pg8000", user=user, password=password, database=db,
                    instance_connection_name=instance.connection_name, ip_type="private").url
    before = connector_threads()
    for _ in range(3):
        assert read_current(url) == []  # no alembic_version table in this database
    assert connector_threads() == before


def test_a_cluster_directory_someone_else_controls_is_refused(tmp_path):
    """The clusters' base sits in a world-writable directory: one made first by another user, or writable by
    others, must not be used (root would run initdb and rmtree inside it)."""
    import os

    from deployctl.emulator.postgres import UnsafeClusterBase, _checked_dir

    if os.geteuid() == 0:  # only root can hand a directory to another user
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        with pytest.raises(UnsafeClusterBase, match="owned by uid"):
            _checked_dir(theirs, 0o755)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(UnsafeClusterBase, match="Remove it"):
        _checked_dir(open_to_all, 0o755)
    mine = tmp_path / "mine"
    _checked_dir(mine, 0o700)
    assert mine.is_dir() and mine.stat().st_uid == os.geteuid()
