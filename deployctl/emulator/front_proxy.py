"""A service's stable front door: an HTTP reverse proxy that splits requests across revisions by traffic percent.

The service's `uri` is this proxy's address, the same across revisions, so a rollout or rollback only swaps
the routing table. Request and response bodies are streamed in chunks, never buffered whole.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("deployctl.emulator")

CHUNK = 64 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
UPSTREAM_TIMEOUT = 300.0


class FrontProxy:
    def __init__(self, service_name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service_name = service_name
        self._routes: list[tuple[int, int]] = []  # (backend port, percent)
        self._lock = threading.Lock()
        self._server = _Server((host, port), _handler_class(self))
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"proxy-{port}", daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def routes(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._routes)

    def set_routes(self, routes: list[tuple[int, int]]) -> None:
        """routes: (backend port, percent) for every revision that should receive traffic."""
        with self._lock:
            self._routes = [(p, pct) for p, pct in routes if pct > 0]

    def pick(self) -> int | None:
        with self._lock:
            routes = list(self._routes)
        if not routes:
            return None
        total = sum(pct for _, pct in routes)
        roll = random.uniform(0, total)
        for port, pct in routes:
            roll -= pct
            if roll <= 0:
                return port
        return routes[-1][0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    request_queue_size = 128


def _handler_class(proxy: FrontProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _proxy(self) -> None:
            port = proxy.pick()
            if port is None:
                self._error(503, "no ready revision serves traffic for this service")
                return
            upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=UPSTREAM_TIMEOUT)
            try:
                self._forward(upstream)
            except (ConnectionError, TimeoutError, http.client.HTTPException, OSError) as e:
                if not getattr(self, "_started_response", False):
                    self._error(502, f"upstream revision did not answer: {type(e).__name__}")
                else:
                    self.close_connection = True
            finally:
                upstream.close()

        def _forward(self, upstream: http.client.HTTPConnection) -> None:
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            length = int(self.headers.get("Content-Length") or 0)
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            upstream.putheader("Host", self.headers.get("Host") or f"127.0.0.1:{proxy.port}")
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    upstream.putheader(k, v)
            upstream.putheader("X-Forwarded-For", self.client_address[0])
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            elif length or self.command in ("POST", "PUT", "PATCH"):
                upstream.putheader("Content-Length", str(length))
            upstream.endheaders()
            if chunked:
                self._copy_chunked_request(upstream)
            else:
                remaining = length
                while remaining > 0:
                    data = self.rfile.read(min(CHUNK, remaining))
                    if not data:
                        break
                    upstream.send(data)
                    remaining -= len(data)
            resp = upstream.getresponse()
            self._started_response = True
            self.send_response_only(resp.status, resp.reason)
            resp_len = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            stream_chunked = resp_len is None and not no_body
            if resp_len is not None:
                self.send_header("Content-Length", resp_len)
            if stream_chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if no_body:
                return
            while True:
                data = resp.read1(CHUNK) if stream_chunked else resp.read(CHUNK)
                if not data:
                    break
                if stream_chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)
                self.wfile.flush()
            if stream_chunked:
                self.wfile.write(b"0\r\n\r\n")
            if resp.will_close:
                self.close_connection = True

        def _copy_chunked_request(self, upstream) -> None:
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    upstream.send(b"0\r\n\r\n")
                    return
                data = self.rfile.read(size)
                self.rfile.readline(8)  # the CRLF after each chunk
                upstream.send(b"%x\r\n%s\r\n" % (len(data), data))

        def _error(self, status: int, message: str) -> None:
            body = (message + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy  # noqa: N815

        def log_message(self, fmt, *args) -> None:
            log.debug("proxy %s: " + fmt, proxy.service_name, *args)

    return Handler
