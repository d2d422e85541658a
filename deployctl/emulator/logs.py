"""Logging v2 ListLogEntries over what the emulator's processes write to stdout and stderr.

Entries are appended as JSON lines to files under <state_dir>/logs (one file per service or job), so they
survive a restart. The emulator never echoes them into its own log: a service may print a secret.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

from deployctl.emulator import run_common
from deployctl.emulator.rpc import Method, invalid, service

SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"]
SEVERITY_NUMBERS = {"DEFAULT": 0, "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400, "ERROR": 500,
                    "CRITICAL": 600, "ALERT": 700, "EMERGENCY": 800}
_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "ERR": "ERROR", "TRACE": "DEBUG", "EXCEPTION": "ERROR"}
MAX_PAGE = 1000


def severity_of(stream: str, payload: dict | None) -> str:
    if payload:
        raw = payload.get("severity") or payload.get("level")
        if isinstance(raw, str):
            word = _ALIASES.get(raw.upper(), raw.upper())
            if word in SEVERITY_NUMBERS:
                return word
    return "ERROR" if stream == "stderr" else "INFO"


def parse_time(text: str) -> float:
    text = text.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --- filters -----------------------------------------------------------------------------------------
_TERM = re.compile(r'\s*(?P<key>[A-Za-z_][\w.]*(?:\."[^"]+")?|labels\."[^"]+")\s*'
                   r'(?P<op>>=|<=|!=|=|>|<|:)\s*(?P<value>"(?:[^"\\]|\\.)*"|\S+)\s*$')


@dataclass(frozen=True)
class Term:
    path: tuple[str, ...]
    op: str
    value: str


def parse_filter(text: str) -> list[Term]:
    terms = []
    for part in re.split(r"\s+AND\s+|\n+", text.strip()) if text.strip() else []:
        m = _TERM.match(part)
        if not m:
            raise invalid(f"unsupported filter expression: {part!r}")
        key = m["key"]
        path = tuple(p.strip('"') for p in re.findall(r'"[^"]+"|[^.]+', key))
        value = m["value"]
        if value.startswith('"'):
            value = json.loads(value)
        terms.append(Term(path, m["op"], value))
    return terms


def _lookup(entry: dict, path: tuple[str, ...]):
    head = path[0]
    if head == "timestamp":
        return entry["ts"]
    if head == "severity":
        return SEVERITY_NUMBERS[entry["severity"]]
    if head in ("logName", "log_name"):
        return entry["log_name"]
    if head in ("textPayload", "text_payload"):
        return entry.get("text")
    node = {"resource": entry["resource"], "labels": entry.get("labels", {}),
            "jsonPayload": entry.get("json")}.get(head)
    for p in path[1:]:
        node = node.get(p) if isinstance(node, dict) else None
    return node


def _compare(actual, op: str, want) -> bool:
    if actual is None:
        return op == "!="
    if op == ":":
        return str(want) in str(actual)
    if op in ("=", "!="):
        return (str(actual) == str(want)) == (op == "=")
    return {">=": actual >= want, "<=": actual <= want, ">": actual > want, "<": actual < want}[op]


def matches(entry: dict, terms: list[Term]) -> bool:
    for t in terms:
        want: object = t.value
        if t.path[0] == "timestamp":
            want = parse_time(t.value)
        elif t.path[0] == "severity":
            want = SEVERITY_NUMBERS.get(str(t.value).upper(), 0)
        if not _compare(_lookup(entry, t.path), t.op, want):
            return False
    return True


# --- the component -----------------------------------------------------------------------------------
class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, *, project: str, stream: str, line: str, resource_type: str, resource_labels: dict,
              labels: dict | None = None, file_key: str) -> None:
        payload = None
        if line.startswith("{"):
            try:
                payload = json.loads(line)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                payload = None
        entry = {
            "ts": time.time(), "severity": severity_of(stream, payload),
            "log_name": f"projects/{project}/logs/run.googleapis.com%2F{stream}",
            "resource": {"type": resource_type, "labels": resource_labels}, "labels": labels or {},
            "insert_id": uuid.uuid4().hex[:16],
        }
        if payload is not None:
            entry["json"] = payload
        else:
            entry["text"] = line
        data = json.dumps(entry) + "\n"
        safe = re.sub(r"[^\w.-]", "_", file_key)
        # 0600: a service may print a secret, and the state dir may be readable by others.
        fd = os.open(self.root / f"{safe}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with self._lock, os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(data)

    def entries(self) -> list[dict]:
        out = []
        with self._lock:
            for path in sorted(self.root.glob("*.jsonl")):
                for line in path.read_text("utf-8").splitlines():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue  # a line torn by a crash
        return out


def to_proto(entry: dict):
    from google.api import monitored_resource_pb2
    from google.cloud.logging_v2.types import LogEntry
    from google.protobuf import struct_pb2, timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(entry["ts"] * 1e9))
    res = monitored_resource_pb2.MonitoredResource(type=entry["resource"]["type"],
                                                   labels=entry["resource"]["labels"])
    msg = LogEntry(log_name=entry["log_name"], resource=res, timestamp=ts, receive_timestamp=ts,
                   severity=SEVERITY_NUMBERS[entry["severity"]], insert_id=entry["insert_id"],
                   labels=entry.get("labels", {}))
    if "json" in entry:
        s = struct_pb2.Struct()
        s.update(entry["json"])
        msg.json_payload = s
    else:
        msg.text_payload = entry.get("text", "")
    return msg


class Logging:
    def __init__(self, emulator) -> None:
        self.store = LogStore(emulator.state_dir / "logs")

    def write(self, **kwargs) -> None:
        self.store.write(**kwargs)

    def list_entries(self, req):
        from google.cloud.logging_v2.types import ListLogEntriesResponse

        terms = parse_filter(req.filter)
        projects = {n.split("/")[1] for n in req.resource_names if n.startswith("projects/")}
        order = (req.order_by or "timestamp asc").lower().split()
        if order[0] != "timestamp":
            raise invalid(f"unsupported order_by: {req.order_by!r}")
        found = [e for e in self.store.entries()
                 if (not projects or e["log_name"].split("/")[1] in projects) and matches(e, terms)]
        found.sort(key=lambda e: e["ts"], reverse=len(order) > 1 and order[1] == "desc")
        page, token = run_common.page(found, min(req.page_size or 50, MAX_PAGE), req.page_token)
        return ListLogEntriesResponse(entries=[to_proto(e) for e in page], next_page_token=token)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse

        return [service("google.logging.v2.LoggingServiceV2", {
            "ListLogEntries": Method(self.list_entries, ListLogEntriesRequest, ListLogEntriesResponse),
        })]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def create(emulator) -> Logging:
    return Logging(emulator)
