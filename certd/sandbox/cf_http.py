"""The Cloudflare emulator's HTTP side: the JSON envelope, injected faults, the request log
entry, and the HTTP/1.1 server that hands each request to the emulator.

Nothing here decides what an API call does (that is `cf_endpoints`); this module
only shapes answers the way the real API and its edge do. Headers are never logged,
so tokens cannot reach a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from certd.sandbox.cf_records import ApiError
from certd.sandbox.zones import new_id

# One logger for the whole emulator (its HTTP lines and its lifecycle).
log = logging.getLogger("certd.sandbox.cloudflare_api")

BASE_PATH = "/client/v4"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUTH_HEADERS = ("Authorization", "X-Auth-Email", "X-Auth-Key", "X-Auth-User-Service-Key")

_RATE_LIMITED = (971, "Please wait and consider throttling your request speed")  # 429, real API code


@dataclass(frozen=True)
class ApiRequest:
    """One request as the emulator saw it. Holds a token *id*, never the token."""

    method: str
    path: str
    query: str
    status: int
    token_id: str | None
    at: float
    # Names (never values) of the authentication headers sent: proves a client used only its token.
    auth_headers: tuple[str, ...] = ()

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS


@dataclass
class Fault:
    """An answer a test asked for instead of (or, `after_apply`, after) the real one."""

    status: int
    remaining: int
    retry_after: float | None
    writes_only: bool
    after_apply: bool

    def applies(self, method: str, *, after: bool) -> bool:
        return (self.remaining > 0 and self.after_apply == after
                and (not self.writes_only or method in WRITE_METHODS))


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def envelope(result: Any = None, *, errors: list[dict[str, Any]] | None = None,
             messages: list[dict[str, Any]] | None = None,
             result_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Cloudflare's v4 body: success, errors, messages, result (and result_info for lists)."""
    body: dict[str, Any] = {"success": not errors, "errors": errors or [], "messages": messages or [],
                            "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def json_response(status: int, payload: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


def error_response(exc: ApiError) -> Response:
    return json_response(exc.status, envelope(errors=exc.errors))


def fault_response(fault: Fault) -> Response:
    """What the API (429, 500) or the edge in front of it (502-504) answers."""
    headers: tuple[tuple[str, str], ...] = ()
    if fault.retry_after is not None:
        value = fault.retry_after
        headers = (("Retry-After", str(int(value)) if value == int(value) else f"{value:g}"),)
    if fault.status == 429:
        code, message = _RATE_LIMITED
        return json_response(429, envelope(errors=[{"code": code, "message": message}]), headers)
    if fault.status == 500:
        # The API's own failure: a JSON envelope (sandbox code).
        return json_response(500, envelope(errors=[{"code": 10002, "message": "Internal server error"}]),
                             headers)
    # 502/503/504 come from the edge in front of the API: an HTML page, not JSON.
    page = (f"<html><head><title>{fault.status} error</title></head><body><center>"
            f"<h1>{fault.status}</h1></center><hr><center>cloudflare</center></body></html>")
    return Response(fault.status, page.encode(), content_type="text/html", headers=headers)


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, 6007, "Malformed JSON in request body") from None


def allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        # Seen on the real API (fire1ce/DDNS-Cloudflare-Bash#16).
        raise ApiError(405, 10000, f"{method} method not allowed for the api_token authentication scheme")


def no_route(path: str, *, invalid_id: bool = False) -> ApiError:
    # Seen on the real API: 7003 for a malformed identifier plus 7000 (cloudflare-go#118).
    route_missing = {"code": 7000, "message": "No route for that URI"}
    if invalid_id:
        return ApiError(400, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?",
                        extra=[route_missing])
    return ApiError(400, 7000, "No route for that URI")


# method, request target, headers, body -> the answer
Responder = Callable[[str, str, Any, bytes], Response]


class HttpServer:
    """A threading HTTP/1.1 server in a daemon thread that answers with `responder`.

    `stop` also shuts down open keep-alive connections, which would otherwise hold
    handler threads after the listening socket is closed.
    """

    def __init__(self, responder: Responder, host: str, port: int) -> None:
        self._responder = responder
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        server = ThreadingHTTPServer((self._host, self._port), _Handler)
        server.daemon_threads = True
        server.plumbing = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="cloudflare-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            open_connections, self._connections = self._connections, set()
        for conn in open_connections:  # keep-alive clients would otherwise hold handler threads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the Cloudflare emulator is not running: call start() first")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def respond(self, method: str, target: str, headers: Any, body: bytes) -> Response:
        return self._responder(method, target, headers, body)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 plumbing; all decisions are in the responder (`CloudflareEmulator.handle`)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "cloudflare"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.plumbing.track(self.connection, open_=True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.plumbing.track(self.connection, open_=False)  # type: ignore[attr-defined]
        super().finish()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        plumbing: HttpServer = self.server.plumbing  # type: ignore[attr-defined]
        response = plumbing.respond(self.command, self.path, self.headers, body)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("CF-RAY", new_id()[:16] + "-SBX")
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries no token; headers are never logged.
        log.debug("cloudflare emulator: " + format, *args)
