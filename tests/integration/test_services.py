"""The three services as real processes (`python -m services.<pkg>` with PORT), over HTTP: /health while the
database is down, /health/db bounded and explained, against the real cluster, and the real endpoints."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config

from deployctl.runtime import compose_url

ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE = 20.0
DB_ENV = ("DATABASE_URL", "DB_HOST", "DB_NAME", "DB_USER", "DB_PASSWORD", "INSTANCE_CONNECTION_NAME")
PEPPER = "pepper-" + secrets.token_urlsafe(16)
SIGNING_KEY = "signing-" + secrets.token_urlsafe(16)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, module: str, env: dict, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if k not in DB_ENV}
        self.proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                                     env={**base, "PORT": str(self.port), "LOG_LEVEL": "info", **env})

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


def make_database(cluster, service_tree: str) -> tuple[str, str]:
    """A database migrated to head; returns (DATABASE_URL for pg8000 with sslmode=require, password)."""
    name = "svc_" + secrets.token_hex(4)
    password = "p@ss w%rd/" + secrets.token_urlsafe(8)  # characters that must be percent-encoded
    cluster.create_role(name, password)
    cluster.create_database(name, owner=name)
    url = compose_url(driver="pg8000", user=name, password=password, database=name, host=cluster.host,
                      port=cluster.port, query={"sslmode": "require"})
    with pytest.MonkeyPatch.context() as mp:
        for var in DB_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("DATABASE_URL", url)
        command.upgrade(Config(str(ROOT / "migrations" / service_tree / "alembic.ini")), "head")
    return url, password


@pytest.fixture(scope="module")
def services(pg_cluster, tmp_path_factory):
    """Every service process this module needs, started together and awaited together."""
    logs = tmp_path_factory.mktemp("service-logs")
    fiat_url, fiat_password = make_database(pg_cluster, "fiat_gateway")
    cross_url, _ = make_database(pg_cluster, "cross_chain_integration")
    closed_port = free_port()
    wrong_password = cross_url.replace("%40", "%41", 1)  # same role, another password
    black_hole = socket.socket()  # accepts connections (backlog) and never answers
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(8)
    procs = {"api-key": ServiceProcess("services.api_key_service", {"API_KEY_PEPPER": PEPPER},
                                       logs / "api-key.log")}
    procs["cross"] = ServiceProcess("services.cross_chain_integration",
                                    {"DATABASE_URL": cross_url, "SIGNING_KEY": SIGNING_KEY}, logs / "cross.log")
    procs |= {
        "fiat": ServiceProcess("services.fiat_gateway", {"DATABASE_URL": fiat_url,
                                                         "API_KEY_SERVICE_URL": procs["api-key"].url,
                                                         "CROSS_CHAIN_URL": procs["cross"].url},
                               logs / "fiat.log"),
        "fiat-closed-port": ServiceProcess("services.fiat_gateway", {
            "DATABASE_URL": compose_url(driver="pg8000", user="u", password=fiat_password, database="x",
                                        host="127.0.0.1", port=closed_port, query={"sslmode": "require"}),
            "CROSS_CHAIN_URL": f"http://127.0.0.1:{closed_port}"},
            logs / "fiat-closed.log"),
        "cross-wrong-password": ServiceProcess("services.cross_chain_integration",
                                               {"DATABASE_URL": wrong_password, "SIGNING_KEY": SIGNING_KEY},
                                               logs / "cross-wrong.log"),
        "fiat-black-hole": ServiceProcess("services.fiat_gateway", {
            "DATABASE_URL": f"postgresql+pg8000://u:pw@127.0.0.1:{black_hole.getsockname()[1]}/x?sslmode=require"},
            logs / "fiat-black-hole.log"),
    }
    try:
        for p in procs.values():
            p.wait_ready()
        procs["secrets"] = (fiat_password, PEPPER, SIGNING_KEY, fiat_url, cross_url)
        yield procs
    finally:
        for p in procs.values():
            if isinstance(p, ServiceProcess):
                p.stop()
        black_hole.close()


@pytest.mark.parametrize("name,service", [("api-key", "api-key-service"), ("fiat", "fiat-gateway"),
                                          ("cross", "cross-chain-integration"),
                                          ("fiat-closed-port", "fiat-gateway")])
def test_health_answers_whatever_the_database(services, name, service):
    response = httpx.get(services[name].url + "/health", timeout=2)
    assert response.status_code == 200
    assert response.json()["service"] == service


def test_api_key_service_has_no_database_route(services):
    assert httpx.get(services["api-key"].url + "/health/db", timeout=2).status_code == 404


@pytest.mark.parametrize("name", ["fiat", "cross"])
def test_health_db_ok_against_the_cluster(services, name):
    response = httpx.get(services[name].url + "/health/db", timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["database"] == "ok" and body["latency_ms"] >= 0


@pytest.mark.parametrize("name,reason", [("fiat-closed-port", "network: connection refused"),
                                         ("cross-wrong-password", "SQLSTATE 28P01"),
                                         ("fiat-black-hole", "timeout: no answer within 2 s")])
def test_health_db_unavailable_names_the_cause_not_the_url(services, name, reason):
    started = time.monotonic()
    response = httpx.get(services[name].url + "/health/db", timeout=10)
    assert time.monotonic() - started < 4  # bounded by the probe timeout, not the 10 s connect timeout
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "unavailable" and body["reason"].startswith(reason), body
    assert "postgresql" not in response.text and "@" not in response.text
    for secret in services["secrets"]:
        assert secret not in response.text


def issue_key(services) -> str:
    response = httpx.post(services["api-key"].url + "/keys", json={"name": "test"}, timeout=5)
    assert response.status_code == 201
    return response.json()["key"]


def test_api_keys_issue_and_verify(services):
    url = services["api-key"].url
    key = issue_key(services)
    assert httpx.post(url + "/keys/verify", json={"key": key}, timeout=5).json() == {"valid": True}
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert httpx.post(url + "/keys/verify", json={"key": tampered}, timeout=5).json() == {"valid": False}
    assert httpx.post(url + "/keys/verify", json={"key": "nonsense"}, timeout=5).json() == {"valid": False}
    assert httpx.post(url + "/keys/verify", json={"nokey": 1}, timeout=5).status_code == 422
    assert httpx.post(url + "/keys/verify", content=b"{not json", timeout=5).status_code == 400


def test_deposits_require_a_valid_key_and_round_trip(services):
    url = services["fiat"].url + "/deposits"
    deposit = {"account_id": "acct-1", "amount": "125.50", "currency": "EUR", "external_ref": "psp-" + secrets.token_hex(4)}
    assert httpx.post(url, json=deposit, timeout=5).status_code == 401
    assert httpx.post(url, json=deposit, headers={"X-API-Key": "ak_bogus"}, timeout=5).status_code == 401
    headers = {"X-API-Key": issue_key(services)}
    created = httpx.post(url, json=deposit, headers=headers, timeout=5)
    assert created.status_code == 201, created.text
    row = created.json()
    assert row["amount"] == "125.50" and row["status"] == "pending" and row["external_ref"] == deposit["external_ref"]
    # external_ref is unique when present (revision c95e7a4f1d03): a replay is a conflict, not a duplicate
    assert httpx.post(url, json=deposit, headers=headers, timeout=5).status_code == 409
    assert httpx.post(url, json={**deposit, "amount": "-1"}, headers=headers, timeout=5).status_code == 422
    assert httpx.post(url, json={**deposit, "currency": "euro"}, headers=headers, timeout=5).status_code == 422
    listed = httpx.get(url, params={"account_id": "acct-1"}, headers=headers, timeout=5).json()["deposits"]
    assert [d["id"] for d in listed] == [row["id"]]


def test_transfers_are_signed_and_listed_by_enum_filters(services):
    url = services["cross"].url + "/transfers"
    transfer = {"source_chain": "base", "destination_chain": "ethereum", "asset": "USDC",
                "amount": "10.000000000000000001", "sender": "0xabc", "recipient": "0xdef"}
    created = httpx.post(url, json=transfer, timeout=5)
    assert created.status_code == 201, created.text
    row = created.json()
    assert row["status"] == "pending" and row["amount"] == transfer["amount"]
    canonical = json.dumps(transfer, sort_keys=True, separators=(",", ":"))
    assert row["signature"] == hmac.new(SIGNING_KEY.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    assert httpx.post(url, json={**transfer, "source_chain": "solana"}, timeout=5).status_code == 422
    assert httpx.post(url, json={**transfer, "destination_chain": "base"}, timeout=5).status_code == 422
    by_chain = httpx.get(url, params={"chain": "base", "status": "pending"}, timeout=5).json()["transfers"]
    assert row["id"] in [t["id"] for t in by_chain]
    assert httpx.get(url, params={"chain": "polygon"}, timeout=5).json()["transfers"] == []
    assert httpx.get(url, params={"status": "lost"}, timeout=5).status_code == 422
    assert [t["id"] for t in httpx.get(url, params={"sender": "0xabc"}, timeout=5).json()["transfers"]] == [row["id"]]


def test_the_gateway_lists_transfers_through_cross_chain_integration(services):
    sender = "0xgw-" + secrets.token_hex(4)
    transfer = {"source_chain": "base", "destination_chain": "polygon", "asset": "USDC", "amount": "2",
                "sender": sender, "recipient": "0xdef"}
    created = httpx.post(services["cross"].url + "/transfers", json=transfer, timeout=5).json()
    url = services["fiat"].url + "/transfers"
    assert httpx.get(url, params={"sender": sender}, timeout=5).status_code == 401  # the gateway wants a key
    listed = httpx.get(url, params={"sender": sender, "other": "x"}, headers={"X-API-Key": issue_key(services)},
                       timeout=5)
    assert listed.status_code == 200, listed.text
    assert [t["id"] for t in listed.json()["transfers"]] == [created["id"]]
    bad = httpx.get(url, params={"chain": "solana"}, headers={"X-API-Key": issue_key(services)}, timeout=5)
    assert bad.status_code == 422  # the upstream's own answer, passed on
    down = httpx.get(services["fiat-closed-port"].url + "/transfers", timeout=5)  # upstream refuses connections
    assert down.status_code == 503 and down.json() == {"error": "cross-chain-integration unavailable"}
    unset = httpx.get(services["fiat-black-hole"].url + "/transfers", timeout=5)
    assert unset.status_code == 503 and "CROSS_CHAIN_URL is not set" in unset.json()["error"]


def test_a_gateway_without_api_key_service_says_it_is_open(services):
    warnings = [json.loads(line) for line in services["fiat-closed-port"].log_lines() if "API_KEY_SERVICE_URL" in line]
    assert warnings and warnings[0]["severity"] == "WARNING", warnings
    assert "not authenticated" in warnings[0]["message"]


def test_logs_are_json_lines_with_request_fields_and_no_secrets(services):
    httpx.get(services["fiat"].url + "/health", timeout=5)
    httpx.get(services["cross-wrong-password"].url + "/health/db", timeout=5)
    for name in ("fiat", "cross-wrong-password", "api-key"):
        lines = services[name].log_lines()
        entries = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all({"severity", "message", "time"} <= e.keys() for e in entries)
        requests = [e for e in entries if "path" in e]
        assert requests and all({"method", "status", "duration_ms"} <= e.keys() for e in requests)
        text = "\n".join(lines)
        for secret in services["secrets"]:
            assert secret not in text
    fiat_requests = [json.loads(line) for line in services["fiat"].log_lines() if '"path"' in line]
    assert {"method": "GET", "path": "/health", "status": 200} in [
        {k: e[k] for k in ("method", "path", "status")} for e in fiat_requests]
