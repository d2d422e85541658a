"""The Cloud SQL Admin v1 messages the local cloud answers with, built from its instance records."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

API = "https://sqladmin.googleapis.com/v1/projects"


def operation(project: str, instance: str, kind: str):
    """A finished Operation: every local Cloud SQL change is done before its call returns."""
    from google.cloud.sqladmin_v1 import types as t

    now = dt.datetime.now(dt.UTC)
    op_id = str(uuid.uuid4())
    return t.Operation(
        kind="sql#operation", name=op_id, status=t.Operation.SqlOperationStatus.DONE,
        operation_type=getattr(t.Operation.SqlOperationType, kind), target_id=instance,
        target_project=project, target_link=f"{API}/{project}/instances/{instance}",
        self_link=f"{API}/{project}/operations/{op_id}", user="emulator@local",
        insert_time=now, start_time=now, end_time=now)


def instance(rec: dict, state: str, ca_pem: str):
    from google.cloud.sqladmin_v1 import types as t

    project, name, region = rec["project"], rec["name"], rec["region"]
    ca_cert = t.SslCert(kind="sql#sslCert", cert=ca_pem, instance=name, common_name="deployctl local CA")
    settings = t.Settings(
        tier=rec.get("tier") or "db-custom-1-3840", activation_policy=t.Settings.SqlActivationPolicy.ALWAYS,
        ip_configuration=t.IpConfiguration(
            ipv4_enabled=False, private_network=f"projects/{project}/global/networks/default",
            ssl_mode=t.IpConfiguration.SslMode.ENCRYPTED_ONLY, require_ssl=True),
        user_labels=rec.get("labels") or {})
    return t.DatabaseInstance(
        kind="sql#instance", name=name, project=project, region=region, gce_zone=f"{region}-a",
        state=getattr(t.DatabaseInstance.SqlInstanceState, state),
        database_version=getattr(t.SqlDatabaseVersion, rec["database_version"]),
        connection_name=f"{project}:{region}:{name}", settings=settings,
        ip_addresses=[t.IpMapping(type_=t.SqlIpAddressType.PRIVATE, ip_address=rec["ip"])],
        server_ca_cert=ca_cert, instance_type=t.SqlInstanceType.CLOUD_SQL_INSTANCE,
        backend_type=t.SqlBackendType.SECOND_GEN, etag=rec.get("etag", ""),
        self_link=f"{API}/{project}/instances/{name}", create_time=dt.datetime.fromisoformat(rec["create_time"]))


def user(rec: dict, name: str):
    from google.cloud.sqladmin_v1 import types as t

    return t.User(kind="sql#user", name=name, host="", instance=rec["name"], project=rec["project"],
                  type_=t.User.SqlUserType.BUILT_IN, etag=hashlib.sha1(name.encode()).hexdigest()[:16])


def database(rec: dict, name: str):
    from google.cloud.sqladmin_v1 import types as t

    return t.Database(kind="sql#database", name=name, instance=rec["name"], project=rec["project"],
                      charset="UTF8", collation="C.UTF-8",
                      self_link=f"{API}/{rec['project']}/instances/{rec['name']}/databases/{name}")
