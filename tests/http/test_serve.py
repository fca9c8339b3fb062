"""`certd serve` (the OCPP endpoint alone) runs the same HTTP server in its loop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from certd.store.db import make_engine, upgrade
from tests.http.conftest import samples, value
from tests.ocpp.conftest import HOST
from tests.pki import MiniCA, store_current


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_certd_serve_answers_metrics_and_probes(tmp_path: Path) -> None:
    ca = MiniCA("serve-http")
    (tmp_path / "root.pem").write_text(ca.root_pem)
    http_port = _free_port()
    config = tmp_path / "certd.toml"
    config.write_text(f'''
state_dir = "{tmp_path / 'state'}"

[[certificates]]
name = "ocpp-rsa"
domains = ["{HOST}"]

[ocpp]
trust_roots = ["{tmp_path / 'root.pem'}"]
reload_check_interval = 0

[[ocpp.listeners]]
name = "main"
host = "{HOST}"
bind = "127.0.0.1"
port = 0
certificates = ["ocpp-rsa"]

[http]
listen = ["127.0.0.1:{http_port}"]
''')
    url = f"sqlite:///{tmp_path / 'state' / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    leaf = ca.issue([HOST], "rsa")
    store_current(engine, "ocpp-rsa", leaf)
    engine.dispose()
    process = subprocess.Popen([sys.executable, "-m", "certd", "--config", str(config), "serve"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert "listener main: started" in process.stdout.readline()
        deadline = time.monotonic() + 20
        status, body = 0, ""
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{http_port}/readyz")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200, body
        checks = {c["name"]: c for c in json.loads(body)["checks"]}
        assert checks["listeners"]["detail"] == "1 OCPP listener(s) bound and serving"
        status, body = _get(f"http://127.0.0.1:{http_port}/livez")
        assert status == 200 and "no renewal scheduler in this command" in body
        status, text = _get(f"http://127.0.0.1:{http_port}/metrics")
        parsed = samples(text)
        assert value(parsed, "certd_ocpp_listener_up", listener="main") == 1
        assert value(parsed, "certd_served_matches_issued", listener="main") == 1
        assert value(parsed, "certd_served_certificate_expiration_timestamp_seconds", listener="main",
                     key_type="rsa") == leaf.cert.not_valid_after_utc.timestamp()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
