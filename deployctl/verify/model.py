"""What running a check step produced: plain data shared by the runner, the command's result and junit.py."""

from __future__ import annotations

from dataclasses import dataclass, field

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass
class StepReport:
    check: str
    step: str
    service: str
    method: str
    path: str  # as declared (references unresolved: it cannot leak a value)
    outcome: str = SKIPPED  # passed | failed (an expectation not met) | error (no answer, bad setup) | skipped
    elapsed: float = 0.0  # seconds
    failures: list[str] = field(default_factory=list)  # every unmet expectation, or the error
    request: list[str] = field(default_factory=list)  # method + URL, headers, body; redacted
    status: int | None = None
    body: list[str] = field(default_factory=list)  # the first lines of the answer (failed steps only); redacted

    @property
    def message(self) -> str:
        return self.failures[0] if self.failures else ""

    @property
    def ok(self) -> bool:
        return self.outcome == PASSED
