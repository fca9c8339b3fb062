"""/metrics against a running daemon (Pebble, Cloudflare emulator, real OCPP chargers), checked
against the store: a renewal moves the expiration gauge, a failing renewal flips ready to False."""

from __future__ import annotations

import asyncio
import datetime as dt

from tests.http.conftest import (
    LISTENER, MovableClock, base_url, connected_chargers, get, register_chargers, run, running_daemon,
    samples, value,
)

CHARGERS = ["CP-HTTP-1", "CP-HTTP-2", "CP-HTTP-3"]


async def _check_now(daemon, clock, name: str = "web"):  # type: ignore[no-untyped-def]
    done = daemon.checks_done
    daemon.schedule(name, clock())
    assert await daemon.wait_for(lambda: daemon.checks_done > done, 60), "the check did not finish"
    return daemon.results[name]


async def _scrape(daemon) -> dict:  # type: ignore[no-untyped-def]
    status, text, headers = await get(base_url(daemon) + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(text)


def test_metrics_follow_the_store_through_renewal_and_failure(http_setup) -> None:  # type: ignore[no-untyped-def]
    setup, tls = http_setup(cloudflare_retries=0)
    register_chargers(setup, CHARGERS)
    clock = MovableClock()

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            first = setup.current("web")
            assert first is not None
            await daemon.ocpp.reload("web")  # the listener opens once the first issuance exists
            async with connected_chargers(daemon, CHARGERS, tls):
                m = await _scrape(daemon)
                assert value(m, "certd_certificate_expiration_timestamp_seconds", name="web",
                             issuer=first.issuer) == first.not_after.timestamp()
                assert value(m, "certd_certificate_not_before_timestamp_seconds", name="web") == \
                    first.not_before.timestamp()
                assert value(m, "certd_certificate_ready_status", name="web", condition="True") == 1
                assert value(m, "certd_certificate_ready_status", name="web", condition="False") == 0
                assert value(m, "certd_certificate_renewal_failures", name="web") == 0
                assert value(m, "certd_certificate_last_attempt_outcome", name="web", outcome="success") == 1
                renew_at = setup.managed("web").renew_at
                assert value(m, "certd_certificate_renewal_timestamp_seconds", name="web") == renew_at.timestamp()
                # What the listener serves is what was issued.
                assert value(m, "certd_served_matches_issued", listener=LISTENER) == 1
                served = value(m, "certd_served_certificate_expiration_timestamp_seconds", listener=LISTENER,
                               key_type="rsa")
                assert served == first.not_after.timestamp()
                assert value(m, "certd_ocpp_connected_chargers", listener=LISTENER, version="ocpp1.6") == 3
                assert value(m, "certd_ocpp_registered_chargers") == 3
                assert value(m, "certd_ocpp_handshakes_total", listener=LISTENER, result="admitted") >= 3
                assert value(m, "certd_ocpp_logins_total", result="accepted") >= 3
                # ACME requests by action (never by URL), Cloudflare by outcome, the process collector.
                assert value(m, "certd_acme_client_request_count_total", action="new_order", status="201") >= 1
                assert value(m, "certd_acme_client_request_count_total", action="finalize", status="200") >= 1
                assert value(m, "certd_acme_client_request_duration_seconds_count", action="new_order") >= 1
                assert value(m, "certd_cloudflare_api_requests_total", outcome="ok") >= 2
                assert value(m, "process_resident_memory_bytes") > 0
                labels = {v for entries in m.values() for labels_, _ in entries for v in labels_.values()}
                assert not labels & set(CHARGERS), "a label carries a charger id"
                assert not any("/" in v and "acme" in v for v in labels), "an ACME URL became a label"

            # The chargers left: the connected gauge follows (kept by the service's charger hooks).
            for _ in range(100):
                m = await _scrape(daemon)
                if value(m, "certd_ocpp_connected_chargers", listener=LISTENER, version="ocpp1.6") is None:
                    break
                await asyncio.sleep(0.1)
            assert value(m, "certd_ocpp_connected_chargers", listener=LISTENER, version="ocpp1.6") is None

            # Renewal: the gauge moves to the new certificate, as the store says. (Pebble dates it by
            # its own clock, to the second: let a second pass so the new expiry differs.)
            await asyncio.sleep(1.1)
            clock.advance(renew_at - clock() + dt.timedelta(minutes=1))
            assert (await _check_now(daemon, clock)).action == "renewed"
            second = setup.current("web")
            assert second.id != first.id and second.not_after > first.not_after
            m = await _scrape(daemon)
            assert value(m, "certd_certificate_expiration_timestamp_seconds", name="web") == \
                second.not_after.timestamp()
            assert value(m, "certd_certificate_ready_status", name="web", condition="True") == 1

            # A failing renewal (Cloudflare refuses writes): ready flips to False, failures count.
            setup.world.emulator.inject_5xx(10_000, status=500, writes_only=True)
            clock.advance(setup.managed("web").renew_at - clock() + dt.timedelta(minutes=1))
            assert (await _check_now(daemon, clock)).action == "failed"
            m = await _scrape(daemon)
            assert value(m, "certd_certificate_ready_status", name="web", condition="True") == 0
            assert value(m, "certd_certificate_ready_status", name="web", condition="False") == 1
            assert value(m, "certd_certificate_renewal_failures", name="web") == setup.managed("web").failure_count == 1
            assert value(m, "certd_certificate_last_attempt_outcome", name="web", outcome="failure") == 1
            assert value(m, "certd_certificate_last_attempt_outcome", name="web", outcome="success") is None
            attempt = setup.attempts("web")[-1]
            assert value(m, "certd_certificate_last_attempt_timestamp_seconds", name="web") == \
                attempt.started_at.timestamp()
            assert value(m, "certd_cloudflare_api_requests_total", outcome="server_error") >= 1
            # Still valid and outside the last tenth: not ready for renewal, but the service is ready.
            status, _, _ = await get(base_url(daemon) + "/readyz")
            assert status == 200
            # Into the last tenth with renewals failing: /readyz says so.
            lifetime = second.not_after - second.not_before
            clock.advance(second.not_after - lifetime / 20 - clock())
            assert (await _check_now(daemon, clock)).action == "failed"
            status, text, _ = await get(base_url(daemon) + "/readyz")
            assert status == 503 and "last tenth of life with failing renewals: web" in text
            m = await _scrape(daemon)
            assert value(m, "certd_certificate_expiring_and_failing", name="web") == 1
            setup.world.emulator.clear_faults()

    run(scenario())
