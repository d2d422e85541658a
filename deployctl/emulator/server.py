"""The emulator process: one gRPC server (plus a small REST listener for the Cloud SQL connector).

Each component lives in its own module, `deployctl.emulator.<name>`, exposing `create(emulator)` that returns
an object with `handlers() -> list[grpc.GenericRpcHandler]`, `start()` and `stop()`. Components find each
other through `emulator.component(name)`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

from deployctl.emulator.faults import FaultConfig, FaultInterceptor
from deployctl.emulator.state import Store
from deployctl.osutil import LockHeld, atomic_write_text, hold_lock
from deployctl.redact import RedactingFilter

log = logging.getLogger("deployctl.emulator")

# Order matters: a component may use those listed before it when it starts.
COMPONENTS: tuple[str, ...] = ("secretmanager", "sqladmin", "logs", "run")

ENDPOINT_FILE = "emulator.json"
# Held (flock) for the emulator's whole life: one emulator per state directory. `deployctl local` uses it as the
# liveness test (the kernel releases it when the emulator dies, also on SIGKILL).
LOCK_FILE = "emulator.lock"

RestHandler = Callable[[dict, bytes, re.Match], tuple[int, dict]]


class StateDirBusy(Exception):
    """Another emulator (or its maintenance tool) holds this state directory."""

    def __init__(self, state_dir: Path, pid: int) -> None:
        super().__init__(f"the state directory {state_dir} is in use by another local cloud emulator "
                         f"(pid {pid or 'unknown'})")
        self.state_dir = state_dir
        self.pid = pid


def lock_state_dir(state_dir: Path) -> int:
    """The emulator lock of `state_dir` (an fd to keep open), or StateDirBusy naming the holder."""
    try:
        return hold_lock(Path(state_dir) / LOCK_FILE, wait=1.0)
    except LockHeld as e:
        raise StateDirBusy(Path(state_dir), e.pid) from None


class Emulator:
    def __init__(self, state_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 project_root: Path | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.requested_port = port
        self.project_root = Path(project_root or os.getcwd()).resolve()
        self.store = Store(self.state_dir / "state")
        self.faults = FaultConfig(self.state_dir / "faults.json")
        self.rest_routes: list[tuple[str, re.Pattern, RestHandler]] = []
        self._components: dict[str, object] = {}
        self._server: grpc.Server | None = None
        self._rest: ThreadingHTTPServer | None = None
        self.port = 0
        self.rest_port = 0
        self._lock_fd: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def rest_address(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    def component(self, name: str):
        return self._components[name]

    def add_rest_route(self, method: str, pattern: str, fn: RestHandler) -> None:
        self.rest_routes.append((method, re.compile(pattern), fn))

    def start(self) -> None:
        # Before anything else: a second emulator on this state dir would end the first one's processes, take
        # its ports and stop its clusters.
        self._lock_fd = lock_state_dir(self.state_dir)
        try:
            self._start()
        except BaseException:
            self.stop(grace=0)
            raise

    def _start(self) -> None:
        for name in COMPONENTS:
            module = importlib.import_module(f"deployctl.emulator.{name}")
            self._components[name] = module.create(self)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                                   interceptors=[FaultInterceptor(self.faults)])
        for comp in self._components.values():
            self._server.add_generic_rpc_handlers(tuple(comp.handlers()))
        self.port = self._server.add_insecure_port(f"{self.host}:{self.requested_port}")
        self._rest = ThreadingHTTPServer((self.host, 0), _rest_handler_class(self))
        self._rest.daemon_threads = True
        self.rest_port = self._rest.server_address[1]
        threading.Thread(target=self._rest.serve_forever, name="emulator-rest", daemon=True).start()
        for comp in self._components.values():
            comp.start()
        self._server.start()
        info = {"pid": os.getpid(), "grpc": self.address, "rest": self.rest_address, "started": time.time()}
        for comp in self._components.values():
            info.update(getattr(comp, "endpoint_info", dict)())
        atomic_write_text(self.state_dir / ENDPOINT_FILE, json.dumps(info))
        log.info("emulator serving on %s (REST %s), state in %s", self.address, self.rest_address,
                 self.state_dir)

    def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
        for comp in reversed(list(self._components.values())):
            try:
                comp.stop()
            except Exception:
                log.exception("emulator: stopping a component failed")
        endpoint = self.state_dir / ENDPOINT_FILE
        try:
            if json.loads(endpoint.read_text()).get("pid") == os.getpid():
                endpoint.unlink()
        except (OSError, ValueError):
            pass
        if self._lock_fd is not None:  # last: everything this emulator started has been stopped
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _rest_handler_class(emu: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _dispatch(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            for m, pattern, fn in emu.rest_routes:
                match = pattern.fullmatch(path)
                if m == method and match:
                    try:
                        status, payload = fn(dict(self.headers), body, match)
                    except Exception:
                        log.exception("emulator REST %s %s failed", method, path)
                        status, payload = 500, {"error": {"code": 500, "message": "emulator error"}}
                    break
            else:
                status, payload = 404, {"error": {"code": 404, "message": f"no route for {method} {path}"}}
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client went away; nothing to tell it
                pass

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def log_message(self, fmt, *args) -> None:
            log.debug("REST " + fmt, *args)

    return Handler


def serve(state_dir: Path, *, host: str = "127.0.0.1", port: int = 0, project_root: Path | None = None,
          on_ready: Callable[[Emulator], None] | None = None) -> None:
    """Run the emulator in the foreground until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emu = Emulator(state_dir, host=host, port=port, project_root=project_root)
    emu.start()
    try:
        if on_ready:
            on_ready(emu)
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="deployctl-emulator")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=0, type=int)
    parser.add_argument("--project-root", type=Path, default=None)
    parser.add_argument("--cleanup", action="store_true",
                        help="end what a crashed emulator left running (processes, clusters), then exit")
    parser.add_argument("--purge", action="store_true",
                        help="delete what the components keep outside the state dir (clusters), then exit")
    parser.add_argument("--leftovers", action="store_true",
                        help="print (JSON) what a crashed emulator left running, then exit")
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir).resolve()
    try:
        if args.leftovers:
            print(json.dumps(leftovers(state_dir)))
        elif args.cleanup or args.purge:
            maintain(state_dir, "purge" if args.purge else "cleanup")
        else:
            _serve_main(args)
    except StateDirBusy as e:
        print(f"deployctl emulator: {e}; stop it first (deployctl local down)", file=sys.stderr)
        sys.exit(2)


def maintain(state_dir: Path, hook_name: str) -> None:
    """Run each component's offline `cleanup` or `purge` hook, holding the state dir as an emulator would."""
    fd = lock_state_dir(state_dir)
    try:
        if hook_name == "cleanup":  # say what is about to be ended
            print(json.dumps(leftovers(state_dir)), flush=True)
        for name in COMPONENTS:
            hook = getattr(importlib.import_module(f"deployctl.emulator.{name}"), hook_name, None)
            if hook:
                hook(state_dir)
    finally:
        os.close(fd)


def leftovers(state_dir: Path) -> dict:
    """What each component left running after a crash, e.g. {"run": [...], "sqladmin": [...]}."""
    out = {}
    for name in COMPONENTS:
        hook = getattr(importlib.import_module(f"deployctl.emulator.{name}"), "leftovers", None)
        if hook:
            out[name] = hook(state_dir)
    return out


def _serve_main(args) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # the emulator knows every secret; its log must show none
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    serve(args.state_dir, host=args.host, port=args.port, project_root=args.project_root,
          on_ready=lambda emu: print(json.dumps({"grpc": emu.address, "rest": emu.rest_address}), flush=True))


if __name__ == "__main__":
    main()
