"""Cloud Logging, read-only: the last lines a Cloud Run service or job wrote.

    lines = tail(clients, "acme-dev", job_filter("migrate-api", execution="migrate-api-x7k2p"), limit=20)

Lines come back oldest first (the API is asked newest first, so `limit` keeps the most recent ones). The text
may hold a secret a service printed: callers pass it through deployctl.redact like any other output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from deployctl.cloud.clients import Clients
from deployctl.cloud.errors import translated

SEVERITY_NAMES = {0: "DEFAULT", 100: "DEBUG", 200: "INFO", 300: "NOTICE", 400: "WARNING", 500: "ERROR",
                  600: "CRITICAL", 700: "ALERT", 800: "EMERGENCY"}


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime | None
    severity: str
    text: str


def _quote(value: str) -> str:
    return json.dumps(value)


def service_filter(service_id: str, *, revision: str | None = None) -> str:
    parts = ['resource.type="cloud_run_revision"', f"resource.labels.service_name={_quote(service_id)}"]
    if revision:
        parts.append(f"resource.labels.revision_name={_quote(revision)}")
    return " AND ".join(parts)


def job_filter(job_id: str, *, execution: str | None = None) -> str:
    parts = ['resource.type="cloud_run_job"', f"resource.labels.job_name={_quote(job_id)}"]
    if execution:
        parts.append(f'labels."run.googleapis.com/execution_name"={_quote(execution)}')
    return " AND ".join(parts)


def with_bounds(filter_: str, *, since: datetime | None = None, min_severity: str | None = None) -> str:
    parts = [filter_]
    if since:
        parts.append(f'timestamp>="{since.isoformat()}"')
    if min_severity:
        parts.append(f"severity>={min_severity.upper()}")
    return " AND ".join(p for p in parts if p)


def _text(entry) -> str:
    if entry.text_payload:
        return entry.text_payload
    if "json_payload" in entry:
        payload = dict(entry.json_payload)
        message = payload.get("message") or payload.get("msg")
        return str(message) if message is not None else json.dumps(payload, default=str)
    return ""


def tail(clients: Clients, project: str, filter_: str, *, limit: int = 50) -> list[LogLine]:
    """The most recent `limit` entries matching `filter_`, oldest first."""
    resource = f"projects/{project}"
    with translated(f"logs of {resource}", permission="logging.logEntries.list"):
        pager = clients.logging.list_log_entries(
            request={"resource_names": [resource], "filter": filter_, "order_by": "timestamp desc",
                     "page_size": limit}, **clients.policy.call())
        entries = []
        for entry in pager:
            entries.append(entry)
            if len(entries) >= limit:
                break
    lines = [LogLine(timestamp=e.timestamp or None, severity=SEVERITY_NAMES.get(int(e.severity), "DEFAULT"),
                     text=_text(e)) for e in entries]
    return list(reversed(lines))
