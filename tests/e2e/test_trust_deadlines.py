"""Deadlines: against a dead endpoint every command ends within its documented deadline, with one clear message.

Two dead endpoints: a port nothing listens on (connection refused), and a listener that accepts and never
answers (the worst case: TCP connects, gRPC never completes its handshake). The documented deadline is
cloud/policy.py's CallPolicy: each call 30 s retries included (attempts of 10 s), `--timeout S` sets both to S;
once an endpoint has answered nothing for a whole deadline the rest of the command fails fast (policy.Breaker).
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

from deployctl.cloud.policy import DEFAULT

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
    ("local", "ps"),
]


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
def endpoints(silent):
    return {"refused": refused_port(), "silent": silent.port}


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
    assert len(errors) == 1 and errors[0].startswith("error: no answer from the API"), where
    assert run.stderr.count("next: ") == 1, where


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: "-".join(a))
def test_every_command_ends_within_its_timeout_on_a_dead_endpoint(tmp_path, endpoints, args):
    # both endpoints at once: the test costs one deadline per command, not two
    with ThreadPoolExecutor(2) as pool:
        runs = {kind: pool.submit(timed, dead_cli(tmp_path, port), "--timeout", str(TIMEOUT), *args, budget=TIMEOUT)
                for kind, port in endpoints.items()}
        for kind, fut in runs.items():
            run, elapsed = fut.result()
            assert_one_clear_failure(run, (kind, *args)[1:], elapsed, TIMEOUT)


def test_the_default_deadline_bounds_a_silent_endpoint(tmp_path, silent):
    """Without --timeout: the documented 30 s per call, never the libraries' 60 s or TCP's 2 minutes; and a
    command with several calls (deploy: secrets, the service, then status) still costs about one deadline."""
    with ThreadPoolExecutor(2) as pool:
        futures = {args: pool.submit(timed, dead_cli(tmp_path, silent.port), *args, budget=DEFAULT.deadline)
                   for args in (("secrets", "list"), ("deploy", "fiat-gateway"))}
        for args, fut in futures.items():
            run, elapsed = fut.result()
            assert_one_clear_failure(run, args, elapsed, DEFAULT.deadline)
            assert elapsed > DEFAULT.attempt_timeout, "the silent endpoint was given up on before one attempt"


def test_a_silent_endpoint_is_unreachable_with_a_hint_in_process(silent):
    """The per-attempt timeout bounds a gRPC call on a listener that never answers: errors.Unreachable."""
    from deployctl import errors
    from deployctl.cloud.clients import Clients
    from deployctl.cloud.secrets import SecretStore

    clients = Clients(emulator_host=f"127.0.0.1:{silent.port}", policy=DEFAULT.with_deadline(1.5))
    store = SecretStore(clients, "deployctl-local")
    try:
        start = time.monotonic()
        with pytest.raises(errors.Unreachable) as first:
            store.list_secrets()
        assert time.monotonic() - start < 1.5 + 1.0
        assert first.value.hint and "DEPLOYCTL_EMULATOR_HOST" in first.value.hint
        start = time.monotonic()  # the breaker is open now: the next call fails fast
        with pytest.raises(errors.Unreachable):
            store.list_secrets()
        assert time.monotonic() - start < 1.0
    finally:
        clients.close()


def test_the_readme_documents_the_deadlines():
    text = (ROOT / "README.md").read_text("utf-8")
    assert "--timeout" in text and f"{DEFAULT.deadline:g} s" in text and f"{DEFAULT.attempt_timeout:g} s" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
