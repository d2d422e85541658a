"""What the Cloud SQL Python Connector needs from the local cloud.

The connector asks the Admin API's REST surface (v1beta4) for an instance's connect settings and for an
ephemeral client certificate, then opens TLS to port 3307 on the instance's IP with that certificate and
hands the socket to the driver. Here: the two REST routes on the emulator's REST listener, and a TLS
listener per instance that requires a client certificate signed by the emulator's CA and splices the
decrypted stream into the cluster's unix socket (where scram-sha-256 still applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from deployctl.emulator import certs
from deployctl.osutil import atomic_write_text

log = logging.getLogger("deployctl.emulator.sqladmin")

PROXY_PORT = 3307
# The first message of a PostgreSQL connection may be a request to upgrade the transport. pg8000 sends
# SSLRequest even on the connector's already-encrypted socket; the answer "N" makes it carry on in clear
# inside the tunnel, as Cloud SQL's server-side proxy does.
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104

_ROUTE = r"/sql/v1beta4/projects/([^/]+)/instances/([^/:]+)"


def ssl_cert_json(ca: certs.KeyPair, instance: str) -> dict:
    return {"kind": "sql#sslCert", "cert": ca.cert_pem.decode(), "instance": instance,
            "commonName": "deployctl local CA"}


def _error(code: int, message: str) -> tuple[int, dict]:
    status = {401: "UNAUTHENTICATED", 404: "NOT_FOUND", 400: "INVALID_ARGUMENT"}.get(code, "UNKNOWN")
    return code, {"error": {"code": code, "message": message, "status": status}}


def _authorised(headers: dict) -> bool:
    # Any bearer token will do locally, but a missing one fails as it would against Google.
    return any(k.lower() == "authorization" and v.startswith("Bearer ") for k, v in headers.items())


def install_rest_routes(emulator, lookup: Callable[[str, str], dict | None], ca: certs.KeyPair) -> None:
    """`lookup(project, instance)` returns the instance record (ip, region, database_version) or None."""

    def connect_settings(headers: dict, body: bytes, match) -> tuple[int, dict]:
        if not _authorised(headers):
            return _error(401, "Request is missing required authentication credential.")
        project, name = match.group(1), match.group(2)
        rec = lookup(project, name)
        if rec is None:
            return _error(404, f"The Cloud SQL instance {project}:{name} does not exist.")
        return 200, {
            "kind": "sql#connectSettings",
            "serverCaCert": ssl_cert_json(ca, name),
            "ipAddresses": [{"type": "PRIVATE", "ipAddress": rec["ip"]}],
            "region": rec["region"],
            "databaseVersion": rec["database_version"],
            "backendType": "SECOND_GEN",
            "pscEnabled": False,
        }

    def ephemeral_cert(headers: dict, body: bytes, match) -> tuple[int, dict]:
        from cryptography.hazmat.primitives import serialization

        if not _authorised(headers):
            return _error(401, "Request is missing required authentication credential.")
        project, name = match.group(1), match.group(2)
        if lookup(project, name) is None:
            return _error(404, f"The Cloud SQL instance {project}:{name} does not exist.")
        try:
            pem = json.loads(body or b"{}")["public_key"]
            public_key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "public_key must be a PEM-encoded public key")
        cert = certs.issue(ca, f"{project}:{name}", public_key=public_key, days=1, client=True)
        return 200, {"ephemeralCert": {"kind": "sql#sslCert", "cert": cert.cert_pem.decode(),
                                       "instance": name}}

    emulator.add_rest_route("GET", _ROUTE + "/connectSettings", connect_settings)
    emulator.add_rest_route("POST", _ROUTE + ":generateEphemeralCert", ephemeral_cert)


class TlsForwarder:
    """Port 3307 on each instance's IP, served from one asyncio loop in a background thread."""

    def __init__(self, ca: certs.KeyPair, cert_dir: Path) -> None:
        self.ca = ca
        self.cert_dir = Path(cert_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sqladmin-tls", daemon=True)
        self._thread.start()
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._conns: dict[str, set[asyncio.Task]] = {}

    def _context(self, ip: str, dns_name: str) -> ssl.SSLContext:
        pem = self.cert_dir / f"proxy-{ip}.pem"
        if not pem.exists():
            server = certs.issue(self.ca, dns_name, hosts=[ip, dns_name])
            # 0600 and whole: a file torn by a crash would keep this instance's listener from starting again.
            atomic_write_text(pem, (server.key_pem + server.cert_pem).decode())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pem))
        ctx.load_verify_locations(cadata=self.ca.cert_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED  # only a holder of an ephemeral cert from this CA gets in
        return ctx

    def add(self, ip: str, socket_path: Path, dns_name: str) -> None:
        """Listen on ip:3307 and forward each authenticated connection to `socket_path`."""
        if ip in self._servers:
            return
        ctx = self._context(ip, dns_name)
        conns: set[asyncio.Task] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            conns.add(task)
            try:
                await _forward(reader, writer, socket_path)
            finally:
                conns.discard(task)

        async def listen() -> asyncio.AbstractServer:
            return await asyncio.start_server(handle, ip, PROXY_PORT, ssl=ctx, ssl_handshake_timeout=10,
                                              reuse_address=True)

        self._servers[ip] = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(timeout=10)
        self._conns[ip] = conns

    def remove(self, ip: str) -> None:
        server = self._servers.pop(ip, None)
        conns = self._conns.pop(ip, set())
        if server is None:
            return

        async def close() -> None:
            server.close()
            for task in list(conns):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)

    def stop(self) -> None:
        for ip in list(self._servers):
            try:
                self.remove(ip)
            except Exception:
                log.exception("sqladmin: closing the TLS listener on %s failed", ip)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


async def _forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, socket_path: Path) -> None:
    upstream_w = None
    try:
        head = await asyncio.wait_for(client_r.readexactly(8), 30)
        length, code = struct.unpack("!ii", head)
        if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST):
            client_w.write(b"N")
            await client_w.drain()
            head = b""
        upstream_r, upstream_w = await asyncio.open_unix_connection(str(socket_path))
        upstream_w.write(head)
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as e:
        log.debug("sqladmin: tunnel closed: %s", e)
    finally:
        for w in (upstream_w, client_w):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        # Closing one side ends the other pipe too: PostgreSQL hangs up after a failed login, and the
        # client must see that at once rather than wait for its own timeout.
        with contextlib.suppress(Exception):
            writer.close()
