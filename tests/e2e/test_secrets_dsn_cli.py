"""secrets and dsn as a user runs them against the local cloud, and the canary: a secret value containing
every character that encodings treat specially appears in no output, in no encoding, unless --reveal."""

from __future__ import annotations

import base64
import contextlib
import json
import unicodedata
from urllib.parse import quote, quote_plus

import pytest

from .conftest import Cli

CANARY = "Cn@ry:/?#%+ ü-ß\u00e9e\u0301"


def encodings(value: str) -> list[str]:
    out = []
    # the value as given and in both Unicode normal forms (the canary mixes composed and decomposed letters)
    for v in dict.fromkeys([value, unicodedata.normalize("NFC", value), unicodedata.normalize("NFD", value)]):
        raw = v.encode()
        b64, b64u = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
        out += [v, quote(v, safe=""), quote(v), quote_plus(v), b64, b64.rstrip("="), b64u, b64u.rstrip("="),
                json.dumps(v)[1:-1], v.replace("%", "%%"), json.dumps(v, ensure_ascii=False)[1:-1]]
    return out


def assert_no_canary(text: str, where: str) -> None:
    for form in encodings(CANARY):
        assert form not in text, f"the canary appeared in {where} as {form!r}"


def test_local_up_is_idempotent_and_provisions_secrets(local_cloud):
    again = local_cloud("--json", "local", "up")
    assert again.code == 0, again.output
    doc = json.loads(again.stdout)
    assert doc["schema"] == "deployctl/local/up/v1"
    ip = doc["data"]["instances"]["core-pg"]
    assert ip.startswith("127.")
    listing = json.loads(local_cloud("--json", "secrets", "list").stdout)["data"]
    ids = {s["id"] for s in listing["secrets"]}
    assert {"fiat-gateway-db-password", "cross-chain-db-password", "cross-chain-database-url",
            "api-key-pepper"} <= ids
    assert listing["missing"] == []
    state = json.loads((local_cloud.state_dir / "terraform.tfstate").read_text())
    types = {r["type"] for r in state["resources"]}
    assert {"google_sql_user", "google_sql_database", "google_secret_manager_secret_version"} <= types


def test_dsn_is_masked_encoded_and_ssl(local_cloud):
    run = local_cloud("--json", "dsn")
    assert run.code == 0, run.output
    services = json.loads(run.stdout)["data"]["services"]
    assert {s["service"] for s in services} == {"fiat-gateway", "cross-chain-integration"}
    for s in services:
        assert ":***@" in s["url"] and "sslmode=require" in s["url"]
        assert s["stored_matches"] is True
        assert [f for f in s["stored_findings"] if f["severity"] == "error"] == []
        assert s["connect_args"]["ssl_context"] == "required, certificate not checked (require)"  # C11


def test_another_driver_is_not_compared_with_nor_written_into_the_url_secret(local_cloud):
    before = json.loads(local_cloud("--json", "secrets", "versions", "fiat-gateway-database-url").stdout)["data"]
    run = local_cloud("--json", "dsn", "fiat-gateway", "--driver", "asyncpg")
    assert run.code == 0, run.output
    s = json.loads(run.stdout)["data"]["services"][0]
    assert s["url"].startswith("postgresql+asyncpg://") and s["url"].endswith("?ssl=require")
    assert s["stored_matches"] is None and "not compared" in s["stored_skipped"]
    assert s["connect_args"]["ssl"] == "require" and s["notes"]
    refused = local_cloud("dsn", "fiat-gateway", "--driver", "asyncpg", "--write-secret")
    assert refused.code == 2 and "is not the service's driver (pg8000)" in refused.stderr
    after = json.loads(local_cloud("--json", "secrets", "versions", "fiat-gateway-database-url").stdout)["data"]
    assert after == before


def test_secret_versions_and_states(local_cloud):
    assert local_cloud("secrets", "set", "e2e-versions", input="one-1").code == 0
    assert local_cloud("secrets", "set", "e2e-versions", input="two-2").code == 0
    doc = json.loads(local_cloud("--json", "secrets", "versions", "e2e-versions").stdout)
    assert [v["number"] for v in doc["data"]["versions"]] == [1, 2]
    assert all(v["state"] == "ENABLED" for v in doc["data"]["versions"])


def test_fingerprints_agree_across_commands(local_cloud):
    """B9: the fingerprint `secrets set` prints is the one a later `secrets get` prints (the key is kept in the
    state dir, 0600), so a person can tell whether two values are the same."""
    import re
    import stat

    made = local_cloud("secrets", "set", "e2e-fingerprint", input="fingerprinted-value")
    got = local_cloud("secrets", "get", "e2e-fingerprint")
    assert made.code == got.code == 0
    fp = re.findall(r"fp:[0-9a-f]{10}", made.stdout)
    assert fp and fp == re.findall(r"fp:[0-9a-f]{10}", got.stdout)
    js = json.loads(local_cloud("--json", "secrets", "get", "e2e-fingerprint").stdout)["data"]
    assert js["fingerprint"] == fp[0]
    key = local_cloud.state_dir / "fingerprint.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_missing_secret_is_exit_1_with_a_hint(local_cloud):
    for verb in ("get", "versions"):
        run = local_cloud("secrets", verb, "no-such-secret")
        assert run.code == 1 and "Traceback" not in run.output
        # it was the API's '.../versions/latest was not found: Secret [...] not found.' and 'check the name, or create it'
        assert run.stderr.splitlines() == [
            "error: no secret 'no-such-secret' in project deployctl-local",
            "  next: `deployctl secrets list` shows the secrets; `deployctl secrets set no-such-secret --from-file "
            "FILE` (or the value on stdin) creates it"], run.stderr
    run = local_cloud("--json", "secrets", "get", "api-key-pepper", "--version", "99")
    assert run.code == 1
    assert json.loads(run.stdout)["errors"] == [{"code": "not-found", "message": "secret api-key-pepper has no version 99",
                                                 "hint": "`deployctl secrets versions api-key-pepper` lists them"}]


@pytest.mark.parametrize("argv, rule", [
    (["secrets", "get", "a/b"], "1-255 letters"), (["secrets", "get", "../../x"], "1-255 letters"),
    (["secrets", "versions", "a/b"], "1-255 letters"), (["secrets", "set", "bad id"], "1-255 letters"),
    (["secrets", "get", "some-secret", "--version", "abc"], "'latest' or a number"),
    (["secrets", "get", "some-secret", "--version", "0"], "'latest' or a number"),
    (["secrets", "get", "some-secret", "--version", "99999999999999999999"], "'latest' or a number"),
])
def test_bad_ids_and_versions_are_usage_errors_before_any_call(tmp_path, argv, rule):
    """B8: exit 2 with the rule, and no local cloud is even started (the state dir stays empty)."""
    from tests.e2e.conftest import Cli

    run = Cli(tmp_path / "state")(*argv, input="some-value")
    assert run.code == 2, run.output
    assert rule in run.stderr and "next:" in run.stderr
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_empty_short_and_oversized_values_are_refused(local_cloud):
    assert local_cloud("secrets", "set", "e2e-empty", input="").code == 2
    for short in ("abc", "ab\n", " x "):  # C4: too short to be masked in output
        run = local_cloud("secrets", "set", "e2e-short", input=short)
        assert run.code == 2 and "shorter than 4 characters" in run.stderr, run.output
    big = local_cloud("secrets", "set", "e2e-big", input=b"x" * (64 * 1024 + 1))
    assert big.code == 2 and "65536" in big.stderr


def test_binary_secret_values_are_handled(local_cloud):
    blob = bytes(range(256))
    assert local_cloud("secrets", "set", "e2e-binary", input=blob).code == 0
    got = json.loads(local_cloud("--json", "secrets", "get", "e2e-binary").stdout)["data"]
    assert got["length"] == 256 and got["fingerprint"].startswith("fp:")
    # A binary value where a connection string belongs: dsn reports it, no traceback, then repairs it.
    assert local_cloud("secrets", "set", "fiat-gateway-database-url", input=b"\xff\xfe\x00garbage").code == 0
    run = local_cloud("dsn", "fiat-gateway")
    assert run.code == 1 and "Traceback" not in run.output
    assert "error:" in run.stdout + run.stderr
    fixed = local_cloud("--json", "dsn", "fiat-gateway", "--write-secret")
    assert fixed.code == 0, fixed.output
    assert json.loads(fixed.stdout)["data"]["services"][0]["written_version"] is not None


def test_set_warns_about_a_trailing_newline_and_strips_it_only_when_asked(local_cloud):
    human = local_cloud("secrets", "set", "e2e-newline", input="hunter2 pass\n")
    assert human.code == 0, human.output
    assert "ends with a newline" in human.stderr and "--strip-newline" in human.stderr
    js = local_cloud("--json", "secrets", "set", "e2e-newline", input="hunter2 pass\n")
    doc = json.loads(js.stdout)
    assert js.code == 0 and doc["ok"] is True
    assert doc["data"]["trailing_newline"] is True and doc["data"]["warnings"][0]["code"] == "trailing-newline"
    stripped = json.loads(local_cloud("--json", "secrets", "set", "e2e-newline", "--strip-newline",
                                      input="hunter2 pass\r\n").stdout)["data"]
    assert stripped["stripped_newline"] is True and stripped["warnings"] == [] and stripped["length"] == 12
    got = json.loads(local_cloud("--json", "secrets", "get", "e2e-newline").stdout)["data"]
    assert got["length"] == 12 and got["trailing_newline"] is False
    clean = local_cloud("--json", "secrets", "set", "e2e-newline", input="no newline here")
    assert json.loads(clean.stdout)["data"]["warnings"] == [] and "newline" not in clean.stderr


def test_set_on_a_terminal_asks_without_echoing(local_cloud):
    """C10: on a TTY the value is asked for with echo off (it was read from stdin, echoed as typed)."""
    import fcntl
    import os
    import pty
    import select
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "deployctl", "secrets", "set", "e2e-typed"], stdin=slave,
                            stdout=slave, stderr=slave, env=local_cloud.env, cwd=str(local_cloud.config_dir.parent),
                            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal seen
        import time

        end = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break

    try:
        read_until(b"(not shown)")
        assert b"value for e2e-typed (not shown)" in seen, seen
        os.write(master, b"typed-secret-value\n")
        read_until(b"added version")
        assert proc.wait(timeout=60) == 0, seen
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert b"typed-secret-value" not in seen
    got = json.loads(local_cloud("--json", "secrets", "get", "e2e-typed").stdout)["data"]
    assert got["length"] == len("typed-secret-value") and got["trailing_newline"] is False


def test_reveal_through_a_pipe_copies_the_value_byte_for_byte(local_cloud):
    for value in (b"abcd1234", b"with-newline\n"):
        assert local_cloud("secrets", "set", "e2e-src", input=value).code == 0
        revealed = local_cloud("secrets", "get", "e2e-src", "--reveal")
        assert revealed.code == 0 and revealed.stdout.encode() == value  # nothing added off a terminal
        assert ("ends with a newline" in revealed.stderr) == value.endswith(b"\n")
    # get --reveal | set: the copy is the same value (it gained a newline before)
    assert local_cloud("secrets", "set", "e2e-copy", input=revealed.stdout.encode()).code == 0
    copy = json.loads(local_cloud("--json", "secrets", "get", "e2e-copy").stdout)["data"]
    assert copy["length"] == len(value) and copy["trailing_newline"] is True


@contextlib.contextmanager
def replaced(cli, secret: str, value: bytes | str):
    """`secret` holds `value` inside the block (yields its version); its previous value comes back afterwards
    (other modules deploy on this local cloud)."""
    before = cli("secrets", "get", secret, "--reveal")
    assert before.code == 0, before.output
    put = cli("--json", "secrets", "set", secret, input=value)
    assert put.code == 0, put.output
    try:
        yield json.loads(put.stdout)["data"]["version"]
    finally:
        assert cli("secrets", "set", secret, input=before.stdout).code == 0


def test_dsn_refuses_a_password_that_ends_with_a_newline(local_cloud):
    stored = json.loads(local_cloud("--json", "secrets", "versions", "fiat-gateway-database-url").stdout)["data"]
    with replaced(local_cloud, "fiat-gateway-db-password", "Newline-Pw-1234\n") as number:
        run = local_cloud("dsn", "fiat-gateway")
        assert run.code == 1, run.output
        assert f"fiat-gateway-db-password (version {number}) ends with a newline" in run.stderr
        assert "printf '%s'" in run.stderr and "deployctl doctor fiat-gateway --fix" in run.stderr
        assert "Newline-Pw" not in run.output and "%0A" not in run.stdout
        js = local_cloud("--json", "dsn", "fiat-gateway", "--write-secret")
        assert js.code == 1 and json.loads(js.stdout)["errors"][0]["code"] == "password-trailing-newline"
    after = json.loads(local_cloud("--json", "secrets", "versions", "fiat-gateway-database-url").stdout)["data"]
    assert after["versions"] == stored["versions"], "nothing was written into the url_secret"


@pytest.fixture(scope="module")
def canary_cloud(local_cloud):
    """The canary stored as a service's database password, as a plain secret, and as a DSN secret.

    The real values come back afterwards: other modules deploy fiat-gateway on this local cloud."""
    saved = {}
    for secret in ("fiat-gateway-db-password", "fiat-gateway-database-url"):
        got = local_cloud("secrets", "get", secret, "--reveal")
        assert got.code == 0, got.output
        saved[secret] = got.stdout  # off a terminal --reveal prints the value exactly
    for secret in ("fiat-gateway-db-password", "e2e-canary"):
        run = local_cloud("secrets", "set", secret, input=CANARY)
        assert run.code == 0, run.output
        assert_no_canary(run.output, f"secrets set {secret}")
    yield local_cloud
    for secret, value in saved.items():
        assert local_cloud("secrets", "set", secret, input=value).code == 0


# (argv, stdin, the exit code it must end with): a command that failed before it read the value proves nothing
COMMANDS = [
    (["secrets", "list"], None, 0), (["secrets", "get", "e2e-canary"], None, 0),
    (["secrets", "versions", "e2e-canary"], None, 0), (["secrets", "set", "e2e-canary"], CANARY + "\n", 0),
    (["dsn"], None, 0), (["dsn", "fiat-gateway", "--driver", "psycopg"], None, 0),
    (["dsn", "fiat-gateway", "--driver", "asyncpg"], None, 0), (["dsn", "fiat-gateway", "--write-secret"], None, 0),
    (["config", "show"], None, 0), (["config", "validate"], None, 0), (["local", "ps"], None, 0),
    (["dsn", "lint"], f"postgresql+psycopg://u:{quote(CANARY, safe='')}@10.20.0.3/db?sslmode=require", 0),
    (["dsn", "lint", "fiat-gateway"], f"postgresql+pg8000://u:{CANARY}@10.20.0.3/db", 1),  # raw, wrong host
    # failure paths
    (["dsn", "no-such-service"], None, 2), (["secrets", "get", "e2e-canary", "--version", "99"], None, 1),
    (["secrets", "get", "e2e-canary", "--version", "abc"], None, 2), (["dsn", "api-key-service"], None, 2),
    (["secrets", "set", "bad/id"], CANARY, 2), (["secrets", "set", "e2e-canary"], CANARY * 4000, 2),  # > 64 KiB
]


# --verbose and the log files are covered by tests/e2e/test_trust_canary.py, across every command. The human
# mode runs narrow, so that Rich wraps and folds the long values (B3).
@pytest.mark.parametrize("mode", [[], ["--json"]], ids=["human", "json"])
def test_canary_never_appears(canary_cloud, mode):
    env = {} if mode else {"COLUMNS": "50"}
    for argv, stdin, code in COMMANDS:
        run = canary_cloud(*mode, *argv, input=stdin, env=env)
        where = " ".join(mode + argv)
        assert run.code == code, (where, run.output)
        assert "Traceback" not in run.output, (where, run.output)
        assert_no_canary(run.output, where)
        if mode:
            assert json.loads(run.stdout)["ok"] is (code == 0), where
    for log in (canary_cloud.state_dir / "logs").glob("*.log"):
        assert_no_canary(log.read_text(errors="replace"), str(log))


def test_reveal_shows_the_value_only_when_asked(canary_cloud):
    run = canary_cloud("secrets", "get", "e2e-canary", "--reveal")
    assert run.code == 0 and run.stdout.rstrip("\n") == CANARY
    dsn = canary_cloud("dsn", "fiat-gateway", "--reveal")
    assert quote(CANARY, safe="") in dsn.stdout
    js = json.loads(canary_cloud("--json", "dsn", "fiat-gateway", "--reveal").stdout)
    assert quote(CANARY, safe="") in js["data"]["services"][0]["url"]


def test_dsn_lint_explains_a_hand_made_connection_string(local_cloud):
    """`deployctl dsn lint` (the issue's name): a string from stdin, never the command line."""
    bad = "postgresql+pg8000://u:Hand-Made-Pw@10.20.0.3/db?sslmode=disable"
    run = local_cloud("dsn", "lint", input=bad)
    assert run.code == 1, run.output
    assert "sslmode-disabled" in run.stdout and "no encryption" in run.stdout and "Hand-Made-Pw" not in run.output
    js = json.loads(local_cloud("--json", "dsn", "lint", input=bad).stdout)
    assert js["ok"] is False and js["errors"][0]["code"] == "dsn-sslmode-disabled"
    assert js["data"]["url"] == "postgresql+pg8000://u:***@10.20.0.3/db?sslmode=disable"
    # against a service: its instance's (live) IP and its driver, as read through deployctl.runtime
    built = local_cloud("dsn", "fiat-gateway", "--reveal")
    assert built.code == 0, built.output
    # `dsn SERVICE --reveal | dsn lint SERVICE`: the pipe gets the URL exactly; it ended with a newline, which lint
    # rightly called an error (and `| gcloud secrets versions add --data-file=-` would have stored)
    assert built.stdout.startswith("postgresql+pg8000://") and not built.stdout.endswith("\n")
    clean = json.loads(local_cloud("--json", "dsn", "lint", "fiat-gateway", input=built.stdout).stdout)
    assert clean["ok"] is True and clean["data"]["findings"] == [], clean
    assert local_cloud("dsn", "lint", "a", "b", input=bad).code == 2


def test_dsn_of_a_service_without_a_database_names_it_and_those_that_have_one(tmp_path):
    run = Cli(tmp_path)("dsn", "api-key-service")  # refused from the config alone: no local cloud is started
    assert run.code == 2, run.output
    assert run.stderr.startswith("error: api-key-service has no database"), run.stderr
    assert "next: name one that has: fiat-gateway, cross-chain-integration" in run.stderr
    assert not (tmp_path / "emulator.lock").exists()
