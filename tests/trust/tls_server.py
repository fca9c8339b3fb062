"""A plain TLS server on loopback serving a given certificate chain (for doctor tests)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class TlsServer:
    """Accepts connections, completes the handshake, closes. One thread, stops on exit."""

    def __init__(self, tmp: Path, fullchain_pem: str, key_pem: str, *, name: str = "srv") -> None:
        chain = tmp / f"{name}-fullchain.pem"
        key = tmp / f"{name}-key.pem"
        chain.write_text(fullchain_pem)
        key.write_text(key_pem)
        key.chmod(0o600)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(chain, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    try:
                        tls.recv(1)  # wait for the client to close
                    except (OSError, ssl.SSLError):
                        pass
            except (OSError, ssl.SSLError):
                conn.close()  # failed handshakes are part of the tests

    def __enter__(self) -> "TlsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)
