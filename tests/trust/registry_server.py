"""A real HTTP fleet registry for tests: checks the HMAC, dedupes by idempotency key, injects faults.

It stores every accepted document once per idempotency key. A repeated key
gets 200 with {"duplicate": true} and is not stored again, so "exactly one
accepted delivery per version" is `len(server.accepted)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    key: str | None
    status: int
    signature_ok: bool
    auth: str | None


@dataclass
class RegistryState:
    secret: bytes
    auth: str | None = None
    accepted: dict[str, dict] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    fail_statuses: list[int] = field(default_factory=list)  # answered, in order, before any success
    reject_body: str = '{"error": "unknown bundle"}'
    hold: threading.Event | None = None  # when set: store, then wait for `release` before answering
    release: threading.Event = field(default_factory=threading.Event)
    received: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: "RegistryServer"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _answer(self, status: int, payload: dict | str, seen: Seen) -> None:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        data = body.encode()
        seen.status = status
        with self.server.state.lock:
            self.server.state.seen.append(seen)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a killed certd): the registry still has the document

    def do_POST(self) -> None:  # noqa: N802
        state = self.server.state
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        key = self.headers.get("Idempotency-Key")
        expected = "sha256=" + hmac.new(state.secret, body, hashlib.sha256).hexdigest()
        signature_ok = hmac.compare_digest(expected, self.headers.get("X-Certd-Signature", ""))
        seen = Seen(key, 0, signature_ok, self.headers.get("Authorization"))
        if not signature_ok:
            return self._answer(401, {"error": "bad signature"}, seen)
        if state.auth is not None and self.headers.get("Authorization") != state.auth:
            return self._answer(403, {"error": "bad token"}, seen)
        with state.lock:
            if state.fail_statuses:
                status = state.fail_statuses.pop(0)
                fail = True
            else:
                fail = False
        if fail:
            return self._answer(status, state.reject_body if status < 500 else {"error": "injected"}, seen)
        document = json.loads(body)
        if document.get("idempotency_key") != key:
            return self._answer(400, {"error": "key mismatch"}, seen)
        with state.lock:
            duplicate = key in state.accepted
            if not duplicate:
                state.accepted[key] = document
        state.received.set()
        if state.hold is not None and state.hold.is_set():
            state.release.wait(30)
        self._answer(200, {"accepted": key, "duplicate": duplicate}, seen)


class RegistryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, secret: str, auth: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = RegistryState(secret.encode(), auth)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/bundles"

    def __enter__(self) -> "RegistryServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.shutdown()
        self.server_close()
