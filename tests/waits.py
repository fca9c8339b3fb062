"""Waiting in tests without fixed sleeps, and asking a TLS port what it serves.

Tests wait for something another thread, task or process does: a listener that
swaps its certificate, a port that opens, a record that appears. They poll the
condition with short growing intervals (fast when it is quick, light when it is
slow) and fail naming what they waited for.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Iterator

from cryptography import x509

FIRST_INTERVAL = 0.01
LONGEST_INTERVAL = 0.25


def _pauses(limit: float) -> Iterator[float]:
    """Pauses between looks (10 ms, doubling up to 250 ms) for `limit` seconds, then a last look."""
    deadline = time.monotonic() + limit
    pause = FIRST_INTERVAL
    while time.monotonic() < deadline:
        yield pause
        pause = min(pause * 2, LONGEST_INTERVAL)
    yield 0.0


def _timed_out(what: str, limit: float) -> AssertionError:
    return AssertionError(f"timed out after {limit:g}s waiting for {what}")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Block until `predicate()` is true; AssertionError after `timeout` seconds."""
    for pause in _pauses(timeout):
        if predicate():
            return
        time.sleep(pause)
    raise _timed_out(what, timeout)


async def until(predicate: Callable[[], object], what: str, limit: float = 30.0) -> None:
    """`wait_until` for a coroutine: the loop keeps running while it waits."""
    for pause in _pauses(limit):
        if predicate():
            return
        await asyncio.sleep(pause)
    raise _timed_out(what, limit)


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on `port` (a TCP connect, no TLS)."""
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate:
    """The leaf the server presented in this handshake."""
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None, "the server presented no certificate"
    return x509.load_der_x509_certificate(der)


def served_certificate(port: int, server_hostname: str, *, cadata: str | None = None,
                       host: str = "127.0.0.1", timeout: float = 10) -> x509.Certificate:
    """One TLS handshake with `host:port`: the leaf served for `server_hostname` (SNI).

    Verified against `cadata` when given; without it any certificate is accepted, for
    tests that only compare which one is served.
    """
    context = ssl.create_default_context(cadata=cadata)
    if cadata is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return peer_certificate(tls)
