"""HTTPS with one of certd's own certificates, swapped live when it is renewed."""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from tests.http.conftest import HOST, base_url, run, running_daemon


async def _served_serial(url: str, context: ssl.SSLContext) -> tuple[str, bytes]:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context, server_hostname=HOST)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(f"GET /livez HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
    finally:
        writer.close()
    return f"{x509.load_der_x509_certificate(der).serial_number:x}", answer


def test_https_serves_the_current_issuance_and_follows_renewals(http_setup) -> None:  # type: ignore[no-untyped-def]
    setup, tls = http_setup(http='listen = ["127.0.0.1:0"]\n[http.tls]\ncertificate = "web"')

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            assert await daemon.reload()  # SIGHUP: the HTTPS side picks up the first issuance
            url = base_url(daemon)
            assert url.startswith("https://")
            serial, answer = await _served_serial(url, tls)
            assert serial == setup.current("web").serial
            assert answer.startswith(b"HTTP/1.1 200") and b'"service": "certd"' in answer

            result = await asyncio.to_thread(setup.cli, "renew", "web", "--force")
            assert result.returncode == 0, result.stderr
            assert await daemon.reload()
            assert base_url(daemon) == url  # same socket: swapped, not rebound
            serial, _ = await _served_serial(url, tls)
            assert serial == setup.current("web").serial

    run(scenario())
