"""An ARI-speaking ACME front for Pebble 2.4 (which has no RFC 9773 support).

A real HTTPS server on 127.0.0.1 that passes every request through to Pebble
unchanged (Host header included: Pebble builds its URLs and checks the JWS `url`
from it, so every URL it hands out points back at this proxy) and adds:

- `renewalInfo` in the directory, answered here with windows the test controls
  (`windows[cert_id] = (start, end)`) and a configurable Retry-After;
- a look at each newOrder's JWS payload, recorded in `orders` (with `replaces`);
- on request, the refusals real CAs send: `reject_replaces = 409` answers an order
  carrying `replaces` with 409 alreadyReplaced, `403` with an unauthorized problem
  naming the replacement (Boulder words it so), `rate_limit_orders = N` answers the
  next N orders with 429 rateLimited.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RENEWAL_INFO_PATH = "/renewal-info"
NEW_ORDER_PATH = "/order-plz"  # Pebble's newOrder path


def _write_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a 127.0.0.1 leaf for the proxy's listener: (ca, cert, key)."""
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certd test ARI proxy CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ari-proxy-ca.pem", directory / "ari-proxy-cert.pem", directory / "ari-proxy-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return paths


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SeenOrder:
    replaces: str | None
    identifiers: list[str]
    answered: int  # HTTP status the client got


@dataclass
class AriProxy:
    pebble_directory_url: str
    pebble_ca: Path
    workdir: Path
    windows: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)
    default_window: tuple[dt.timedelta, dt.timedelta] = (dt.timedelta(days=30), dt.timedelta(days=31))
    retry_after: str | None = "21600"
    reject_replaces: int | None = None
    rate_limit_orders: int = 0
    rate_limit_retry_after: str | None = "7200"
    orders: list[SeenOrder] = field(default_factory=list)
    ari_requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca_path, cert, key = _write_tls(self.workdir)
        parsed = urllib.parse.urlsplit(self.pebble_directory_url)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 443)
        self._directory_path = parsed.path
        self._upstream_ctx = ssl.create_default_context(cafile=str(self.pebble_ca))
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="ari-proxy")
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def directory_url(self) -> str:
        return self.base_url + self._directory_path

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_window(self, cert_id: str, start: dt.datetime, end: dt.datetime) -> None:
        with self._lock:
            self.windows[cert_id] = (start, end)

    # -- called from the handler ------------------------------------------------------------
    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPSConnection(*self._upstream, context=self._upstream_ctx, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, response.getheaders(), data
        finally:
            conn.close()

    def fresh_nonce(self, host: str) -> str:
        status, headers, _ = self.forward("HEAD", "/nonce-plz", {"Host": host}, b"")
        return dict(headers)["Replay-Nonce"]

    def renewal_info(self, cert_id: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.ari_requests.append(cert_id)
            window = self.windows.get(cert_id)
        if window is None:
            now = dt.datetime.now(dt.timezone.utc)
            window = (now + self.default_window[0], now + self.default_window[1])
        body = {"suggestedWindow": {"start": window[0].isoformat().replace("+00:00", "Z"),
                                    "end": window[1].isoformat().replace("+00:00", "Z")}}
        headers = {"Content-Type": "application/json"}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return 200, headers, json.dumps(body).encode()

    def inspect_order(self, body: bytes) -> tuple[str | None, list[str]]:
        jws = json.loads(body)
        payload = json.loads(_b64decode(jws["payload"]))
        return payload.get("replaces"), [i["value"] for i in payload.get("identifiers", [])]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, headers: list[tuple[str, str]] | dict[str, str], body: bytes) -> None:
        self.send_response(status)
        items = headers.items() if isinstance(headers, dict) else headers
        for key, value in items:
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _problem(self, status: int, typ: str, detail: str, extra: dict[str, str] | None = None) -> None:
        proxy: AriProxy = self.server.proxy  # type: ignore[attr-defined]
        headers = {"Content-Type": "application/problem+json",
                   "Replay-Nonce": proxy.fresh_nonce(self.headers["Host"]), **(extra or {})}
        body = json.dumps({"type": f"urn:ietf:params:acme:error:{typ}", "detail": detail, "status": status})
        self._send(status, headers, body.encode())

    def _handle(self) -> None:
        proxy: AriProxy = self.server.proxy  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(self.path).path
        if self.command == "GET" and path.startswith(RENEWAL_INFO_PATH + "/"):
            self._send(*proxy.renewal_info(path.removeprefix(RENEWAL_INFO_PATH + "/")))
            return
        if self.command == "POST" and path == NEW_ORDER_PATH:
            replaces, identifiers = proxy.inspect_order(body)
            with proxy._lock:
                limited = proxy.rate_limit_orders > 0
                if limited:
                    proxy.rate_limit_orders -= 1
            if limited:
                proxy.orders.append(SeenOrder(replaces, identifiers, 429))
                extra = {"Retry-After": proxy.rate_limit_retry_after} if proxy.rate_limit_retry_after else {}
                self._problem(429, "rateLimited", "too many certificates for this exact set of identifiers",
                              extra)
                return
            if replaces and proxy.reject_replaces == 409:
                proxy.orders.append(SeenOrder(replaces, identifiers, 409))
                self._problem(409, "alreadyReplaced", f"certificate {replaces} has already been replaced")
                return
            if replaces and proxy.reject_replaces == 403:
                proxy.orders.append(SeenOrder(replaces, identifiers, 403))
                self._problem(403, "unauthorized", "the certificate named in replaces was not issued to this "
                                                   "account")
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "accept-encoding")}
        status, response_headers, data = proxy.forward(self.command, self.path, headers, body)
        if self.command == "GET" and path == proxy._directory_path and status == 200:
            directory = json.loads(data)
            directory["renewalInfo"] = proxy.base_url + RENEWAL_INFO_PATH
            data = json.dumps(directory).encode()
        if self.command == "POST" and path == NEW_ORDER_PATH:
            proxy.orders.append(SeenOrder(replaces, identifiers, status))
        self._send(status, response_headers, data)

    do_GET = do_POST = do_HEAD = _handle
