"""Deadlines: against a dead endpoint every command ends within its documented deadline, with one clear message.

Three dead endpoints: a port nothing listens on (connection refused), a listener that accepts and never
answers (TCP connects, gRPC never completes its handshake), and a gRPC server that accepts every RPC and never
replies (the handshake completes; each call waits for its deadline). The documented deadline is
cloud/policy.py's CallPolicy: each call 30 s retries included (attempts of 10 s), `--timeout S` bounds each
call to S s; once an endpoint has answered nothing for several attempts spanning a whole deadline, the rest of
the command's calls get one attempt each, not retried (policy.Breaker); an endpoint that is slow once and then
answers is never failed by it. Waiting on a long-running operation polls with the same per-attempt timeout, and
a poll without an answer is tried again while the operation's deadline has time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from deployctl.cloud.policy import DEFAULT, CallPolicy

from .conftest import ROOT, Cli

SLACK = 7.0  # interpreter start-up and imports (~1.5 s alone, more on 2 shared cores) + the fast-failing rest
TIMEOUT = 2.0

COMMANDS = [
    ("secrets", "list"),
    ("secrets", "get", "fiat-gateway-db-password"),
    ("dsn", "fiat-gateway"),
    ("deploy", "fiat-gateway"),
    ("status",),
    ("migrate", "status"),
    ("migrate", "fiat-gateway"),
    ("rollback", "fiat-gateway"),
    ("endpoints", "render", "configs/openapi/gateway.yaml"),
    ("doctor", "fiat-gateway"),
    ("verify", "fiat-gateway"),
    ("local", "ps"),
]
TABLE_COMMANDS = {"doctor", "verify"}  # they report a dead cloud in their result table (exit 1), not as `error:`


class SilentListener:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


class HangingServer:
    """A gRPC server that accepts every RPC and never replies, except DeleteService, which answers at once with
    a long-running operation that is not done (so a client then polls GetOperation, which hangs too)."""

    OPERATION = "projects/deployctl-local/locations/us-central1/operations/never-done"

    def __init__(self) -> None:
        import grpc
        from google.longrunning import operations_pb2

        self.released = threading.Event()
        pending = operations_pb2.Operation(name=self.OPERATION, done=False).SerializeToString()

        def hang(request: bytes, context) -> bytes:
            while context.is_active() and not self.released.wait(0.2):
                pass  # until the client gives up (its deadline) or the test ends
            context.abort(grpc.StatusCode.UNAVAILABLE, "test server stopped")

        def answer(request: bytes, context) -> bytes:
            return pending

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                if details.method == "/google.cloud.run.v2.Services/DeleteService":
                    return grpc.unary_unary_rpc_method_handler(answer)
                return grpc.unary_unary_rpc_method_handler(hang)

        self.server = grpc.server(ThreadPoolExecutor(64), handlers=[Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.released.set()
        self.server.stop(0)


def refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound then closed: nothing listens there
    return port


@pytest.fixture(scope="module")
def silent():
    listener = SilentListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def hanging():
    server = HangingServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def endpoints(silent, hanging):
    return {"refused": refused_port(), "silent": silent.port, "hanging": hanging.port}


def dead_cli(tmp_path, port: int) -> Cli:
    state = tmp_path / f"state-{port}"
    state.mkdir(exist_ok=True)
    # `local ps` trusts emulator.json when its pid lives and its port accepts: point it at the dead endpoint
    # (this test process is the live pid), as after an emulator that hangs.
    (state / "emulator.json").write_text(json.dumps({"grpc": f"127.0.0.1:{port}", "rest": f"http://127.0.0.1:{port}",
                                                     "pid": os.getpid()}))
    cli = Cli(state)
    cli.env.update(DEPLOYCTL_EMULATOR_HOST=f"127.0.0.1:{port}", DEPLOYCTL_SQLADMIN_ENDPOINT=f"http://127.0.0.1:{port}")
    return cli


def timed(cli: Cli, *args: str, budget: float):
    start = time.monotonic()
    try:
        run = cli(*args, timeout=budget + 60)
    except subprocess.TimeoutExpired:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"{' '.join(args)} did not end within {budget + 60:.0f}s")
    return run, time.monotonic() - start


def assert_one_clear_failure(run, args, elapsed: float, budget: float) -> None:
    where = f"{' '.join(args)}: {run.output[-1500:]}"
    assert elapsed < budget + SLACK, f"took {elapsed:.1f}s (deadline {budget:g}s) — {where}"
    assert "Traceback" not in run.output and "unexpected error" not in run.output, where
    if args[:2] == ("local", "ps") and "not running" in run.output:
        assert run.code == 0, where  # the refused port: nothing answers there, so the local cloud is down
        return
    assert run.code == 1, where
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    if args[0] in TABLE_COMMANDS:
        assert errors == [] and "no answer from the API" in run.output, where
        return
    assert len(errors) == 1 and errors[0].startswith("error: no answer from the API"), where
    assert run.stderr.count("next: ") == 1, where


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: "-".join(a))
def test_every_command_ends_within_its_timeout_on_a_dead_endpoint(tmp_path, endpoints, args):
    # every kind of dead endpoint at once: the test costs one deadline per command, not three
    with ThreadPoolExecutor(len(endpoints)) as pool:
        runs = {kind: pool.submit(timed, dead_cli(tmp_path, port), "--timeout", str(TIMEOUT), *args, budget=TIMEOUT)
                for kind, port in endpoints.items()}
        for kind, fut in runs.items():
            run, elapsed = fut.result()
            assert_one_clear_failure(run, (kind, *args)[1:], elapsed, TIMEOUT)


def test_the_default_deadline_bounds_a_silent_endpoint(tmp_path, silent, hanging):
    """Without --timeout: the documented 30 s per call, never the libraries' 60 s or TCP's 2 minutes; and a
    command with several calls (deploy: secrets, the service, then status) still costs about one deadline."""
    cases = [(silent.port, ("secrets", "list")), (silent.port, ("deploy", "fiat-gateway")),
             (hanging.port, ("status",))]
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {args: pool.submit(timed, dead_cli(tmp_path, port), *args, budget=DEFAULT.deadline)
                   for port, args in cases}
        for args, fut in futures.items():
            run, elapsed = fut.result()
            assert_one_clear_failure(run, args, elapsed, DEFAULT.deadline)
            assert elapsed > DEFAULT.attempt_timeout, "the silent endpoint was given up on before one attempt"


def test_an_operation_whose_polls_never_answer_ends_within_its_deadline(hanging):
    """DeleteService answers with a pending operation; every GetOperation then hangs. The wait ends within its
    deadline (api_core's own poll gives one GetOperation 600 s), as Unreachable, not a hang."""
    from deployctl import errors
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.run import RunServices

    clients = Clients(emulator_host=f"127.0.0.1:{hanging.port}", policy=DEFAULT.with_deadline(1.0))
    try:
        run = RunServices(clients, "deployctl-local", "us-central1")
        start = time.monotonic()
        with pytest.raises((errors.Unreachable, errors.CloudError)) as failed:
            run.delete("anything", deadline=3.0)
        assert time.monotonic() - start < 3.0 + 1.5, "the operation wait outlived its deadline"
        assert failed.value.hint and "may still be running" in failed.value.message, failed.value.message
    finally:
        clients.close()


# Attempts of 1 s in a 3 s deadline: one call against a silent endpoint is three attempts without an answer,
# spanning the whole deadline, which opens the breaker; the next call is one attempt, not retried. ONE_ATTEMPT is
# midway between one attempt and the whole deadline (room for a loaded 2-core machine either way).
SHORT = CallPolicy(attempt_timeout=1.0, deadline=3.0)
ONE_ATTEMPT = (SHORT.attempt_timeout + SHORT.deadline) / 2


class SlowOnceServer:
    """A healthy gRPC endpoint: every call answers in 0.5 s, but the first takes `first` seconds (a cold start).
    DeleteService answers with a pending operation; GetOperation of it is slow the first time, then done."""

    OPERATION = "projects/deployctl-local/locations/us-central1/operations/slow-once"

    def __init__(self, first: float) -> None:
        import grpc
        from google.longrunning import operations_pb2
        from google.protobuf import any_pb2

        self.calls: list[str] = []
        pending = operations_pb2.Operation(name=self.OPERATION, done=False).SerializeToString()
        deleted = any_pb2.Any(type_url="type.googleapis.com/google.cloud.run.v2.Service")  # an empty Service
        done = operations_pb2.Operation(name=self.OPERATION, done=True, response=deleted).SerializeToString()

        def handler(method: str):
            def handle(request: bytes, context) -> bytes:
                self.calls.append(method)
                first_of_kind = self.calls.count(method) == 1
                time.sleep(first if first_of_kind and not method.endswith("DeleteService") else 0.5)
                if method.endswith("DeleteService"):
                    return pending
                return done if method.endswith("GetOperation") else b""  # an empty response message
            return handle

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                return grpc.unary_unary_rpc_method_handler(handler(details.method))

        self.server = grpc.server(ThreadPoolExecutor(8), handlers=[Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


def test_one_slow_answer_does_not_fail_the_calls_after_it():
    """`--timeout 2` against an endpoint that is slow once (2.5 s) and then answers in 0.5 s: the slow call fails,
    every call after it succeeds (the breaker opened on that one attempt and then failed the next calls in
    0.3 s each, the endpoint answering in 0.5 s)."""
    from deployctl import errors
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore

    server = SlowOnceServer(first=2.5)
    clients = Clients(emulator_host=f"127.0.0.1:{server.port}", policy=DEFAULT.with_deadline(2.0))
    store = SecretStore(clients, "deployctl-local")
    try:
        with pytest.raises(errors.Unreachable):
            store.list_secrets()
        for _ in range(4):
            assert store.list_secrets() == []
    finally:
        clients.close()
        server.close()


def test_an_operation_wait_survives_a_poll_without_an_answer():
    """The first GetOperation outlives its attempt (2.5 s against a 1 s deadline), the next answers done: the
    wait goes on polling while its deadline has time (it used to end the whole rollout at the first such poll)."""
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.run import RunServices

    server = SlowOnceServer(first=2.5)
    clients = Clients(emulator_host=f"127.0.0.1:{server.port}", policy=DEFAULT.with_deadline(1.0))
    try:
        RunServices(clients, "deployctl-local", "us-central1").delete("anything", deadline=10.0)
        assert server.calls.count("/google.longrunning.Operations/GetOperation") >= 2
    finally:
        clients.close()
        server.close()


def test_the_breaker_also_watches_the_google_transport(tmp_path, silent, monkeypatch):
    """With Application Default Credentials (not the emulator's channel) the breaker still sees the outcomes:
    after a call that got no answer for its whole deadline, the next is not retried. The real TLS transport,
    pointed at the silent listener; the credentials are a throwaway service-account key (self-signed JWTs, no
    network)."""
    from deployctl import errors
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_throwaway_key(tmp_path)))
    clients = Clients(emulator_host=None, policy=SHORT, client_options={"api_endpoint": f"127.0.0.1:{silent.port}"})
    store = SecretStore(clients, "deployctl-local")
    try:
        start = time.monotonic()
        with pytest.raises(errors.Unreachable):
            store.list_secrets()
        assert SHORT.deadline - 0.2 < time.monotonic() - start < SHORT.deadline + 1.0
        start = time.monotonic()
        with pytest.raises(errors.Unreachable):
            store.list_secrets()
        took = time.monotonic() - start
        assert took < ONE_ATTEMPT, f"the breaker did not open on the Google transport ({took:.1f}s)"
    finally:
        clients.close()


def _throwaway_key(tmp_path) -> os.PathLike:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "key.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "deployctl-test", "private_key_id": "0" * 40,
        "private_key": pem, "client_email": "nobody@deployctl-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}))
    return path


def test_a_silent_endpoint_is_unreachable_with_a_hint_in_process(silent):
    """The per-attempt timeout bounds a gRPC call on a listener that never answers: errors.Unreachable."""
    from deployctl import errors
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore

    clients = Clients(emulator_host=f"127.0.0.1:{silent.port}", policy=SHORT)
    store = SecretStore(clients, "deployctl-local")
    try:
        start = time.monotonic()
        with pytest.raises(errors.Unreachable) as first:
            store.list_secrets()
        assert time.monotonic() - start < SHORT.deadline + 1.0
        assert first.value.hint and "DEPLOYCTL_EMULATOR_HOST" in first.value.hint
        start = time.monotonic()  # the breaker is open now: the next call is one attempt
        with pytest.raises(errors.Unreachable):
            store.list_secrets()
        assert time.monotonic() - start < ONE_ATTEMPT
    finally:
        clients.close()


def test_the_readme_documents_the_deadlines():
    text = " ".join((ROOT / "README.md").read_text("utf-8").split())
    assert "--timeout" in text and f"{DEFAULT.deadline:g} s" in text and f"{DEFAULT.attempt_timeout:g} s" in text
    assert f"min(S, {DEFAULT.attempt_timeout:g})" in text  # what --timeout S really sets


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
