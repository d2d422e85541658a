"""Cloud SQL Admin, typed: instances, users and databases.

    admin = SqlAdmin(clients, "acme-dev")
    admin.get_instance("core-pg").private_ip         # "10.20.0.3"
    admin.get_user("core-pg", "cross_chain_user")    # SqlUser(...) or None when the role does not exist

Every call passes the client policy's retry and timeout (creates and deletes as mutations: not retried once the
server may have acted; setting a password too: resent while the first update runs, Cloud SQL answers 409
"operation in progress"); Google errors come back as DeployctlErrors naming the
resource and, for a denial, the IAM role it needs (roles/cloudsql.viewer, .client or .admin).
Passwords passed in are registered with redact before any call is made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from deployctl import errors, interrupt, redact
from deployctl.cloud.clients import Clients
from deployctl.cloud.errors import translated

# A stand-in bearer token for the emulator's REST API: the connector insists on credentials, the emulator only
# checks that some are present.
EMULATOR_TOKEN = "deployctl-local-cloud"


@dataclass(frozen=True)
class Instance:
    name: str
    connection_name: str  # project:region:name
    private_ip: str | None
    public_ip: str | None
    state: str  # RUNNABLE | SUSPENDED | FAILED | ...
    database_version: str  # POSTGRES_15
    ssl_mode: str  # ENCRYPTED_ONLY | ALLOW_UNENCRYPTED_AND_ENCRYPTED | TRUSTED_CLIENT_CERTIFICATE_REQUIRED | ...

    @property
    def region(self) -> str:
        return self.connection_name.split(":")[1] if self.connection_name.count(":") == 2 else ""


@dataclass(frozen=True)
class SqlUser:
    name: str
    host: str
    type: str  # BUILT_IN | CLOUD_IAM_USER | CLOUD_IAM_SERVICE_ACCOUNT | ...


def _instance(msg) -> Instance:
    from google.cloud.sqladmin_v1 import types as t

    ips = {t.SqlIpAddressType(ip.type_).name: ip.ip_address for ip in msg.ip_addresses}
    ssl_mode = t.IpConfiguration.SslMode(msg.settings.ip_configuration.ssl_mode).name
    if ssl_mode == "SSL_MODE_UNSPECIFIED" and msg.settings.ip_configuration.require_ssl:
        ssl_mode = "ENCRYPTED_ONLY"  # instances configured before ssl_mode existed say require_ssl only
    return Instance(name=msg.name, connection_name=msg.connection_name, private_ip=ips.get("PRIVATE"),
                    public_ip=ips.get("PRIMARY"), state=t.DatabaseInstance.SqlInstanceState(msg.state).name,
                    database_version=t.SqlDatabaseVersion(msg.database_version).name, ssl_mode=ssl_mode)


def _user(msg) -> SqlUser:
    from google.cloud.sqladmin_v1 import types as t

    return SqlUser(name=msg.name, host=msg.host, type=t.User.SqlUserType(msg.type_).name)


class SqlAdmin:
    def __init__(self, clients: Clients, project: str) -> None:
        self.clients = clients
        self.project = project

    def _ref(self, instance: str, *parts: str) -> str:
        return "/".join([f"Cloud SQL instance {self.project}:{instance}", *parts])

    # --- instances -----------------------------------------------------------------------------------
    def get_instance(self, name: str) -> Instance:
        from google.cloud.sqladmin_v1 import types as t

        with translated(self._ref(name), permission="cloudsql.instances.get"):
            msg = self.clients.sql_instances.get(
                request=t.SqlInstancesGetRequest(project=self.project, instance=name), **self.clients.policy.call())
        return _instance(msg)

    def list_instances(self) -> list[Instance]:
        from google.cloud.sqladmin_v1 import types as t

        out: list[Instance] = []
        token = ""
        with translated(f"Cloud SQL instances of project {self.project}", permission="cloudsql.instances.list"):
            while True:
                resp = self.clients.sql_instances.list(
                    request=t.SqlInstancesListRequest(project=self.project, page_token=token),
                    **self.clients.policy.call())
                out.extend(_instance(m) for m in resp.items)
                token = resp.next_page_token
                if not token:
                    return out

    def insert_instance(self, name: str, region: str, database_version: str = "POSTGRES_15") -> Instance:
        from google.cloud.sqladmin_v1 import types as t

        body = t.DatabaseInstance(
            name=name, region=region, database_version=getattr(t.SqlDatabaseVersion, database_version),
            settings=t.Settings(tier="db-custom-1-3840", ip_configuration=t.IpConfiguration(
                ipv4_enabled=False, ssl_mode=t.IpConfiguration.SslMode.ENCRYPTED_ONLY)))
        with translated(self._ref(name), permission="cloudsql.instances.create"):
            op = self.clients.sql_instances.insert(
                request=t.SqlInstancesInsertRequest(project=self.project, body=body),
                **self.clients.policy.call(mutation=True))
            self._wait(op, self._ref(name))
        return self.get_instance(name)

    # --- users ---------------------------------------------------------------------------------------
    def list_users(self, instance: str) -> list[SqlUser]:
        from google.cloud.sqladmin_v1 import types as t

        with translated(self._ref(instance, "users"), permission="cloudsql.users.list"):
            resp = self.clients.sql_users.list(
                request=t.SqlUsersListRequest(project=self.project, instance=instance), **self.clients.policy.call())
        return [_user(u) for u in resp.items]

    def get_user(self, instance: str, name: str) -> SqlUser | None:
        """The user, or None when it does not exist; a missing instance still raises NotFound."""
        from google.api_core import exceptions as gexc
        from google.cloud.sqladmin_v1 import types as t

        try:
            with translated(self._ref(instance, f"users/{name}"), permission="cloudsql.users.list"):
                msg = self.clients.sql_users.get(
                    request=t.SqlUsersGetRequest(project=self.project, instance=instance, name=name),
                    **self.clients.policy.call())
        except errors.NotFound as e:
            if not isinstance(e.__cause__, gexc.NotFound):
                raise
            self.get_instance(instance)  # Google answers 404 for both: tell "no such instance" apart
            return None
        return _user(msg)

    def insert_user(self, instance: str, name: str, password: str) -> None:
        from google.cloud.sqladmin_v1 import types as t

        redact.register(password)
        with translated(self._ref(instance, f"users/{name}"), permission="cloudsql.users.create"):
            op = self.clients.sql_users.insert(
                request=t.SqlUsersInsertRequest(project=self.project, instance=instance,
                                                body=t.User(name=name, password=password)),
                **self.clients.policy.call(mutation=True))
            self._wait(op, self._ref(instance, f"users/{name}"))

    def set_password(self, instance: str, name: str, password: str) -> None:
        from google.cloud.sqladmin_v1 import types as t

        redact.register(password)
        with translated(self._ref(instance, f"users/{name}"), permission="cloudsql.users.update"):
            op = self.clients.sql_users.update(
                request=t.SqlUsersUpdateRequest(project=self.project, instance=instance, name=name,
                                                body=t.User(name=name, password=password)),
                **self.clients.policy.call(mutation=True))
            self._wait(op, self._ref(instance, f"users/{name}"))

    def delete_user(self, instance: str, name: str) -> None:
        from google.cloud.sqladmin_v1 import types as t

        with translated(self._ref(instance, f"users/{name}"), permission="cloudsql.users.delete"):
            op = self.clients.sql_users.delete(
                request=t.SqlUsersDeleteRequest(project=self.project, instance=instance, name=name),
                **self.clients.policy.call(mutation=True))
            self._wait(op, self._ref(instance, f"users/{name}"))

    # --- databases -----------------------------------------------------------------------------------
    def list_databases(self, instance: str) -> list[str]:
        from google.cloud.sqladmin_v1 import types as t

        with translated(self._ref(instance, "databases"), permission="cloudsql.databases.list"):
            resp = self.clients.sql_databases.list(
                request=t.SqlDatabasesListRequest(project=self.project, instance=instance),
                **self.clients.policy.call())
        return [d.name for d in resp.items]

    def insert_database(self, instance: str, name: str) -> None:
        from google.cloud.sqladmin_v1 import types as t

        with translated(self._ref(instance, f"databases/{name}"), permission="cloudsql.databases.create"):
            op = self.clients.sql_databases.insert(
                request=t.SqlDatabasesInsertRequest(project=self.project, instance=instance,
                                                    body=t.Database(name=name, instance=instance,
                                                                    project=self.project)),
                **self.clients.policy.call(mutation=True))
            self._wait(op, self._ref(instance, f"databases/{name}"))

    def delete_database(self, instance: str, name: str) -> None:
        from google.cloud.sqladmin_v1 import types as t

        with translated(self._ref(instance, f"databases/{name}"), permission="cloudsql.databases.delete"):
            op = self.clients.sql_databases.delete(
                request=t.SqlDatabasesDeleteRequest(project=self.project, instance=instance, database=name),
                **self.clients.policy.call(mutation=True))
            self._wait(op, self._ref(instance, f"databases/{name}"))

    # --- operations ----------------------------------------------------------------------------------
    def _wait(self, op, resource: str) -> None:
        """Cloud SQL returns its own Operation (not a google.longrunning one): poll it until DONE, bounded."""
        from google.cloud.sqladmin_v1 import types as t

        done = t.Operation.SqlOperationStatus.DONE
        deadline = time.monotonic() + self.clients.policy.operation_deadline
        delay = 0.2
        operations = None
        while op.status != done:
            if time.monotonic() > deadline:
                raise errors.Unreachable(f"the operation on {resource} did not finish within "
                                         f"{self.clients.policy.operation_deadline:.0f} s",
                                         hint="check it with `gcloud sql operations list`, then retry")
            interrupt.sleep(delay)
            delay = min(delay * 1.5, 5.0)
            operations = operations or self.clients.sql_operations
            op = operations.get(
                request=t.SqlOperationsGetRequest(project=self.project, operation=op.name),
                **self.clients.policy.call())
        if op.error and op.error.errors:
            detail = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
            raise errors.CloudError(f"the operation on {resource} failed: {redact.redact(detail)}",
                                    hint="see `gcloud sql operations list` for the instance")


def connector_options(clients: Clients) -> dict:
    """Keyword arguments for `google.cloud.sql.connector.Connector(...)` for these clients.

    Against the emulator: its REST endpoint and a static token (the connector refuses to run without
    credentials, and Application Default Credentials may not exist). The lazy refresh strategy fetches
    certificates when connecting instead of in a background task, which suits short-lived CLI processes.
    """
    options: dict = {"refresh_strategy": "lazy"}
    if clients.sqladmin_endpoint:
        options["sqladmin_api_endpoint"] = clients.sqladmin_endpoint
    if clients.emulated:
        import google.oauth2.credentials

        options["credentials"] = google.oauth2.credentials.Credentials(token=EMULATOR_TOKEN)
    return options
