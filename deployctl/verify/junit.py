"""The JUnit XML report (the format CI systems render natively): one testsuite per check, one testcase per
step; an unmet expectation is a <failure>, a step that could not run an <error>, a step not run <skipped>.
It validates against the common junit-10.xsd (Jenkins xunit's, which CI systems accept): `skipped` is counted on
each <testsuite>, never on <testsuites>, which that schema does not allow.
Every text passes through deployctl.redact, and the whole document once more before it is written; characters
XML 1.0 forbids (NUL, ESC and the other controls a response body may hold) become visible escapes."""

from __future__ import annotations

import datetime as dt
import os
import socket
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from deployctl import errors, redact
from deployctl.printable import printable
from deployctl.verify.model import ERROR, FAILED, SKIPPED, StepReport


def _counts(reports: list[StepReport], *, skipped: bool = True) -> dict[str, str]:
    out = {"tests": str(len(reports)),
           "failures": str(sum(r.outcome == FAILED for r in reports)),
           "errors": str(sum(r.outcome == ERROR for r in reports)),
           "time": f"{sum(r.elapsed for r in reports):.3f}"}
    if skipped:
        out["skipped"] = str(sum(r.outcome == SKIPPED for r in reports))
    return out


def _clean(text: str) -> str:
    return printable(redact.redact(text))


def _details(r: StepReport) -> str:
    parts = list(r.failures)
    if r.request:
        parts += ["", "request:"] + ["  " + line for line in r.request]
    if r.status is not None:
        parts += ["", f"response: HTTP {r.status}"] + ["  " + line for line in r.body]
    return "\n".join(parts)


def document(reports: list[StepReport], *, environment: str) -> str:
    root = ET.Element("testsuites", {"name": f"deployctl verify ({environment})",
                                     **_counts(reports, skipped=False)})
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    checks = list(dict.fromkeys(r.check for r in reports))
    for i, check in enumerate(checks):
        mine = [r for r in reports if r.check == check]
        suite = ET.SubElement(root, "testsuite", {"name": check, "id": str(i), "package": "deployctl.verify",
                                                  "timestamp": stamp, "hostname": socket.gethostname(),
                                                  **_counts(mine)})
        for r in mine:
            case = ET.SubElement(suite, "testcase", {"classname": f"verify.{environment}.{check}",
                                                     "name": f"{r.step} ({r.service})", "time": f"{r.elapsed:.3f}"})
            if r.outcome == FAILED:
                ET.SubElement(case, "failure", {"message": r.message, "type": "expectation"}).text = _details(r)
            elif r.outcome == ERROR:
                ET.SubElement(case, "error", {"message": r.message, "type": "step-error"}).text = _details(r)
            elif r.outcome == SKIPPED:
                ET.SubElement(case, "skipped", {"message": r.message})
            if r.request:
                ET.SubElement(case, "system-out").text = "\n".join(r.request)
    for element in root.iter():  # every attribute and text, not only the ones known to hold values
        element.attrib = {k: _clean(v) for k, v in element.attrib.items()}
        if element.text:
            element.text = _clean(element.text)
    ET.indent(root)
    return redact.redact('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def write(path: Path, reports: list[StepReport], *, environment: str) -> Path:
    """Write the report atomically (a CI reader never sees half a file)."""
    text = document(reports, environment=environment)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".junit-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise errors.UsageError(f"cannot write the JUnit report to {path}: {e.strerror}",
                                hint="pass --junit-xml a writable path") from None
    return path
