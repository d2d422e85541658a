"""Fault injection for tests: added latency, transient errors, PERMISSION_DENIED on a named resource.

Faults are read from `<state_dir>/faults.json` (re-read when it changes), so a test can turn them on and off
while the emulator runs in another process:

    {"latency_ms": {"*": 50, "GetService": 400},
     "error_rate": 0.3, "error_codes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"], "error_methods": ["*"],
     "permission_denied": ["projects/p/secrets/db-password"],
     "seed": 1}

Other components read their own keys from the same file (e.g. "failing_jobs", "unhealthy_revisions").
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import grpc


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
                    self._data = json.loads(self.path.read_text("utf-8"))
                except (OSError, ValueError):
                    self._data = {}
                self._mtime = mtime
                if "seed" in self._data:
                    self._rng.seed(self._data["seed"])
            return self._data

    def roll(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate


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
            if delay:
                time.sleep(delay / 1000)
            denied = cfg.get("permission_denied", [])
            resource = _resource_of(request)
            if resource and any(resource == d or resource.startswith(d + "/") for d in denied):
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"Permission denied on resource '{resource}' (or it may not exist).")
            methods = cfg.get("error_methods", ["*"])
            if cfg.get("error_rate") and ("*" in methods or method in methods):
                if self.faults.roll(float(cfg["error_rate"])):
                    codes = cfg.get("error_codes", ["UNAVAILABLE"])
                    code = getattr(grpc.StatusCode, codes[int(time.monotonic_ns()) % len(codes)])
                    context.abort(code, f"injected fault: {code.name}")
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            faulty, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _resource_of(request) -> str:
    for field in ("name", "parent", "resource", "instance", "secret"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return ""
