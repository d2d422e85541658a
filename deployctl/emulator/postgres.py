"""Real PostgreSQL 15 clusters, set up the way Cloud SQL's private IP behaves: scram-sha-256 only, TCP only
over SSL (`hostssl`), a self-signed server certificate. The emulator and the tests use this one class.

Running as root: initdb and postgres refuse uid 0, so they run as the `postgres` OS user (runuser) with the
data directory owned by it (0700) and the key 0600. Such a data directory must be reachable by that user,
so clusters live under a short, traversable base directory (`cluster_base`), never under a 0700 temp dir
(nor under the project's state dir, whose parents the postgres user may not be able to traverse).
Administration goes over the cluster's unix socket with the superuser's password.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from deployctl.emulator import certs

PG_USER = "postgres"
# As on Cloud SQL: users made through the Admin API are members of this role, and databases made through it
# are owned by it, so (on PostgreSQL 15, where public belongs to pg_database_owner) they may create in public.
CLOUDSQL_SUPERUSER = "cloudsqlsuperuser"


def bin_dir() -> Path:
    """Where the PostgreSQL server binaries are: $DEPLOYCTL_PG_BIN, Debian's layout, or PATH."""
    if os.environ.get("DEPLOYCTL_PG_BIN"):
        return Path(os.environ["DEPLOYCTL_PG_BIN"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise FileNotFoundError("PostgreSQL server binaries (initdb) not found; install them: "
                            "apt-get install -y postgresql")


def _as_root() -> bool:
    return os.geteuid() == 0


# /var/tmp, not /tmp: a cluster is the local cloud's data and must last as long as its state, which lives in
# the project. /tmp is emptied at boot (often a tmpfs) and by tmp cleaners; /var/tmp survives reboots (FHS).
# Both are world-traversable, which the postgres OS user needs when we run as root.
CLUSTER_ROOT = Path("/var/tmp") if os.path.isdir("/var/tmp") else Path(tempfile.gettempdir())


class UnsafeClusterBase(RuntimeError):
    pass


def _checked_dir(path: Path, mode: int) -> None:
    """Create `path` (ours, `mode`) or check that the one there is ours and only ours to write: it sits in a
    world-writable directory, where another user could have made it first (then root would run initdb and
    rmtree inside a directory that user controls)."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UnsafeClusterBase(
            f"{path} is not a directory owned by uid {os.geteuid()} and writable only by it (owner uid "
            f"{st.st_uid}, mode {stat.filemode(st.st_mode)}); refusing to keep PostgreSQL clusters there. "
            "Remove it, then retry.")
    if _as_root():
        path.chmod(0o755)  # the postgres user must traverse it


def cluster_base_path(key: str) -> Path:
    """Where the clusters belonging to `key` (e.g. an emulator's state directory) live; nothing is created."""
    return CLUSTER_ROOT / f"deployctl-pg-{os.geteuid()}" / hashlib.sha256(key.encode()).hexdigest()[:12]


def cluster_base(key: str) -> Path:
    """A traversable directory for the clusters belonging to `key`, created (and checked) if need be."""
    base = cluster_base_path(key)
    for path in (base.parent, base):
        _checked_dir(path, 0o755 if _as_root() else 0o700)
    return base


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier computed here, so the plaintext never reaches the server or its log."""
    import scramp

    from deployctl.runtime import install_saslprep_fallback

    install_saslprep_fallback()  # the same SASLprep fallback the clients use (emoji, control characters)
    salt, stored_key, server_key, iters = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        password, iteration_count=iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iters}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _write_private(path: Path, data: bytes) -> None:
    """Write a file that is 0600 from its creation: a password or key must never be readable, even briefly, in
    a directory other users can traverse (the cluster base when running as root)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Cluster:
    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 5432,
                 superuser_password: str) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.superuser_password = superuser_password

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(bin_dir() / args[0]), *args[1:]]
        if _as_root():
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd="/")

    def _chown(self, path: Path) -> None:
        if _as_root():
            pw = pwd.getpwnam(PG_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def _pwfile(self) -> Path:
        return self.data_dir.parent / f".{self.data_dir.name}.pw"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self, ca: certs.KeyPair | None = None) -> None:
        """initdb, the server certificate, scram + hostssl-only pg_hba.conf. Idempotent."""
        if self.initialised:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        pwfile = self._pwfile
        _write_private(pwfile, self.superuser_password.encode())
        self._chown(pwfile)
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", PG_USER, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        finally:
            pwfile.unlink(missing_ok=True)
        ca = ca or certs.make_ca()
        server = certs.issue(ca, self.host, hosts=[self.host, "localhost"])
        for name, data, mode in (("server.crt", server.cert_pem, 0o644), ("server.key", server.key_pem, 0o600),
                                 ("root.crt", ca.cert_pem, 0o644)):
            path = self.data_dir / name
            _write_private(path, data)
            path.chmod(mode)
            self._chown(path)
        (self.data_dir / "pg_hba.conf").write_text(
            "# deployctl local cloud: like Cloud SQL private IP, TCP only over SSL, scram only\n"
            "local   all all                scram-sha-256\n"
            "hostssl all all 0.0.0.0/0      scram-sha-256\n"
            "hostssl all all ::/0           scram-sha-256\n")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# deployctl local cloud\n"
                       "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                       "password_encryption = 'scram-sha-256'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "shared_buffers = 32MB\nmax_connections = 100\n"
                       "log_min_messages = warning\n")
        self._write_listen()

    def _write_listen(self) -> None:
        (self.data_dir / "postgresql.auto.conf").write_text(
            f"listen_addresses = '{self.host}'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.socket_dir}'\n")
        self._chown(self.data_dir / "postgresql.auto.conf")

    def is_running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self, timeout: float = 30) -> None:
        if self.is_running():
            return
        self._write_listen()
        self.log_file.touch()
        self._chown(self.log_file)
        result = self._run("pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                           "-t", str(int(timeout)), "-o", "-c log_destination=stderr", check=False,
                           timeout=timeout + 10)
        if result.returncode != 0:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"PostgreSQL at {self.data_dir} did not start: {result.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        if self.initialised and self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)
        self._pwfile.unlink(missing_ok=True)  # left by an init that was killed

    def end_strays(self, grace: float = 5.0) -> list[int]:
        """Kill what still works in this data directory without a postmaster.pid we can stop (an initdb or a
        server whose creator was SIGKILLed mid-way): any process naming the data directory in its command line."""
        from deployctl.osutil import cmdline, pid_alive, processes

        target = str(self.data_dir)
        found = [pid for pid in processes() if target in cmdline(pid)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while any(pid_alive(p) for p in found) and time.monotonic() < deadline:
                time.sleep(0.05)
        return found

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    # --- administration over the unix socket --------------------------------------------------------

    def admin(self, database: str = "postgres"):
        """A pg8000.native connection as the superuser, over the unix socket."""
        import pg8000.native

        return pg8000.native.Connection(PG_USER, password=self.superuser_password, database=database,
                                        unix_sock=str(self.socket_dir / f".s.PGSQL.{self.port}"), timeout=30)

    def execute(self, sql: str, database: str = "postgres", **params) -> list:
        conn = self.admin(database)
        try:
            return conn.run(sql, **params)
        finally:
            conn.close()

    def create_role(self, name: str, password: str | None, *, login: bool = True,
                    in_role: str | None = None) -> None:
        pw = f" PASSWORD {quote_literal(scram_verifier(password))}" if password is not None else ""
        member = f" IN ROLE {quote_ident(in_role)}" if in_role else ""
        self.execute(f"CREATE ROLE {quote_ident(name)} {'LOGIN' if login else 'NOLOGIN'}{pw}{member}")

    def ensure_cloudsql_roles(self) -> None:
        self.execute(f"DO $$ BEGIN CREATE ROLE {CLOUDSQL_SUPERUSER} NOLOGIN CREATEDB CREATEROLE; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$")

    def set_password(self, name: str, password: str) -> None:
        self.execute(f"ALTER ROLE {quote_ident(name)} PASSWORD {quote_literal(scram_verifier(password))}")

    def create_database(self, name: str, owner: str | None = None) -> None:
        owner_sql = f" OWNER {quote_ident(owner)}" if owner else ""
        self.execute(f"CREATE DATABASE {quote_ident(name)}{owner_sql}")

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
