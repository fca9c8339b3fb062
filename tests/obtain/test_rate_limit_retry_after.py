"""The CA's Retry-After reaches certd's RateLimited: at account registration, and as UTC whatever TZ."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from certd.issue.account import acme_client_for
from certd.issue.order import RateLimited
from certd.config import parse_config
from certd.store.db import make_engine, upgrade

RATE_LIMITED = {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many new accounts"}


class _RateLimitingCA(BaseHTTPRequestHandler):
    """A directory, nonces, and 429 rateLimited with `Retry-After: 3600` on every POST."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", ctype: str = "application/json",
              extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Replay-Nonce", "bm9uY2Vub25jZQ")
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(200)

    def do_GET(self) -> None:  # noqa: N802
        base = f"http://127.0.0.1:{self.server.server_port}"
        self._send(200, json.dumps({"newNonce": base + "/nonce", "newAccount": base + "/acct",
                                    "newOrder": base + "/order"}).encode())

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(429, json.dumps(RATE_LIMITED).encode(), "application/problem+json",
                   (("Retry-After", "3600"),))


@pytest.fixture
def rate_limiting_ca() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimitingCA)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/dir"
    finally:
        server.shutdown()
        server.server_close()


def test_rate_limited_new_account_is_certd_rate_limited_with_retry_after(
        rate_limiting_ca: str, tmp_path: Path) -> None:
    config = parse_config(f'state_dir = "{tmp_path}"\n[acme]\ndirectory = "{rate_limiting_ca}"\n')
    upgrade(config.db_url)
    engine = make_engine(config.db_url)
    try:
        before = dt.datetime.now(dt.timezone.utc)
        with pytest.raises(RateLimited) as info:
            acme_client_for(config, engine)
        after = dt.datetime.now(dt.timezone.utc)
    finally:
        engine.dispose()
    assert info.value.retry_after is not None
    assert before + dt.timedelta(seconds=3600) <= info.value.retry_after <= after + dt.timedelta(seconds=3600)
    assert "rate-limited account registration" in str(info.value)
    assert "too many new accounts" in str(info.value)


_CHECK_HTTP_DATE = r"""
import datetime as dt, requests
from certd.issue.order import RateLimitedResponse, RetryAfterAwareNetwork
when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
response = requests.Response()
response.status_code = 429
response.headers["Content-Type"] = "application/problem+json"
response.headers["Retry-After"] = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
response._content = b'{"type":"urn:ietf:params:acme:error:rateLimited","detail":"x"}'
try:
    RetryAfterAwareNetwork._check_response(response)
except RateLimitedResponse as exc:
    print(exc.retry_after.isoformat())
"""


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/Los_Angeles", "UTC"])
def test_http_date_retry_after_is_utc_whatever_the_local_time_zone(tz: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TZ": tz, "PYTHONPATH": str(repo)}
    result = subprocess.run([sys.executable, "-c", _CHECK_HTTP_DATE], env=env, capture_output=True,
                            text=True, timeout=60, check=True, cwd=repo)
    # A fixed date far from any DST change in the zones above, so the offset is never 0 there.
    assert result.stdout.strip() == "2030-01-02T03:04:05+00:00"
