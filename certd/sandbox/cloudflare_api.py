"""A Cloudflare v4 API emulator on loopback, good enough that the official SDK cannot tell.

Covers what certd uses: zones (list with filters and pagination, get), DNS
records (list with filters, create, get, PATCH, PUT, delete) and token
verification, with Cloudflare's envelope, status codes and error codes.
Tokens are scoped to zones and permissions like real API tokens, and tests can
inject 429s and 5xx answers to exercise retries. Records land in a `ZoneStore`
that the sandbox DNS server answers from.

This module is the emulator tests hold: set-up, fault injection, the request log.
The HTTP side is `cf_http`, tokens `cf_auth`, the endpoints `cf_endpoints`.
Tokens never reach the request log or any log line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import urlsplit

from certd.sandbox.cf_auth import PERMISSIONS, Tokens
from certd.sandbox.cf_endpoints import route
from certd.sandbox.cf_http import (
    AUTH_HEADERS, BASE_PATH, ApiRequest, Fault, HttpServer, Response, error_response, fault_response, log,
)
from certd.sandbox.cf_records import ApiError, build_record, check_conflicts, record_json
from certd.sandbox.zones import ZoneStore

__all__ = ["CloudflareEmulator", "ApiRequest", "PERMISSIONS", "BASE_PATH"]


class CloudflareEmulator:
    """The Cloudflare v4 API on 127.0.0.1 (free port), backed by a `ZoneStore`.

    Thread-safe: tests may change tokens, faults and the propagation delay while
    clients are talking to it.
    """

    def __init__(self, store: ZoneStore | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store if store is not None else ZoneStore()
        self._lock = threading.Lock()
        self._tokens = Tokens()
        self._faults: list[Fault] = []
        self._requests: list[ApiRequest] = []
        self._http = HttpServer(self.handle, host, port)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> CloudflareEmulator:
        if self._http.running:
            return self
        self._http.start()
        log.debug("Cloudflare emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> CloudflareEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self._http.address

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
        return self._tokens.add(token, zones=zones, permissions=permissions)

    def remove_token(self, token: str) -> None:
        """Revoke a token: later requests with it get 401."""
        self._tokens.remove(token)

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
        self._add_fault(Fault(429, count, retry_after, writes_only, after_apply=False))

    def inject_5xx(self, count: int = 1, *, status: int = 500, writes_only: bool = False,
                   after_apply: bool = False, retry_after: float | None = None) -> None:
        """Answer the next `count` requests with `status` (optionally with a Retry-After header).

        With `after_apply=True` the request is carried out first and only the
        answer is lost: the case where a blind retry of a create makes a duplicate.
        """
        if not 500 <= status <= 599:
            raise ValueError("status must be a 5xx code")
        self._add_fault(Fault(status, count, retry_after, writes_only, after_apply))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, *, after: bool) -> Fault | None:
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
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Response:
        """Answer one HTTP request (called from the server's handler threads)."""
        split = urlsplit(target)
        path, query_text = split.path, split.query
        token_id: str | None = None
        fault = self._take_fault(method, after=False)
        if fault is not None:
            response = fault_response(fault)
        else:
            try:
                grant = self._tokens.authenticate(headers)
                token_id = grant.token_id
                response = route(self.store, method, path, query_text, body, grant)
                if 200 <= response.status < 300:
                    late = self._take_fault(method, after=True)
                    if late is not None:
                        response = fault_response(late)
            except ApiError as exc:
                response = error_response(exc)
        sent_auth = tuple(name for name in AUTH_HEADERS if headers.get(name) is not None)
        self._log_request(ApiRequest(method, path, query_text, response.status, token_id, time.monotonic(),
                                     sent_auth))
        return response
