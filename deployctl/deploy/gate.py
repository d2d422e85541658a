"""HTTP health probes: one round for `status`, and the deploy's gate (N consecutive 200s from every health path
of the new revision within a deadline). httpx, one pooled client per caller, every request bounded."""

from __future__ import annotations

import time
from dataclasses import dataclass

from deployctl import interrupt, redact
from deployctl.printable import printable

DEFAULT_SUCCESSES = 3
DEFAULT_DEADLINE = 60.0
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class ProbeResult:
    path: str
    status: int | None  # None: no HTTP answer (see error)
    latency_ms: float | None
    error: str | None = None
    body: str = ""  # the first bytes of a failing answer (a health endpoint's own reason)

    @property
    def ok(self) -> bool:
        return self.status == 200

    def describe(self) -> str:
        if self.status is None:
            return f"GET {self.path}: no answer ({self.error})"
        tail = f": {self.body}" if self.body and not self.ok else ""
        return f"GET {self.path}: HTTP {self.status} in {self.latency_ms:.0f} ms{tail}"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    url: str
    elapsed: float
    rounds: int
    failure: ProbeResult | None  # the last failing probe when the gate failed


def client(timeout: float = PROBE_TIMEOUT, connections: int = 20):
    import httpx

    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
                        headers={"User-Agent": "deployctl-health"})


def probe(http, base_url: str, path: str, *, timeout: float | None = None) -> ProbeResult:
    """One GET; `timeout` (seconds) overrides the client's for this request (the gate's remaining time)."""
    import httpx

    started = time.perf_counter()
    try:
        resp = http.get(base_url.rstrip("/") + path,
                        **({"timeout": httpx.Timeout(timeout)} if timeout is not None else {}))
    except httpx.TimeoutException:
        return ProbeResult(path, None, None, "timeout")
    except httpx.HTTPError as e:
        return ProbeResult(path, None, None, type(e).__name__)
    latency = (time.perf_counter() - started) * 1000
    # The answer's own reason, redacted first (a cut must not leave a secret's prefix) and made printable.
    body = "" if resp.status_code == 200 else printable(redact.redact(resp.text)[:200].strip(), newlines=False)
    return ProbeResult(path, resp.status_code, round(latency, 1), body=body)


def gate(base_url: str, paths: list[str], *, successes: int = DEFAULT_SUCCESSES,
         deadline: float = DEFAULT_DEADLINE, interval: float = 0.3) -> GateResult:
    """Probe every path in rounds until each has answered 200 `successes` times in a row, or the deadline."""
    paths = paths or ["/"]
    streak = dict.fromkeys(paths, 0)
    last_failure: ProbeResult | None = None
    started = time.monotonic()
    rounds = 0
    with client() as http:
        while True:
            rounds += 1
            for path in paths:
                if streak[path] >= successes:
                    continue
                remaining = deadline - (time.monotonic() - started)
                if remaining <= 0:  # the deadline holds within a round too, not only between rounds
                    break
                interrupt.check()
                budget = min(PROBE_TIMEOUT, max(remaining, 0.05))
                result = probe(http, base_url, path, timeout=budget)
                if result.ok:
                    streak[path] += 1
                    continue
                streak[path] = 0
                # A probe the deadline cut short (a timeout within less than the full probe time) says nothing
                # about the revision: keep its real last answer. Any other failure, a refused connection of a
                # revision that just crashed included, is the newest news and replaces it.
                if not (result.error == "timeout" and budget < PROBE_TIMEOUT and last_failure is not None):
                    last_failure = result
            elapsed = time.monotonic() - started
            if all(n >= successes for n in streak.values()):
                return GateResult(True, base_url, elapsed, rounds, None)
            if elapsed >= deadline:
                return GateResult(False, base_url, elapsed, rounds, last_failure)
            interrupt.sleep(min(interval, max(0.0, deadline - elapsed)))
