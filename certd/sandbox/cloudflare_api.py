"""A Cloudflare v4 API emulator on loopback, good enough that the official SDK cannot tell.

Covers what certd uses: zones (list with filters and pagination, get), DNS
records (list with filters, create, get, PATCH, PUT, delete) and token
verification, with Cloudflare's envelope, status codes and error codes.
Tokens are scoped to zones and permissions like real API tokens, and tests can
inject 429s and 5xx answers to exercise retries. Records land in a `ZoneStore`
that the sandbox DNS server answers from.

Tokens never reach the request log or any log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from certd.sandbox.cf_records import ApiError, build_record, check_conflicts, record_json, zone_json
from certd.sandbox.zones import SandboxZone, ZoneStore, new_id, normalize_name

__all__ = ["CloudflareEmulator", "ApiRequest", "PERMISSIONS", "BASE_PATH"]

log = logging.getLogger(__name__)

BASE_PATH = "/client/v4"
PERMISSIONS = frozenset({"zone:read", "dns:read", "dns:edit"})
_ID = re.compile(r"^[0-9a-f]{32}$")
_ZONE_NAME_OPS = ("not_equal", "equal", "starts_with_case_sensitive", "ends_with_case_sensitive",
                  "contains_case_sensitive", "starts_with", "ends_with", "contains")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_AUTH_HEADERS = ("Authorization", "X-Auth-Email", "X-Auth-Key", "X-Auth-User-Service-Key")

# Codes seen on the real API (sources in parentheses):
_AUTH_ERROR = (10000, "Authentication error")  # 403, token lacks permission or zone (terraform-provider-cloudflare#3292)
_INVALID_TOKEN = (1000, "Invalid API Token")  # 401 (sendmebits/ghostmail-ios#2)
_MISSING_AUTH = (9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")  # 400 (cloudflare-python#2678)
_RATE_LIMITED = (971, "Please wait and consider throttling your request speed")  # 429


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
        return self.method in _WRITE_METHODS


@dataclass(frozen=True)
class _Grant:
    token_id: str
    zones: frozenset[str] | None  # None: all zones
    permissions: frozenset[str]

    def covers(self, zone: SandboxZone) -> bool:
        return self.zones is None or zone.name in self.zones


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: float | None
    writes_only: bool
    after_apply: bool

    def applies(self, method: str, *, after: bool) -> bool:
        return (self.remaining > 0 and self.after_apply == after
                and (not self.writes_only or method in _WRITE_METHODS))


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _envelope(result: Any = None, *, errors: list[dict[str, Any]] | None = None,
              messages: list[dict[str, Any]] | None = None,
              result_info: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": not errors, "errors": errors or [], "messages": messages or [],
                            "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def _json_response(status: int, payload: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers)


def _paginate(items: list[Any], query: dict[str, str], *, default: int, maximum: int
              ) -> tuple[list[Any], dict[str, int]]:
    """Cloudflare page/per_page pagination (out-of-range values are clamped)."""
    def number(key: str, fallback: int) -> int:
        try:
            return int(float(query[key]))
        except (KeyError, ValueError):
            return fallback

    per_page = min(max(number("per_page", default), 5), maximum)
    page = max(number("page", 1), 1)
    total = len(items)
    chunk = items[(page - 1) * per_page: page * per_page]
    info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": total,
            "total_pages": max(1, -(-total // per_page))}
    return chunk, info


def _text_match(value: str | None, op: str, wanted: str) -> bool:
    """Cloudflare's filter operators; all but *_case_sensitive ignore case."""
    if op in ("present", "absent"):
        return (value is not None and value != "") == (op == "present")
    if value is None:
        return False
    if not op.endswith("_case_sensitive"):
        value, wanted = value.lower(), wanted.lower()
    op = op.removesuffix("_case_sensitive")
    match op:
        case "exact" | "equal":
            return value == wanted
        case "not_equal":
            return value != wanted
        case "contains":
            return wanted in value
        case "startswith" | "starts_with":
            return value.startswith(wanted)
        case "endswith" | "ends_with":
            return value.endswith(wanted)
    raise ApiError(400, 1004, f"Unknown filter operator {op!r}.")  # sandbox code


class CloudflareEmulator:
    """The Cloudflare v4 API on 127.0.0.1 (free port), backed by a `ZoneStore`.

    Thread-safe: tests may change tokens, faults and the propagation delay while
    clients are talking to it.
    """

    def __init__(self, store: ZoneStore | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store if store is not None else ZoneStore()
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self._faults: list[_Fault] = []
        self._requests: list[ApiRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> CloudflareEmulator:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self._host, self._port), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="cloudflare-emulator", daemon=True)
        self._thread.start()
        log.debug("Cloudflare emulator listening on %s", self.base_url)
        return self

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

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def __enter__(self) -> CloudflareEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the Cloudflare emulator is not running: call start() first")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's `base_url` (or CLOUDFLARE_BASE_URL)."""
        host, port = self.address
        return f"http://{host}:{port}{BASE_PATH}"

    # -- test set-up ---------------------------------------------------------
    def add_zone(self, name: str, *, status: str = "active") -> str:
        """Create a zone; returns its id."""
        return self.store.add_zone(name, status=status).id

    def zone_id(self, name: str) -> str:
        zone = self.store.zone_by_name(name)
        if zone is None:
            raise KeyError(f"no sandbox zone named {name}")
        return zone.id

    def add_token(self, token: str, *, zones: Iterable[str] | Literal["all"] = "all",
                  permissions: Iterable[str] = PERMISSIONS) -> str:
        """Accept `token` as a Bearer token limited to `zones` and `permissions`; returns its id."""
        perms = frozenset(p.lower() for p in permissions)
        unknown = perms - PERMISSIONS
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}; known: {sorted(PERMISSIONS)}")
        if not token or any(c.isspace() for c in token):
            raise ValueError("a token must be non-empty and hold no whitespace")
        scope = None if zones == "all" else frozenset(normalize_name(z) for z in zones)
        grant = _Grant(token_id=new_id(), zones=scope, permissions=perms)
        with self._lock:
            self._grants[token] = grant
        return grant.token_id

    def remove_token(self, token: str) -> None:
        """Revoke a token: later requests with it get 401."""
        with self._lock:
            self._grants.pop(token, None)

    def add_record(self, zone: str, type: str, name: str, content: str, *, ttl: int = 1,
                   proxied: bool = False, comment: str | None = None) -> dict[str, Any]:
        """Create a record as if through the API (same validation), without a token. Returns its JSON."""
        sandbox_zone = self.store.zone_by_name(zone)
        if sandbox_zone is None:
            raise KeyError(f"no sandbox zone named {zone}")
        body = {"type": type, "name": name, "content": content, "ttl": ttl, "proxied": proxied,
                "comment": comment}
        with self.store.transaction():
            record = build_record(body, sandbox_zone)
            check_conflicts(record, self.store.records(sandbox_zone.id))
            self.store.put(record)
        return record_json(record)

    def records(self, zone_name: str | None = None) -> list[dict[str, Any]]:
        """Current records (API JSON), optionally of one zone."""
        zone_id = None
        if zone_name is not None:
            zone_id = self.zone_id(zone_name)
        return [record_json(r) for r in self.store.records(zone_id)]

    @property
    def propagation_delay(self) -> float:
        """Seconds between an API change and its visibility on the sandbox DNS server."""
        return self.store.propagation_delay

    @propagation_delay.setter
    def propagation_delay(self, seconds: float) -> None:
        self.store.propagation_delay = seconds

    # -- fault injection -----------------------------------------------------
    def inject_429(self, count: int = 1, *, retry_after: float | None = 1.0, writes_only: bool = False) -> None:
        """Answer the next `count` requests with 429 and `Retry-After: retry_after` (None: no header)."""
        self._add_fault(_Fault(429, count, retry_after, writes_only, after_apply=False))

    def inject_5xx(self, count: int = 1, *, status: int = 500, writes_only: bool = False,
                   after_apply: bool = False, retry_after: float | None = None) -> None:
        """Answer the next `count` requests with `status` (optionally with a Retry-After header).

        With `after_apply=True` the request is carried out first and only the
        answer is lost: the case where a blind retry of a create makes a duplicate.
        """
        if not 500 <= status <= 599:
            raise ValueError("status must be a 5xx code")
        self._add_fault(_Fault(status, count, retry_after, writes_only, after_apply))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, *, after: bool) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies(method, after=after):
                    fault.remaining -= 1
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    return fault
        return None

    # -- request log ---------------------------------------------------------
    @property
    def requests(self) -> list[ApiRequest]:
        """Every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def writes(self) -> list[ApiRequest]:
        """POST/PUT/PATCH/DELETE requests so far (to prove retries made no duplicates)."""
        return [r for r in self.requests if r.is_write]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _log_request(self, entry: ApiRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    # -- request handling ----------------------------------------------------
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> _Response:
        """Answer one HTTP request (called from the server's handler threads)."""
        split = urlsplit(target)
        path, query_text = split.path, split.query
        token_id: str | None = None
        fault = self._take_fault(method, after=False)
        if fault is not None:
            response = self._fault_response(fault)
        else:
            try:
                grant = self._authenticate(headers)
                token_id = grant.token_id
                response = self._route(method, path, query_text, body, grant)
                if 200 <= response.status < 300:
                    late = self._take_fault(method, after=True)
                    if late is not None:
                        response = self._fault_response(late)
            except ApiError as exc:
                response = _json_response(exc.status, _envelope(errors=exc.errors))
        sent_auth = tuple(name for name in _AUTH_HEADERS if headers.get(name) is not None)
        self._log_request(ApiRequest(method, path, query_text, response.status, token_id, time.monotonic(),
                                     sent_auth))
        return response

    @staticmethod
    def _fault_response(fault: _Fault) -> _Response:
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            value = fault.retry_after
            headers = (("Retry-After", str(int(value)) if value == int(value) else f"{value:g}"),)
        if fault.status == 429:
            code, message = _RATE_LIMITED
            return _json_response(429, _envelope(errors=[{"code": code, "message": message}]), headers)
        if fault.status == 500:
            # The API's own failure: a JSON envelope (sandbox code).
            return _json_response(500, _envelope(errors=[{"code": 10002, "message": "Internal server error"}]),
                                  headers)
        # 502/503/504 come from the edge in front of the API: an HTML page, not JSON.
        page = (f"<html><head><title>{fault.status} error</title></head><body><center>"
                f"<h1>{fault.status}</h1></center><hr><center>cloudflare</center></body></html>")
        return _Response(fault.status, page.encode(), content_type="text/html", headers=headers)

    def _authenticate(self, headers: Any) -> _Grant:
        value = headers.get("Authorization")
        if value is None:
            if headers.get("X-Auth-Key") is not None or headers.get("X-Auth-Email") is not None:
                raise ApiError(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")
            code, message = _MISSING_AUTH
            raise ApiError(400, code, message)
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme != "Bearer" or not token or any(c.isspace() for c in token):
            # Seen on the real API for malformed Authorization headers (jeessy2/ddns-go#81).
            raise ApiError(400, 6003, "Invalid request headers",
                           chain=[{"code": 6111, "message": "Invalid format for Authorization header"}])
        with self._lock:
            grant = self._grants.get(token)
        if grant is None:
            code, message = _INVALID_TOKEN
            raise ApiError(401, code, message)
        return grant

    def _route(self, method: str, path: str, query_text: str, body: bytes, grant: _Grant) -> _Response:
        if not path.startswith(BASE_PATH + "/"):
            raise _no_route(path)
        parts = path[len(BASE_PATH) + 1:].rstrip("/").split("/")
        query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
        if parts == ["user", "tokens", "verify"]:
            _allow(method, "GET")
            return self._verify(grant)
        if parts[0] != "zones":
            raise _no_route(path)
        if len(parts) == 1:
            _allow(method, "GET")
            return self._list_zones(grant, query)
        zone = self._zone(parts[1], grant, path)
        if len(parts) == 2:
            _allow(method, "GET")
            if "zone:read" not in grant.permissions:
                raise _denied()
            return _json_response(200, _envelope(zone_json(zone, permissions=_perm_names(grant))))
        if parts[2] != "dns_records" or len(parts) > 4:
            raise _no_route(path)
        if len(parts) == 3:
            _allow(method, "GET", "POST")
            if method == "GET":
                _require(grant, "dns:read")
                return self._list_records(zone, query)
            _require(grant, "dns:edit")
            return self._write_record(zone, None, _json_body(body), "create")
        record_id = parts[3]
        if not _ID.match(record_id):
            raise _no_route(path, invalid_id=True)
        _allow(method, "GET", "PATCH", "PUT", "DELETE")
        _require(grant, "dns:read" if method == "GET" else "dns:edit")
        record = self.store.record(record_id)
        if record is None or record.zone_id != zone.id:
            raise ApiError(404, 81044, "Record does not exist.")
        if method == "GET":
            return _json_response(200, _envelope(record_json(record)))
        if method == "DELETE":
            if self.store.delete(record_id) is None:
                raise ApiError(404, 81044, "Record does not exist.")
            return _json_response(200, _envelope({"id": record_id}))
        return self._write_record(zone, record_id, _json_body(body), "patch" if method == "PATCH" else "put")

    def _zone(self, zone_id: str, grant: _Grant, path: str) -> SandboxZone:
        if not _ID.match(zone_id):
            raise _no_route(path, invalid_id=True)
        zone = self.store.zone(zone_id)
        if zone is None or not grant.covers(zone):
            raise _denied()  # a token cannot tell "no such zone" from "not yours"
        return zone

    def _verify(self, grant: _Grant) -> _Response:
        return _json_response(200, _envelope(
            {"id": grant.token_id, "status": "active"},
            messages=[{"code": 10000, "message": "This API Token is valid and active", "type": None}],
        ))

    def _list_zones(self, grant: _Grant, query: dict[str, str]) -> _Response:
        # Without Zone:Read a token sees no zones at all (the zone lookup then has nothing to find).
        zones = [z for z in self.store.zones() if grant.covers(z)] if "zone:read" in grant.permissions else []
        sets: list[set[str] | None] = []
        if "name" in query:
            op, value = _operator(query["name"])
            sets.append({z.id for z in zones if _text_match(z.name, op, normalize_name(value))})
        if "status" in query:
            sets.append({z.id for z in zones if z.status == query["status"]})
        chosen = [z for z in zones if _combine(z.id, sets, query.get("match", "all"))]
        key = query.get("order", "name")
        if key not in ("name", "status"):
            key = "name"
        chosen.sort(key=lambda z: getattr(z, key), reverse=query.get("direction") == "desc")
        page, info = _paginate(chosen, query, default=20, maximum=50)
        perms = _perm_names(grant)
        return _json_response(200, _envelope([zone_json(z, permissions=perms) for z in page], result_info=info))

    def _list_records(self, zone: SandboxZone, query: dict[str, str]) -> _Response:
        records = self.store.records(zone.id)
        sets: list[set[str] | None] = []
        for field in ("name", "content", "comment"):
            for key, raw in query.items():
                if key == field or key.startswith(field + "."):
                    op = key.partition(".")[2] or "exact"
                    wanted = normalize_name(raw) if field == "name" else raw
                    sets.append({r.id for r in records if _text_match(getattr(r, field), op, wanted)})
        if "type" in query:
            sets.append({r.id for r in records if r.type == query["type"].upper()})
        if "proxied" in query:
            wanted_proxied = query["proxied"].lower() == "true"
            sets.append({r.id for r in records if r.proxied == wanted_proxied})
        if "search" in query:
            term = query["search"].lower()
            sets.append({r.id for r in records if term in r.name or term in r.content.lower()})
        chosen = [r for r in records if _combine(r.id, sets, query.get("match", "all"))]
        key = query.get("order", "type")
        if key not in ("type", "name", "content", "ttl", "proxied"):
            key = "type"
        chosen.sort(key=lambda r: (getattr(r, key), r.name, r.content, r.created_on),
                    reverse=query.get("direction") == "desc")
        page, info = _paginate(chosen, query, default=100, maximum=5_000_000)
        return _json_response(200, _envelope([record_json(r) for r in page], result_info=info))

    def _write_record(self, zone: SandboxZone, record_id: str | None, body: Any, mode: Literal[
            "create", "put", "patch"]) -> _Response:
        with self.store.transaction():
            existing = self.store.record(record_id) if record_id else None
            if record_id and existing is None:
                raise ApiError(404, 81044, "Record does not exist.")
            record = build_record(body, zone, existing=existing, mode=mode)
            check_conflicts(record, self.store.records(zone.id))
            self.store.put(record)
        return _json_response(200, _envelope(record_json(record)))


def _combine(item_id: str, sets: list[set[str] | None], match: str) -> bool:
    active = [s for s in sets if s is not None]
    if not active:
        return True
    hits = [item_id in s for s in active]
    return any(hits) if match == "any" else all(hits)


def _operator(value: str) -> tuple[str, str]:
    """Split Cloudflare's `op:value` zone-name filter (default `equal`)."""
    for op in _ZONE_NAME_OPS:
        if value.startswith(op + ":"):
            return op, value[len(op) + 1:]
    return "equal", value


def _perm_names(grant: _Grant) -> list[str]:
    names = {"zone:read": "#zone:read", "dns:read": "#dns_records:read", "dns:edit": "#dns_records:edit"}
    return sorted(names[p] for p in grant.permissions)


def _require(grant: _Grant, permission: str) -> None:
    # DNS:Edit implies DNS:Read, as on the dashboard.
    if permission == "dns:read" and "dns:edit" in grant.permissions:
        return
    if permission not in grant.permissions:
        raise _denied()


def _denied() -> ApiError:
    code, message = _AUTH_ERROR
    return ApiError(403, code, message)


def _no_route(path: str, *, invalid_id: bool = False) -> ApiError:
    # Seen on the real API: 7003 for a malformed identifier plus 7000 (cloudflare-go#118).
    no_route = {"code": 7000, "message": "No route for that URI"}
    if invalid_id:
        return ApiError(400, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?",
                        extra=[no_route])
    return ApiError(400, 7000, "No route for that URI")


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        # Seen on the real API (fire1ce/DDNS-Cloudflare-Bash#16).
        raise ApiError(405, 10000, f"{method} method not allowed for the api_token authentication scheme")


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, 6007, "Malformed JSON in request body") from None


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 plumbing; all decisions are in `CloudflareEmulator.handle`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "cloudflare"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track(self.connection, open_=True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.emulator._track(self.connection, open_=False)  # type: ignore[attr-defined]
        super().finish()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        emulator: CloudflareEmulator = self.server.emulator  # type: ignore[attr-defined]
        response = emulator.handle(self.command, self.path, self.headers, body)
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
