"""ARI (RFC 9773) end to end: the daemon follows the CA's window, sends `replaces`, and orders
again without it when the CA refuses. Pebble 2.4 has no ARI, so a proxy adds it (ari_proxy.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from certd.issue.ari import cert_id
from tests.daemon.conftest import MovableClock, cert_toml, run, running_daemon

HOUR = dt.timedelta(hours=1)


def test_cert_id_matches_rfc_9773_example_and_acme_library(make_setup) -> None:
    # RFC 9773 section 4.1 example: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
    # serial 0x0087654321.
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example")])
    now = dt.datetime.now(dt.timezone.utc)
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x87654321).not_valid_before(now).not_valid_after(now + HOUR)
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization

    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert cert_id(pem) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert base64.urlsafe_b64decode("AIdlQyE=") == bytes.fromhex("0087654321")

    # And on a real Pebble certificate, the same identifier the acme library would compute.
    from acme.client import _renewal_info_path_component

    setup = make_setup(cert_toml("web", ["local.example.com"]))
    from certd.renewal import pipeline

    issued = pipeline.issue_and_deploy(setup.config, setup.engine, "web").issued
    parsed = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert cert_id(issued.cert_pem) == _renewal_info_path_component(parsed)


def _ari_setup(make_setup, pebble_factory, ari_proxy_factory, **proxy_options):  # type: ignore[no-untyped-def]
    pebble = pebble_factory()
    proxy = ari_proxy_factory(pebble)
    for key, value in proxy_options.items():
        setattr(proxy, key, value)
    setup = make_setup(cert_toml("web", ["local.example.com", "www.example.com"]), pebble=pebble,
                       acme_url=proxy.directory_url, ca_bundle=proxy.ca_path)
    return setup, proxy


def test_daemon_follows_the_ari_window_and_sends_replaces(make_setup, pebble_factory, ari_proxy_factory) -> None:
    setup, proxy = _ari_setup(make_setup, pebble_factory, ari_proxy_factory)
    clock = MovableClock()

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: daemon.results.get("web") is not None, 60)
            first = setup.current("web")
            assert first is not None and daemon.results["web"].action == "renewed"
            first_id = cert_id(first.cert_pem)
            # Right after issuance the daemon asked the CA about the new certificate.
            state = setup.renewal("web")
            assert state.ari_supported is True and state.ari_cert_id == first_id
            assert proxy.ari_requests == [first_id]
            assert state.ari_window_start <= state.ari_renew_at <= state.ari_window_end
            # Retry-After 6 h is below the default floor of 12 h ("about twice a day at most").
            assert state.ari_next_check_at - clock() == pytest.approx(dt.timedelta(hours=12),
                                                                      abs=dt.timedelta(seconds=30))
            managed = setup.managed("web")
            assert managed.renew_reason == "ARI window" and managed.renew_at == state.ari_renew_at
            assert proxy.orders[0].replaces is None  # the first order replaces nothing

            # Half a day later the CA moved the window to now: a re-check must renew at once.
            now = clock()
            proxy.set_window(first_id, now + 11 * HOUR, now + 12 * HOUR)
            clock.advance(12 * HOUR + dt.timedelta(minutes=1))
            done = daemon.checks_done
            daemon.schedule("web", clock())
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            second = setup.current("web")
            assert second is not None and second.id != first.id
            assert daemon.results["web"].action == "renewed"
            assert daemon.results["web"].reason == "inside the CA's ARI renewal window"
            assert [o.replaces for o in proxy.orders] == [None, first_id]
            assert [o.answered for o in proxy.orders] == [201, 201]
            # The new certificate's ARI is asked for at once, and its window is far away again.
            assert proxy.ari_requests[-1] == cert_id(second.cert_pem)
            assert setup.renewal("web").ari_cert_id == cert_id(second.cert_pem)
            assert not daemon.results["web"].critical

            # A check that is not due asks nothing new (Retry-After not passed yet) and renews nothing.
            asked = len(proxy.ari_requests)
            done = daemon.checks_done
            daemon.schedule("web", clock())
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            assert daemon.results["web"].action == "none"
            assert len(proxy.ari_requests) == asked and len(proxy.orders) == 2

    run(scenario())


@pytest.mark.parametrize("refusal", [409, 403])
def test_refused_replaces_is_ordered_again_without_it(make_setup, pebble_factory, ari_proxy_factory,
                                                      refusal: int) -> None:
    setup, proxy = _ari_setup(make_setup, pebble_factory, ari_proxy_factory, reject_replaces=refusal)
    clock = MovableClock()

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            first = setup.current("web")
            assert first is not None
            now = clock()
            proxy.set_window(cert_id(first.cert_pem), now - HOUR, now)  # the CA wants it replaced now
            clock.advance(12 * HOUR + dt.timedelta(minutes=1))
            done = daemon.checks_done
            daemon.schedule("web", clock())
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            result = daemon.results["web"]
            assert result.action == "renewed", result
            second = setup.current("web")
            assert second is not None and second.id != first.id
            # First with replaces (refused), then the same order without it (issued).
            assert [(o.replaces, o.answered) for o in proxy.orders[1:]] == [
                (cert_id(first.cert_pem), refusal), (None, 201)]
            outcomes = [a.outcome for a in setup.attempts("web")]
            assert outcomes == ["success", "failure", "success"]
            assert setup.managed("web").failure_count == 0

    run(scenario())


def test_rate_limited_order_waits_for_the_ca(make_setup, pebble_factory, ari_proxy_factory) -> None:
    """A 429 rateLimited order is not retried within minutes: at least Retry-After (or the fallback)."""
    from certd.renewal.rules import RATE_LIMIT_FALLBACK

    setup, proxy = _ari_setup(make_setup, pebble_factory, ari_proxy_factory, rate_limit_orders=1)
    clock = MovableClock()

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            result = daemon.results["web"]
            assert result.action == "failed" and "rate-limited" in (result.error or "")
            managed = setup.managed("web")
            assert managed.failure_count == 1
            # The first backoff step is 1 min; a rate limit waits for the CA's Retry-After (2 h here).
            retry_after = dt.timedelta(seconds=int(proxy.rate_limit_retry_after))
            assert retry_after > RATE_LIMIT_FALLBACK
            assert managed.next_attempt_at - clock() >= retry_after - dt.timedelta(seconds=5)
            assert result.next_check <= managed.next_attempt_at
            # Looking again before then (files, ARI) orders nothing.
            done = daemon.checks_done
            clock.advance(RATE_LIMIT_FALLBACK / 2)
            daemon.schedule("web", clock())
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            assert daemon.results["web"].action == "waiting"
            assert [o.answered for o in proxy.orders] == [429]
            # Once the wait is over, the order goes through.
            clock.advance(RATE_LIMIT_FALLBACK)
            done = daemon.checks_done
            daemon.schedule("web", clock())
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            assert daemon.results["web"].action == "renewed"
            assert [o.answered for o in proxy.orders] == [429, 201]
            assert setup.managed("web").failure_count == 0

    run(scenario())
