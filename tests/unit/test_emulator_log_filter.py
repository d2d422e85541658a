"""The Logging filter subset the emulator understands (the forms deployctl sends)."""

import pytest

from deployctl.emulator.logs import matches, parse_filter, parse_time, severity_of
from deployctl.emulator.rpc import RpcError

ENTRY = {"ts": parse_time("2026-03-01T10:00:00Z"), "severity": "ERROR",
         "log_name": "projects/p/logs/run.googleapis.com%2Fstderr",
         "resource": {"type": "cloud_run_job", "labels": {"job_name": "migrate"}},
         "labels": {"run.googleapis.com/execution_name": "migrate-abcde"}, "text": "boom"}


@pytest.mark.parametrize("text, expected", [
    ('resource.type="cloud_run_job"', True),
    ('resource.type="cloud_run_revision"', False),
    ('resource.type="cloud_run_job" AND resource.labels.job_name="migrate"', True),
    ('resource.labels.job_name="other"', False),
    ('labels."run.googleapis.com/execution_name"="migrate-abcde"', True),
    ('labels."run.googleapis.com/execution_name"="migrate-zzzzz"', False),
    ("severity>=ERROR", True),
    ("severity>=CRITICAL", False),
    ('timestamp>="2026-03-01T09:59:59Z"', True),
    ('timestamp>="2026-03-01T10:00:01+00:00"', False),
    ("", True),
])
def test_filter_forms(text, expected):
    assert matches(ENTRY, parse_filter(text)) is expected


def test_unsupported_filter_is_invalid_argument():
    with pytest.raises(RpcError):
        parse_filter("resource.type = OR something")


def test_severity_from_json_or_stream():
    assert severity_of("stdout", {"level": "warn"}) == "WARNING"
    assert severity_of("stdout", {"severity": "CRITICAL"}) == "CRITICAL"
    assert severity_of("stderr", None) == "ERROR"
    assert severity_of("stdout", {"message": "x"}) == "INFO"
