"""Credentials that cannot be used are a credentials error with the `gcloud auth` step, never a network failure.

Expired or revoked Application Default Credentials on a real TLS gRPC channel: the channel's auth plugin asks a
token endpoint (here a local one answering invalid_grant, as Google's does for a revoked refresh token) and turns
the failure into UNAVAILABLE "Getting metadata from plugin failed"; that is not retried and not reported as "no
answer from the API".
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from deployctl import errors
from deployctl.cloud.policy import DEFAULT


def _self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1))
            .not_valid_after(datetime.datetime(2040, 1, 1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class _RevokedTokens(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def revoked_channel():
    """A TLS gRPC server that would answer every call, reached with user credentials whose refresh is refused."""
    import google.auth.transport.grpc
    import google.auth.transport.requests
    import google.oauth2.credentials
    import grpc

    cert, key = _self_signed()
    tokens = HTTPServer(("127.0.0.1", 0), _RevokedTokens)
    threading.Thread(target=tokens.serve_forever, daemon=True).start()

    class Answers(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")

    server = grpc.server(ThreadPoolExecutor(2), handlers=[Answers()])
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    creds = google.oauth2.credentials.Credentials(
        token=None, refresh_token="revoked", client_id="id", client_secret="secret",
        token_uri=f"http://127.0.0.1:{tokens.server_port}/token")
    channel = google.auth.transport.grpc.secure_authorized_channel(
        creds, google.auth.transport.requests.Request(), f"localhost:{port}",
        ssl_credentials=grpc.ssl_channel_credentials(root_certificates=cert))
    yield channel
    channel.close()
    server.stop(0)
    tokens.shutdown()


def test_revoked_credentials_on_a_grpc_channel_are_a_credentials_error(revoked_channel):
    from google.cloud import secretmanager_v1
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcTransport,
    )

    from deployctl.cloud.errors import translated

    client = secretmanager_v1.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(channel=revoked_channel))
    policy = DEFAULT.with_deadline(4.0)
    for mutation in (False, True):
        start = time.monotonic()
        with pytest.raises(errors.DeployctlError) as info, translated("projects/p"):
            list(client.list_secrets(request={"parent": "projects/p"}, **policy.call(mutation=mutation)))
        took = time.monotonic() - start
        err = info.value
        assert isinstance(err, errors.PermissionDenied) and err.code == "credentials", err.message
        assert "invalid_grant" in err.message and "no answer from the API" not in err.message, err.message
        assert "gcloud auth application-default login" in err.hint, err.hint
        assert took < policy.deadline / 2, f"retried for {took:.1f}s: retrying cannot refresh a revoked token"
