"""Read a migration run's output (a job's log lines, or an in-process exception): the steps Alembic applied, who
held the lock, the failing revision and the SQLSTATE, classified as in DESIGN §8 with the next step.

A job's traceback prints pg8000's ErrorResponse dict ({'S': 'FATAL', 'C': '28P01', 'M': '...'}), so the
SQLSTATE is parsed from the text and classified by deployctl.db.sqlstate like an exception would be.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from deployctl import redact
from deployctl.db.sqlstate import Diagnosis, classify

STEP = re.compile(r"Running (upgrade|downgrade) (\S*) -> (\S*?),? ")
SQLSTATE = re.compile(r"'C': '([0-9A-Z]{5})'")
MESSAGE = re.compile(r"'M': ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|error|Exception|Timeout|NotConfigured)): (.*)$")
PREFIX = "deployctl-migrate: "
AT = re.compile(r"deployctl-migrate: at (.+)$")
FRAME_STARTS = ("Traceback (most recent", "During handling of", "The above ")

# Failures without a SQLSTATE, recognised by their text: (pattern, exception to classify it as).
_NETWORK_TEXT = [(re.compile(r"Connection refused|ConnectionRefusedError"), ConnectionRefusedError),
                 (re.compile(r"timed out|TimeoutError"), TimeoutError),
                 (re.compile(r"gaierror|Name or service not known|nodename nor servname|"
                             r"Temporary failure in name resolution"), socket.gaierror)]


@dataclass(frozen=True)
class Step:
    direction: str  # upgrade | downgrade
    source: str  # "" for base
    dest: str


@dataclass(frozen=True)
class Reading:
    steps: list[Step]
    lock_waits: list[str]  # what the waiting run said about the holder
    sqlstate: str | None
    server_message: str | None
    error_line: str | None  # the last "SomethingError: ..." line
    failing_revision: str | None  # the revision being applied when it failed (only meaningful on failure)
    at: list[str] | None = None  # where the run said the database ended ([] = base); None: it did not say
    blockers: list[str] | None = None  # after a lock timeout: the sessions with open transactions
    error_lines: list[str] | None = None  # every "SomethingError: ..." line, first to last (causes come first)


def steps_in(lines: list[str]) -> list[Step]:
    out = []
    for line in lines:
        m = STEP.search(line + " ")
        if m:
            out.append(Step(m[1], m[2].strip(), m[3].strip().rstrip(",")))
    return out


def read(lines: list[str]) -> Reading:
    steps = steps_in(lines)
    waits = [line.split(PREFIX, 1)[1] for line in lines if PREFIX in line and "waiting up to" in line]
    text = "\n".join(lines)
    states = SQLSTATE.findall(text)
    messages = MESSAGE.findall(text)
    message = _unquote(messages[-1]) if messages else None
    errors = [m for m in (EXCEPTION_LINE.match(line.strip()) for line in lines) if m]
    failing = None
    if steps:
        last = steps[-1]
        failing = last.dest if last.direction == "upgrade" else last.source
    at = None
    for line in lines:
        m = AT.search(line.rstrip())
        if m:
            at = [] if m[1].strip() == "base" else [r.strip() for r in m[1].split(",") if r.strip()]
    blockers = [line.split(PREFIX, 1)[1][len("blocked by: "):] for line in lines
                if PREFIX + "blocked by: " in line]
    error_lines = [redact.redact(m.group(0)) for m in errors]
    return Reading(steps, waits, states[-1] if states else None, message,
                   error_lines[-1] if error_lines else None, failing, at, blockers, error_lines)


def tail(lines: list[str], limit: int) -> list[str]:
    """A failed run's last meaningful lines: traceback frames say where in Alembic, not what went wrong."""
    return [line for line in lines if line.strip() and not line.startswith("  ")
            and not line.startswith(FRAME_STARTS) and set(line.strip()) - set("^~")][-limit:]


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def diagnose(reading: Reading, service: str) -> Diagnosis | None:
    """DESIGN §8's diagnosis of a failed run's output, with SERVICE filled into the next step."""
    if reading.sqlstate:
        d = classify(Exception({"C": reading.sqlstate, "M": reading.server_message or ""}))
    else:
        text = reading.error_line or ""
        if "MigrationLockTimeout" in text:
            d = Diagnosis("migration-lock-timeout", None, "migration lock not acquired", text,
                          f"another migration of {service} is running: deployctl migrate status")
        elif "DatabaseNotConfigured" in text:
            d = Diagnosis("database-not-configured", None, "no database configured in the job", text,
                          f"check the job's DATABASE_URL secret: deployctl dsn {service} --write-secret")
        else:
            d = _network(reading.error_lines if reading.error_lines is not None else [text])
        if d is None:
            return None
    return with_blockers(for_service(d, service), reading)


def _network(lines: list[str]) -> Diagnosis | None:
    """A network failure named by any exception line: a traceback prints the root cause (ConnectionRefusedError,
    socket.gaierror) first and ends with the driver's generic "Can't create a connection"."""
    for line in lines:
        for pattern, kind in _NETWORK_TEXT:
            if pattern.search(line):
                return classify(kind(line))
    return None


def with_blockers(d: Diagnosis, reading: Reading) -> Diagnosis:
    """A lock timeout's cause with the sessions that had transactions open when it happened."""
    if d.code != "lock-timeout" or not reading.blockers:
        return d
    return Diagnosis(d.code, d.sqlstate, d.title, f"{d.cause}; open transactions: {'; '.join(reading.blockers)}",
                     d.hint)


def diagnose_exception(exc: BaseException, service: str) -> Diagnosis:
    return for_service(classify(exc), service)


def for_service(d: Diagnosis, service: str) -> Diagnosis:
    """The diagnosis with SERVICE in its next step filled in (and doctor named where it helps)."""
    hint = d.hint.replace("SERVICE", service)
    if d.code in ("auth-failed", "ssl-required", "network-refused", "network-timeout") and service not in hint:
        hint += f"; then: deployctl doctor {service}"
    return Diagnosis(d.code, d.sqlstate, d.title, d.cause, hint)
