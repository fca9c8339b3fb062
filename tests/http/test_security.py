"""The HTTP surface's security rules: loopback by default, credentials off loopback, bad config
named at check-config and at start, 401 without a token, read-only, and no secret in any answer."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys

from argon2 import PasswordHasher
from sqlmodel import select

from certd.store.chargers import Charger
from certd.store.db import session_scope
from certd.store.models import AcmeAccount, IssuedCertificate
from tests.http.conftest import (
    CHARGER_PASSWORD, base_url, connected_chargers, get, register_chargers, run, running_daemon, with_http,
)

TOKEN = "http-bearer-token-for-the-tests-0123456789"
USER_PASSWORD = "operator-password-for-the-tests"
REGISTRY_AUTH = "Bearer registry-auth-value-for-the-tests"
REGISTRY_HMAC = "registry-hmac-secret-for-the-tests"


def _owner_only(path, text: str, mode: int = 0o600):  # type: ignore[no-untyped-def]
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_check_config_names_the_http_key_that_is_wrong(http_setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    setup, _ = http_setup()
    # A non-loopback address without credentials.
    with_http(setup, 'listen = ["127.0.0.1:0", "0.0.0.0:9402"]', parse=False)
    result = setup.cli("check-config")
    assert result.returncode == 2
    assert "http: listen 0.0.0.0:9402 is not a loopback address: set [http.auth]" in result.stderr

    # A token file group or others can read.
    token_file = _owner_only(tmp_path / "http-token", TOKEN, 0o644)
    with_http(setup, f'listen = ["0.0.0.0:0"]\n[http.auth]\ntoken_file = "{token_file}"')
    result = setup.cli("check-config")
    assert result.returncode == 2 and "http.auth.token_file" in result.stderr
    assert "readable by group or others" in result.stderr and TOKEN not in result.stderr + result.stdout
    os.chmod(token_file, 0o600)
    result = setup.cli("check-config")
    assert result.returncode == 0, result.stderr
    assert "HTTP server: 0.0.0.0:0, auth: bearer token" in result.stdout

    # An address another program holds: named at check-config, and `certd run` does not start.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with_http(setup, f'listen = ["127.0.0.1:{port}"]')
        result = setup.cli("check-config")
        assert result.returncode == 2
        assert f"http.listen[0]: 127.0.0.1:{port} is in use by another program" in result.stderr
        proc = subprocess.run([sys.executable, "-m", "certd", "--config", str(setup.config_path), "run"],
                              env=setup.env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert f"http.listen[0]: cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_check_config_accepts_the_address_of_the_running_certd(http_setup) -> None:  # type: ignore[no-untyped-def]
    setup, _ = http_setup()

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            host, port = daemon._http.addresses[0]
            with_http(setup, f'listen = ["{host}:{port}"]')
            result = await asyncio.to_thread(setup.cli, "check-config")
            assert result.returncode == 0, result.stderr

    run(scenario())


def test_credentials_are_required_when_configured(http_setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token_file = _owner_only(tmp_path / "http-token", TOKEN + "\n")
    users = _owner_only(tmp_path / "http-users", f"# operators\nops:{PasswordHasher().hash(USER_PASSWORD)}\n")
    setup, _ = http_setup(http=f'listen = ["127.0.0.1:0"]\n[http.auth]\ntoken_file = "{token_file}"\n'
                               f'users_file = "{users}"')

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            url = base_url(daemon)
            basic = "Basic " + base64.b64encode(f"ops:{USER_PASSWORD}".encode()).decode()
            wrong = "Basic " + base64.b64encode(b"ops:not-the-password").decode()
            for path in ("/", "/metrics", "/api/v1/status", "/api/v1/chargers"):
                status, body, headers = await get(url + path)
                assert status == 401 and body == "Unauthorized\n" and "Bearer" in headers["WWW-Authenticate"]
                assert (await get(url + path, {"Authorization": "Bearer wrong-token"}))[0] == 401
                assert (await get(url + path, {"Authorization": wrong}))[0] == 401
                assert (await get(url + path, {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
                assert (await get(url + path, {"Authorization": basic}))[0] == 200
            for probe in ("/livez", "/readyz"):  # open_probes defaults to true
                assert (await get(url + probe))[0] in (200, 503)
                assert '"service": "certd"' in (await get(url + probe))[1]
            import aiohttp

            async with aiohttp.ClientSession() as client:
                async with client.post(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"

            # Probes closed too, by a reload.
            with_http(setup, f'listen = ["127.0.0.1:0"]\n[http.auth]\ntoken_file = "{token_file}"\n'
                             "open_probes = false")
            assert await daemon.reload()
            url = base_url(daemon)
            assert (await get(url + "/livez"))[0] == 401
            assert (await get(url + "/livez", {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
            assert (await get(url + "/", {"Authorization": basic}))[0] == 401  # users file gone

    run(scenario())


def test_no_answer_carries_a_secret(http_setup, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CERTD_TEST_HTTP_TOKEN", TOKEN)
    monkeypatch.setenv("CERTD_TEST_REGISTRY_AUTH", REGISTRY_AUTH)
    monkeypatch.setenv("CERTD_TEST_REGISTRY_HMAC", REGISTRY_HMAC)
    users = _owner_only(tmp_path / "http-users", f"ops:{PasswordHasher().hash(USER_PASSWORD)}\n")
    anchors = tmp_path / "pebble-roots.pem"  # written by http_setup before the daemon starts
    trust = f"""
[trust.anchor_sets]
pebble = "{anchors}"

[[trust.bundles]]
name = "fleet"
anchors = "pebble"

[[trust.registries]]
name = "fleet-registry"
url = "http://127.0.0.1:9/bundles"
auth_env = "CERTD_TEST_REGISTRY_AUTH"
hmac_secret_env = "CERTD_TEST_REGISTRY_HMAC"
"""
    setup, tls = http_setup(extra=trust, http='listen = ["127.0.0.1:0"]\n[http.auth]\n'
                                              f'token_env = "CERTD_TEST_HTTP_TOKEN"\nusers_file = "{users}"')
    chargers = ["CP-SECRET-1", "CP-SECRET-2"]
    register_chargers(setup, chargers + ["CP-SECRET-3"])
    with session_scope(setup.engine) as session:  # data that happens to hold a secret: struck out too
        session.get(Charger, "CP-SECRET-3").model = f"model {REGISTRY_HMAC}"

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            await daemon.ocpp.reload("web")
            url, auth = base_url(daemon), {"Authorization": f"Bearer {TOKEN}"}
            async with connected_chargers(daemon, chargers, tls):
                answers = []
                for path in ("/", "/?q=CP-SECRET&page=1", "/?page=2", "/metrics", "/api/v1/status",
                             "/api/v1/chargers", "/api/v1/chargers?q=SECRET", "/livez", "/readyz"):
                    status, body, headers = await get(url + path, auth)
                    assert status in (200, 503), (path, status)
                    answers.append(body + repr(headers))
                answers.append((await get(url + "/metrics"))[1])  # the 401 too
        text = "\n".join(answers)
        assert "CP-SECRET-1" in text  # the scan looks at real pages
        assert "model [redacted]" in text  # the last line of defence worked
        with session_scope(setup.engine) as session:
            keys = [c.key_pem for c in session.exec(select(IssuedCertificate)).all()]
            keys += [a.key_pem for a in session.exec(select(AcmeAccount)).all()]
            hashes = [c.password_hash for c in session.exec(select(Charger)).all() if c.password_hash]
        secrets = [TOKEN, USER_PASSWORD, users.read_text().split(":", 1)[1].strip(), CHARGER_PASSWORD,
                   REGISTRY_AUTH, REGISTRY_HMAC, setup.world.token, *hashes]
        # Each private key by every one of its base64 lines (a partial leak counts too).
        secrets += [line for pem in keys for line in pem.splitlines() if line and not line.startswith("-----")]
        assert len(keys) >= 2 and len(hashes) == 3
        leaked = [s[:12] + "..." for s in secrets if s in text]
        assert not leaked, f"secret values in HTTP answers: {leaked}"
        assert "PRIVATE KEY" not in text

    run(scenario())
