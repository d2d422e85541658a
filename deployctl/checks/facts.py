"""What the checks look at, fetched once per doctor run and shared between concurrent checks.

Each fact is computed by the first check that asks for it (the others wait for that one call, per key) and
kept, failures included, so ten checks about one service make one Secret Manager call, not ten. Every secret
value read here is registered with deployctl.redact before anything else happens to it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from deployctl import redact
from deployctl.context import Context
from deployctl.errors import CloudError, NotFound

MIGRATE_JOB = "{service}-migrate"


TF_COMMAND_TIMEOUT = 25.0  # seconds for terraform_state_command: below tf.state's check timeout (registry)
# Labels of the passwords something actually logs in with: the serving revision (its pinned version), the next
# job or deploy (the url secret), `terraform apply` (which sets its own back). Preferred in this order when
# the database accepts one of them: the repair then follows the database instead of changing it.
CONSUMED = ("url-pinned", "secret-pinned", "url-secret", "terraform")


@dataclass(frozen=True, repr=False)
class Candidate:
    """A password some source holds for a database user. `label` is stable (used as a key and in JSON)."""

    label: str  # terraform | secret-latest | secret-pinned | url-secret | url-pinned | secret-latest-stripped
    source: str  # for people: "Secret Manager's latest version of X (v4, added 1 day ago)"
    password: str
    secret_ref: str | None = None  # "secret:version" when the value lives in Secret Manager (for --in-vpc)
    holder: str = ""  # where the password is, to follow "the password in": "Terraform state (...)"
    in_url: bool = False  # secret_ref holds a connection string with the password inside

    @property
    def fingerprint(self) -> str:
        return redact.fingerprint(self.password)

    def __repr__(self) -> str:
        return f"Candidate({self.label!r}, {self.fingerprint})"


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Facts:
    def __init__(self, ctx: Context, *, probe_timeout: float = 5.0, in_vpc: bool = False) -> None:
        self.ctx = ctx
        self.probe_timeout = probe_timeout
        self.in_vpc = in_vpc
        self._lock = threading.Lock()
        self._keys: dict[str, threading.Lock] = {}
        self._values: dict[str, Any] = {}

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        with self._lock:
            lock = self._keys.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                try:
                    self._values[key] = fn()
                except BaseException as e:  # noqa: BLE001 - remembered, re-raised to every asker
                    self._values[key] = _Failed(e)
            value = self._values[key]
        if isinstance(value, _Failed):
            raise value.exc
        return value

    def forget(self, prefix: str = "") -> None:
        """Drop cached facts (after --fix changed the world)."""
        with self._lock:
            for k in [k for k in self._values if k.startswith(prefix)]:
                del self._values[k]

    # --- clients -------------------------------------------------------------------------------------
    @property
    def store(self):
        from deployctl.cloud.secrets import SecretStore

        return self.memo("client:secrets", lambda: SecretStore(self.ctx.clients, self.ctx.project))

    @property
    def admin(self):
        from deployctl.cloud.sqladmin import SqlAdmin

        return self.memo("client:sqladmin", lambda: SqlAdmin(self.ctx.clients, self.ctx.project))

    @property
    def run_services(self):
        from deployctl.cloud.run import RunServices

        return self.memo("client:run", lambda: RunServices(self.ctx.clients, self.ctx.project, self.ctx.region))

    @property
    def run_jobs(self):
        from deployctl.cloud.run_jobs import RunJobs

        return self.memo("client:jobs", lambda: RunJobs(self.ctx.clients, self.ctx.project, self.ctx.region))

    # --- configuration and Terraform -----------------------------------------------------------------
    def tfstate(self):
        from deployctl import terraform

        def read():
            env = self.ctx.config.environment
            return terraform.read(self.ctx.terraform_state_path(), env.terraform_state_command,
                                  timeout=TF_COMMAND_TIMEOUT)

        return self.memo("tfstate", read)

    def instance(self, name: str):
        return self.memo(f"instance:{name}", lambda: self.admin.get_instance(name))

    def instance_ip(self, service: str) -> str | None:
        """The address the admin API gives the service's instance (for its ip_type); None for the connector.
        A stored connection string is checked against this, not the config's (which may be the wrong one)."""
        t = self.target(service)
        if t.mode == "connector":
            return None
        live = self.instance(t.instance_name)
        return live.private_ip if t.ip_type == "private" else live.public_ip

    def target(self, service: str):
        from deployctl import dbtarget

        return self.memo(f"target:{service}", lambda: dbtarget.resolve(self.ctx, service))

    def users(self, instance: str) -> list[str]:
        return self.memo(f"users:{instance}", lambda: [u.name for u in self.admin.list_users(instance)])

    def databases(self, instance: str) -> list[str]:
        return self.memo(f"databases:{instance}", lambda: self.admin.list_databases(instance))

    # --- Secret Manager ------------------------------------------------------------------------------
    def versions(self, secret_id: str):
        return self.memo(f"versions:{secret_id}", lambda: self.store.versions(secret_id))

    def secret(self, secret_id: str, version: str | int = "latest"):
        """The AccessedSecret (its value registered with redact)."""
        return self.memo(f"secret:{secret_id}:{version}", lambda: self.store.access(secret_id, version))

    # --- Cloud Run -----------------------------------------------------------------------------------
    def deployed(self, service: str):
        return self.memo(f"run:{service}", lambda: self.run_services.find(service))

    def serving_revision(self, service: str):
        def get():
            svc = self.deployed(service)
            if svc is None or not svc.serving:
                return None
            return self.run_services.revision(service, svc.serving[0])

        return self.memo(f"revision:{service}", get)

    def migrate_job(self, service: str):
        return self.memo(f"job:{service}", lambda: self.run_jobs.find(MIGRATE_JOB.format(service=service)))

    # --- passwords -----------------------------------------------------------------------------------
    def candidates(self, service: str) -> list[Candidate]:
        return self.memo(f"candidates:{service}", lambda: self._candidates(service))

    def _candidates(self, service: str) -> list[Candidate]:
        t = self.target(service)
        out: list[Candidate] = []
        try:
            latest = self.secret(t.password_secret)
            text = latest.data.decode("utf-8", "surrogateescape")
            version = self.version_label(t.password_secret, latest.version)
            out.append(Candidate("secret-latest", f"Secret Manager's latest version of {t.password_secret} "
                                 f"({version})", text, f"{t.password_secret}:{latest.version}",
                                 f"{t.password_secret} ({version})"))
            if latest.has_trailing_newline:
                out.append(Candidate("secret-latest-stripped", f"Secret Manager's latest version of "
                                     f"{t.password_secret} ({version}) without its trailing newline",
                                     text.rstrip("\r\n"), holder=f"{t.password_secret} ({version}) without "
                                     "its trailing newline"))
        except CloudError:
            pass
        try:
            user = self.tfstate().user(t.instance_name, t.user)
            if user and user.password:
                ref = self._tf_secret_ref(t.password_secret, user.password)
                out.append(Candidate("terraform", f"Terraform state ({user.address})", user.password, ref,
                                     f"Terraform state ({user.address})"))
        except Exception:  # noqa: BLE001 - no state: one source fewer (tf.state reports why)
            pass
        pinned = self.pinned_version(service, t.password_secret)
        if pinned:
            try:
                value = self.secret(t.password_secret, pinned)
                version = self.version_label(t.password_secret, value.version)
                out.append(Candidate("secret-pinned", f"the version of {t.password_secret} pinned by the serving "
                                     f"revision ({version})", value.data.decode("utf-8", "surrogateescape"),
                                     f"{t.password_secret}:{value.version}",
                                     f"{t.password_secret} ({version}, pinned by the serving revision)"))
            except CloudError:
                pass
        if t.url_secret:
            out += self._url_candidates(service, t.url_secret)
        return out

    def _url_candidates(self, service: str, url_secret: str) -> list[Candidate]:
        """The password inside the url secret's latest version and inside the version the serving revision
        pins (what the running service logs in with)."""
        out = []
        refs = [("url-secret", "latest", "")]
        pinned = self.pinned_version(service, url_secret)
        if pinned:
            refs.append(("url-pinned", pinned, ", pinned by the serving revision"))
        for label, ref, note in refs:
            try:
                stored = self.secret(url_secret, ref)
            except CloudError:
                continue
            if label == "url-pinned" and out and out[0].secret_ref == f"{url_secret}:{stored.version}":
                continue  # the revision pins the latest version: one candidate, not two
            pw = password_in_url(stored.data.decode("utf-8", "surrogateescape"))
            if pw is not None:
                version = self.version_label(url_secret, stored.version)
                out.append(Candidate(label, f"the password inside {url_secret} ({version}{note})", pw,
                                     f"{url_secret}:{stored.version}", f"{url_secret} ({version}{note})",
                                     in_url=True))
        return out

    def version_label(self, secret_id: str, number: int) -> str:
        """'v4, added 1 day ago' (or 'v4' when the version list is not readable)."""
        import datetime as dt

        try:
            created = next((v.create_time for v in self.versions(secret_id) if v.number == number), None)
        except CloudError:
            created = None
        if created is None:
            return f"v{number}"
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        return f"v{number}, added {_ago(dt.datetime.now(dt.UTC) - created)}"

    def _tf_secret_ref(self, secret_id: str, password: str) -> str | None:
        """The Secret Manager version holding Terraform's password, if Terraform wrote one with that value."""
        try:
            v = self.tfstate().latest_secret_version(secret_id)
        except Exception:  # noqa: BLE001
            return None
        return f"{secret_id}:{v.version}" if v and v.data == password and v.version.isdigit() else None

    def pinned_version(self, service: str, secret_id: str) -> str | None:
        """The version number of `secret_id` the serving revision pins (None if not deployed or 'latest')."""
        try:
            rev = self.serving_revision(service)
        except CloudError:
            return None
        if rev is None:
            return None
        for ref in rev.secrets.values():
            sid, _, version = ref.partition(":")
            if sid == secret_id and version.isdigit():
                return version
        return None

    # --- the database, as seen from here or from inside the VPC ----------------------------------------
    def role(self, service: str) -> dict | None:
        """pg_roles' row for the service's user (exists, can_login, valid_until, expired, via), read over any
        login that works on the instance: the user's own, or another service's (pg_roles is readable by every
        role), since an expired password cannot log in to tell. None when no login works from here."""
        return self.memo(f"role:{service}", lambda: self._role(service))

    def _role(self, service: str) -> dict | None:
        from deployctl.checks import dbprobe

        if self.in_vpc:
            return None
        t = self.target(service)
        logins = []
        result = self.database(service)
        via = result.get("session_via")
        cand = next((c for c in self.candidates(service) if c.label == via), None)
        if cand is not None:
            logins.append((t.user, t.database, cand.password))
        for name, svc in self.ctx.config.services.items():
            db = svc.database
            if name == service or db is None or self.ctx.config.instances[db.instance].name != t.instance_name:
                continue
            try:
                pw = self.secret(db.password_secret).data.decode("utf-8", "surrogateescape").rstrip("\r\n")
            except CloudError:
                continue
            logins.append((db.user, db.name, pw))
        for user, database, password in logins:
            url = dbprobe.url_for(host=t.host, port=t.port, database=database, user=user, password=password,
                                  sslmode=t.ssl, timeout=self.probe_timeout, sslrootcert=t.server_ca_here)
            row = dbprobe.role_of(url, t.user, self.probe_timeout)
            if row is not None:
                return {**row, "via": user}
        return None

    def tcp(self, service: str) -> dict:
        if self.in_vpc:
            return self.database(service)["tcp"]

        def connect():
            from deployctl.checks import dbprobe

            t = self.target(service)
            if not t.host:
                return {"ok": False, "elapsed": 0.0, "error": "no IP known"}
            return dbprobe.tcp(t.host, t.port, self.probe_timeout)

        return self.memo(f"tcp:{service}", connect)

    def database(self, service: str) -> dict:
        """dbprobe.run_all's answer for the service: tcp, logins per candidate label, stored_url, session."""
        return self.memo(f"db:{service}", lambda: self._database(service))

    def _database(self, service: str) -> dict:
        t = self.target(service)
        if not t.host:
            raise NotFound(f"no private IP known for instance {t.instance_name}",
                           hint=f"set private_ip in [instances.{t.instance_key}]")
        cands = self.candidates(service)
        stored = None
        if t.url_secret:
            try:
                stored = self.secret(t.url_secret).data.decode("utf-8", "surrogateescape")
            except CloudError:
                stored = None
        if self.in_vpc:
            from deployctl.checks import vpcjob

            return vpcjob.run(self, service, t, cands)
        from deployctl.checks import dbprobe

        reach = self.tcp(service)
        if not reach["ok"]:
            return {"tcp": reach}
        target = {"host": t.host, "port": t.port, "database": t.database, "user": t.user, "sslmode": t.ssl,
                  "sslrootcert": t.server_ca_here}
        return dbprobe.run_all(target, {c.label: c.password for c in cands}, "secret-latest",
                               self.probe_timeout, stored_url=stored, tcp_result=reach)


def password_in_url(url: str) -> str | None:
    """The password a connection string carries (decoded as SQLAlchemy would), registered for redaction in
    every piece a parser may cut it into (dbtarget.register_url)."""
    from deployctl import dsn
    from deployctl.dbtarget import register_url

    register_url(url)
    raw = dsn._raw_password(url.rstrip("\r\n"))
    if raw is None:
        return None
    value = unquote(raw)
    redact.register(value)
    return value


def _ago(delta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"
