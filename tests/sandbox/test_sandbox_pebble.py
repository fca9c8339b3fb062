"""Pebble under the launcher: HTTPS with the generated CA, its roots, restarts, and real DNS-01."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import cloudflare
import josepy as jose
import pytest
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certd.sandbox import PebbleServer, SandboxWorld
from certd.sandbox.pebble import PebbleError, PebbleNotFoundError, find_pebble


def fetch(url: str, cafile: str | None) -> bytes:
    context = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return bytes(response.read())


def test_directory_is_served_over_https_verified_with_the_listener_ca(pebble: PebbleServer) -> None:
    directory = json.loads(fetch(pebble.directory_url, str(pebble.https_ca_path)))
    assert {"newAccount", "newNonce", "newOrder"} <= directory.keys()
    assert pebble.directory_url.startswith("https://127.0.0.1:")
    with pytest.raises(urllib.error.URLError):
        fetch(pebble.directory_url, cafile=None)  # system trust does not know the sandbox CA


def test_roots_and_intermediates(pebble: PebbleServer) -> None:
    [root_pem] = pebble.roots()
    [intermediate_pem] = pebble.intermediates()
    root = x509.load_pem_x509_certificate(root_pem.encode())
    intermediate = x509.load_pem_x509_certificate(intermediate_pem.encode())
    assert root.subject == root.issuer
    assert intermediate.issuer == root.subject
    intermediate.verify_directly_issued_by(root)


def test_restart_gives_a_new_root_on_the_same_ports(pebble: PebbleServer) -> None:
    url, [old_root] = pebble.directory_url, pebble.roots()
    pebble.restart()
    assert pebble.running and pebble.directory_url == url
    [new_root] = pebble.roots()
    assert new_root != old_root
    assert json.loads(fetch(pebble.directory_url, str(pebble.https_ca_path)))["newOrder"]


def test_alternate_roots_and_validity(cf_world: SandboxWorld) -> None:
    try:
        find_pebble()
    except PebbleNotFoundError as exc:
        pytest.skip(str(exc))
    with PebbleServer(cf_world.dns_addr, alternate_roots=1, validity_seconds=3600) as server:
        roots = server.roots()
        intermediates = server.intermediates()
        assert len(roots) == 2 and len(set(roots)) == 2
        for root_pem, intermediate_pem in zip(roots, intermediates, strict=True):
            root = x509.load_pem_x509_certificate(root_pem.encode())
            x509.load_pem_x509_certificate(intermediate_pem.encode()).verify_directly_issued_by(root)
        assert "certificate validity period of 3600 seconds" in server.log_tail(50)


def test_chain_length_puts_unexposed_intermediates_between(cf_world: SandboxWorld) -> None:
    try:
        find_pebble()
    except PebbleNotFoundError as exc:
        pytest.skip(str(exc))
    with PebbleServer(cf_world.dns_addr, chain_length=2) as server:
        [root_pem], [intermediate_pem] = server.roots(), server.intermediates()
        root = x509.load_pem_x509_certificate(root_pem.encode())
        intermediate = x509.load_pem_x509_certificate(intermediate_pem.encode())
        # /intermediates/0 is the issuer of leaves; the extra one under the root is not served.
        assert intermediate.issuer != root.subject


def test_the_forbidden_always_valid_switch_is_refused(cf_world: SandboxWorld) -> None:
    with pytest.raises(ValueError, match="PEBBLE_VA_ALWAYS_VALID"):
        PebbleServer(cf_world.dns_addr, extra_env={"PEBBLE_VA_ALWAYS_VALID": "1"})


def test_a_pebble_that_dies_at_start_reports_its_output(cf_world: SandboxWorld, tmp_path: Path) -> None:
    broken = tmp_path / "pebble"
    broken.write_text("#!/bin/sh\necho 'listen tcp: address already in use' >&2\nexit 3\n")
    broken.chmod(0o755)
    server = PebbleServer(cf_world.dns_addr, binary=broken)
    with pytest.raises(PebbleError) as info:
        server.start()
    assert "status 3" in str(info.value)
    assert "address already in use" in str(info.value)
    assert not server.running
    server.stop()


def test_find_pebble_explains_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PEBBLE_BIN", raising=False)
    monkeypatch.setattr("certd.sandbox.pebble.DEFAULT_PEBBLE", str(tmp_path / "absent"))
    with pytest.raises(PebbleNotFoundError, match="apt-get install pebble"):
        find_pebble()


# -- real DNS-01 against the sandbox DNS server -----------------------------------

class Acme:
    """A bare `acme` client for these tests (certd's own ACME code is tested elsewhere)."""

    def __init__(self, pebble: PebbleServer) -> None:
        self.key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = client.ClientNetwork(self.key, alg=jose.ES256, verify_ssl=str(pebble.https_ca_path))  # type: ignore[arg-type]
        directory = client.ClientV2.get_directory(pebble.directory_url, net)
        self.client = client.ClientV2(directory, net)
        self.client.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))

    def order(self, names: list[str]) -> messages.OrderResource:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return self.client.new_order(crypto_util.make_csr(pem, names))

    def dns_challenges(self, order: messages.OrderResource) -> list[tuple[str, messages.ChallengeBody, str]]:
        """(TXT name, challenge, TXT value) for each authorization."""
        found = []
        for authz in order.authorizations:
            for challb in authz.body.challenges:
                if isinstance(challb.chall, challenges.DNS01):
                    name = f"_acme-challenge.{authz.body.identifier.value}"
                    found.append((name, challb, challb.chall.validation(self.key)))
        return found

    def wait_authorizations(self, order: messages.OrderResource) -> list[messages.AuthorizationResource]:
        """Poll each authorization with short growing intervals until it leaves 'pending'."""
        done = []
        for authz in order.authorizations:
            interval, deadline = 0.05, time.monotonic() + 20
            while True:
                authz, _ = self.client.poll(authz)
                if authz.body.status != messages.STATUS_PENDING or time.monotonic() > deadline:
                    break
                time.sleep(interval)
                interval = min(interval * 1.5, 0.5)
            done.append(authz)
        return done


def test_dns01_issuance_validates_against_the_sandbox_dns(cf_world: SandboxWorld, cf: cloudflare.Cloudflare,
                                                         pebble: PebbleServer) -> None:
    acme = Acme(pebble)
    order = acme.order(["example.com", "*.example.com"])
    zone_id = cf_world.zone_ids["example.com"]
    pending = acme.dns_challenges(order)
    assert {name for name, _, _ in pending} == {"_acme-challenge.example.com"}  # apex and wildcard share it
    for name, _, value in pending:
        cf.dns.records.create(zone_id=zone_id, type="TXT", name=name, content=value, ttl=60)
    for _, challb, _ in pending:
        acme.client.answer_challenge(challb, challb.response(acme.key))
    authorizations = acme.wait_authorizations(order)
    assert [a.body.status for a in authorizations] == [messages.STATUS_VALID] * 2
    # Pebble really asked the sandbox DNS server for the TXT records.
    assert any(q[1:] == ("_acme-challenge.example.com.", "TXT") for q in cf_world.dns.queries)

    finished = acme.client.poll_and_finalize(order)
    leaf_pem = finished.fullchain_pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["*.example.com", "example.com"]
    [intermediate_pem] = pebble.intermediates()
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(intermediate_pem.encode()))


def test_dns01_fails_without_the_txt_record(cf_world: SandboxWorld, pebble: PebbleServer) -> None:
    """Proof that validation is real: answering without publishing the record fails."""
    acme = Acme(pebble)
    order = acme.order(["nothing-published.example.net"])
    [(_, challb, _)] = acme.dns_challenges(order)
    acme.client.answer_challenge(challb, challb.response(acme.key))
    [authz] = acme.wait_authorizations(order)
    assert authz.body.status == messages.STATUS_INVALID
    [failed] = [c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)]
    assert failed.error is not None
