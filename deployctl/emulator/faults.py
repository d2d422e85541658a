"""Fault injection for tests: added latency, transient errors, lost replies, PERMISSION_DENIED on a resource.

Faults are read from `<state_dir>/faults.json` (re-read when it changes), so a test can turn them on and off
while the emulator runs in another process:

    {"latency_ms": {"*": 50, "GetService": 400},
     "error_rate": 0.3, "error_codes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"], "error_methods": ["*"],
     "drop_response_rate": 1.0, "drop_response_methods": ["RunJob"], "drop_response_code": "DEADLINE_EXCEEDED",
     "permission_denied": ["projects/p/secrets/db-password"],
     "seed": 1}

`error_rate` fails a call before its handler runs (the server did nothing): an injected UNAVAILABLE stands for a
request that never reached the service, so its details are grpc's own words for that ("failed to connect to all
addresses"), the one UNAVAILABLE after which a client may resend even a change; RESOURCE_EXHAUSTED is a quota
refusal. `drop_response_rate` runs the handler and then loses its reply (the server acted, the client sees
`drop_response_code`: DEADLINE_EXCEEDED as when a reply times out on the way back, UNAVAILABLE as a stream reset
or a front end's 503 after the backend acted). The seed makes both rolls, and the choice among `error_codes`, reproducible.
A file that is not a JSON object, or a key of the wrong type, is ignored (said in the emulator log).
Other components read their own keys from the same file (e.g. "failing_jobs", "unhealthy_revisions").
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path

import grpc

log = logging.getLogger("deployctl.emulator.faults")

# key -> the types it may have; other keys are other components' and pass through unchecked
_TYPES: dict[str, tuple] = {
    "latency_ms": (dict,), "error_rate": (int, float), "error_codes": (list,), "error_methods": (list,),
    "drop_response_rate": (int, float), "drop_response_methods": (list,), "drop_response_code": (str,),
    "permission_denied": (list,), "seed": (int, float, str),
}


def _checked(data, path: Path) -> dict:
    if not isinstance(data, dict):
        log.warning("%s: ignored, a JSON object is expected at the top level (not %s)", path, type(data).__name__)
        return {}
    out = {}
    for key, value in data.items():
        expected = _TYPES.get(key)
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            log.warning("%s: %r ignored, expected %s", path, key, " or ".join(t.__name__ for t in expected))
            continue
        out[key] = value
    codes = [c for c in out.get("error_codes", ["UNAVAILABLE"]) if _status(c) is not None]
    out["error_codes"] = codes or ["UNAVAILABLE"]
    if _status(out.get("drop_response_code", "DEADLINE_EXCEEDED")) is None:
        out.pop("drop_response_code")
    return out


def _status(name) -> grpc.StatusCode | None:
    code = getattr(grpc.StatusCode, str(name), None)
    return code if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK else None


class FaultConfig:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._data: dict = {}
        self._lock = threading.Lock()
        self._rng = random.Random()

    def data(self) -> dict:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                self._data, self._mtime = {}, None
                return self._data
            if mtime != self._mtime:
                try:
                    self._data = _checked(json.loads(self.path.read_text("utf-8")), self.path)
                except (OSError, ValueError) as e:
                    log.warning("%s: ignored, not readable JSON (%s)", self.path, e)
                    self._data = {}
                self._mtime = mtime
                if "seed" in self._data:
                    self._rng.seed(self._data["seed"])
            return self._data

    def roll(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate

    def choose(self, options: list):
        with self._lock:
            return self._rng.choice(options)


# What an injected error before the handler says, where grpc has its own words for "the request was not sent".
_NOT_SENT = {grpc.StatusCode.UNAVAILABLE: "injected fault: UNAVAILABLE: failed to connect to all addresses (the "
                                          "request did not reach the service)"}


def _applies(methods, method: str) -> bool:
    return "*" in methods or method in methods


class FaultInterceptor(grpc.ServerInterceptor):
    def __init__(self, faults: FaultConfig) -> None:
        self.faults = faults

    def intercept_service(self, continuation, handler_call_details):
        cfg = self.faults.data()
        if not cfg:
            return continuation(handler_call_details)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def faulty(request, context):
            latency = cfg.get("latency_ms", {})
            delay = latency.get(method, latency.get("*", 0))
            if isinstance(delay, int | float) and delay > 0:
                time.sleep(delay / 1000)
            denied = cfg.get("permission_denied", [])
            resource = _resource_of(request)
            if resource and any(resource == d or resource.startswith(f"{d}/") for d in denied):
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"Permission denied on resource '{resource}' (or it may not exist).")
            if cfg.get("error_rate") and _applies(cfg.get("error_methods", ["*"]), method):
                if self.faults.roll(float(cfg["error_rate"])):
                    code = _status(self.faults.choose(cfg["error_codes"]))
                    context.abort(code, _NOT_SENT.get(code, f"injected fault: {code.name}"))
            reply = inner(request, context)
            if cfg.get("drop_response_rate") and _applies(cfg.get("drop_response_methods", ["*"]), method):
                if self.faults.roll(float(cfg["drop_response_rate"])):
                    code = _status(cfg.get("drop_response_code", "DEADLINE_EXCEEDED"))
                    context.abort(code, f"injected fault: the reply to {method} was lost")
            return reply

        return grpc.unary_unary_rpc_method_handler(
            faulty, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _resource_of(request) -> str:
    for field in ("name", "parent", "resource", "instance", "secret"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return ""
