"""One lint finding: where (JSON path and line), which rule, what is wrong, and how to fix it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from deployctl.endpoints.load import JsonPath, Spec, dotted

Severity = Literal["error", "warning", "info"]
ORDER = {"error": 0, "warning": 1, "info": 2}


class Finding(BaseModel):
    severity: Severity
    rule: str
    path: str  # e.g. paths./v1/deposits.post.operationId
    line: int | None = None
    message: str
    fix: str

    @classmethod
    def at(cls, severity: Severity, rule: str, path: JsonPath | str, message: str, fix: str,
           spec: Spec | None = None) -> Finding:
        if isinstance(path, str):  # not in the document (e.g. --config-id)
            return cls(severity=severity, rule=rule, path=path, message=message, fix=fix)
        return cls(severity=severity, rule=rule, path=dotted(path), line=spec.line(path) if spec else None,
                   message=message, fix=fix)

    @classmethod
    def error(cls, rule: str, path: JsonPath | str, message: str, fix: str, spec: Spec | None = None) -> Finding:
        return cls.at("error", rule, path, message, fix, spec)

    @classmethod
    def warning(cls, rule: str, path: JsonPath | str, message: str, fix: str, spec: Spec | None = None) -> Finding:
        return cls.at("warning", rule, path, message, fix, spec)

    @classmethod
    def info(cls, rule: str, path: JsonPath | str, message: str, fix: str, spec: Spec | None = None) -> Finding:
        return cls.at("info", rule, path, message, fix, spec)


def sort(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (ORDER[f.severity], f.line or 0, f.path))
