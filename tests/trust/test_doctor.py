"""certd doctor against real TLS servers on loopback and the Cloudflare emulator + DNS server."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from certd.doctor import parse_target, run_doctor
from certd.doctor.base import FAIL, PASS, WARN
from certd.doctor import dns_checks, tls_checks
from certd.dns.cloudflare import CloudflareDNS
from certd.errors import CertdError
from certd.sandbox.certd_config import ocpp_listener, ocpp_toml
from certd.trust.track import on_issued
from tests import pki
from tests.trust.conftest import bundle_toml, toml_str
from tests.trust.tls_server import TlsServer

HOST = "ocpp.example.com"


@pytest.fixture(scope="module")
def ca():
    root = pki.root("Doctor Root")
    inter = pki.intermediate("Doctor Inter", root)
    return root, inter


@pytest.fixture
def doctor_env(world, cf_world, ca, tmp_path, monkeypatch):
    """Config + store with a bundle covering HOST, and a DNS-only A record HOST -> 127.0.0.1."""
    root, inter = ca
    world.trust_anchor(root)
    monkeypatch.setenv("CERTD_TEST_CF_TOKEN", cf_world.token)
    extra = (f'[cloudflare]\napi_token_env = "CERTD_TEST_CF_TOKEN"\nbase_url = {toml_str(cf_world.base_url)}\n'
             f'[dns]\nnameservers = [{toml_str(cf_world.dns_addr)}]\n')
    config = world.config(bundle_toml(world.anchors_dir),
                          certificates=f'[[certificates]]\nname = "ocpp"\ndomains = ["{HOST}"]\n',
                          extra=extra)
    api = CloudflareDNS(cf_world.token, base_url=cf_world.base_url, max_retries=0)
    zone = api.find_zone(HOST)
    return config, api, zone


def serve(tmp_path, leaf: pki.Ca, chain: list[pki.Ca], name: str) -> TlsServer:
    return TlsServer(tmp_path, pki.pem_of(leaf, *chain), pki.key_pem(leaf.key), name=name)


def statuses(report) -> dict[str, str]:
    return {c.id: c.status for c in report.checks}


def test_right_certificate_passes_everything(doctor_env, world, cf_world, ca, tmp_path) -> None:
    config, api, zone = doctor_env
    root, inter = ca
    api.create_record(zone, type="A", name=HOST, content="127.0.0.1", proxied=False)
    leaf = pki.leaf([HOST], inter)
    on_issued(config, world.engine, world.issue("ocpp", [HOST], leaf, [inter]), deliver=False)
    with serve(tmp_path, leaf, [inter], "right") as server:
        report = run_doctor(config, HOST, server.port, engine=world.engine, dns_api=api,
                            nameservers=[cf_world.dns_addr], timeout=5)
    got = statuses(report)
    assert report.ok, "\n".join(report.lines())
    for check_id in ("dns-resolves", "dns-cloudflare", "dns-rebind", "tls-sni", "tls-no-sni", "tls-key-type",
                     "tls-gsm-profile", "tls-validity", "tls-full-chain", "bundle-fleet-roots",
                     "bundle-fleet-full", "tls-by-ip"):
        assert got[check_id] == PASS, (check_id, "\n".join(report.lines()))
    assert "a module holding bundle fleet (full) v1 trusts this endpoint" in report.check("bundle-fleet-full").message
    assert "negotiates ECDHE-RSA-AES" in report.check("tls-gsm-profile").message
    assert "fails the name check" in report.check("tls-by-ip").message
    assert "Doctor Inter" in report.check("tls-full-chain").message


def test_ecdsa_only_server_fails_key_type_and_gsm(doctor_env, world, cf_world, ca, tmp_path) -> None:
    config, api, zone = doctor_env
    _, inter = ca
    leaf = pki.leaf([HOST], inter, key=pki.ec_key())
    with serve(tmp_path, leaf, [inter], "ecdsa") as server:
        report = run_doctor(config, HOST, server.port, engine=world.engine, connect="127.0.0.1",
                            nameservers=[cf_world.dns_addr], timeout=5)
    assert not report.ok
    assert report.check("tls-key-type").status == FAIL
    assert "ECDSA" in report.check("tls-key-type").message and "need RSA" in report.check("tls-key-type").message
    assert 'key_type = "rsa2048"' in report.check("tls-key-type").fix
    gsm = report.check("tls-gsm-profile")
    assert gsm.status == FAIL and "TLS 1.2 with the GSM cipher list" in gsm.message
    assert report.check("tls-sni").status == PASS  # the name itself is right


def test_missing_intermediate_fails_full_chain_and_roots_bundle(doctor_env, world, cf_world, ca, tmp_path) -> None:
    config, api, zone = doctor_env
    _, inter = ca
    leaf = pki.leaf([HOST], inter)
    on_issued(config, world.engine, world.issue("ocpp", [HOST], leaf, [inter]), deliver=False)
    with serve(tmp_path, leaf, [], "nointer") as server:
        report = run_doctor(config, HOST, server.port, engine=world.engine, connect="127.0.0.1",
                            nameservers=[cf_world.dns_addr], timeout=5)
    chain = report.check("tls-full-chain")
    assert chain.status == FAIL and "not the intermediate" in chain.message and "Doctor Inter" in chain.message
    assert "fullchain.pem" in chain.fix
    # a module with only the root cannot build the chain; one with the full bundle still can
    assert report.check("bundle-fleet-roots").status == FAIL
    assert "would NOT trust" in report.check("bundle-fleet-roots").message
    assert report.check("bundle-fleet-full").status == PASS


def test_wrong_name_fails_name_checks(doctor_env, world, cf_world, ca, tmp_path) -> None:
    config, api, zone = doctor_env
    _, inter = ca
    leaf = pki.leaf(["other.example.net"], inter)
    on_issued(config, world.engine, world.issue("ocpp", [HOST], pki.leaf([HOST], inter), [inter]), deliver=False)
    with serve(tmp_path, leaf, [inter], "wrongname") as server:
        report = run_doctor(config, HOST, server.port, engine=world.engine, connect="127.0.0.1",
                            nameservers=[cf_world.dns_addr], timeout=5)
    for check_id in ("tls-sni", "tls-no-sni"):
        check = report.check(check_id)
        assert check.status == FAIL and "other.example.net" in check.message and f"not {HOST}" in check.message
    assert report.check("bundle-fleet-full").status == FAIL
    assert "mismatch" in report.check("bundle-fleet-full").message.lower() or \
        "match" in report.check("bundle-fleet-full").message.lower()


def test_proxied_record_fails_with_gray_cloud_fix(doctor_env, world, cf_world, ca, tmp_path) -> None:
    config, api, zone = doctor_env
    api.create_record(zone, type="A", name=HOST, content="192.168.1.50", proxied=True)
    report = run_doctor(config, HOST, 9, engine=world.engine, dns_api=api, nameservers=[cf_world.dns_addr],
                        connect="127.0.0.1", timeout=2)
    check = report.check("dns-cloudflare")
    assert check.status == FAIL and "proxied by Cloudflare (orange cloud)" in check.message
    assert "DNS only (gray cloud)" in check.fix
    assert not report.ok


def test_record_pointing_elsewhere_than_config_says(world, cf_world, monkeypatch) -> None:
    api = CloudflareDNS(cf_world.token, base_url=cf_world.base_url, max_retries=0)
    zone = api.find_zone(HOST)
    api.create_record(zone, type="A", name=HOST, content="192.168.1.60", proxied=False)
    config = world.config("", certificates=f'[[certificates]]\nname = "ocpp"\ndomains = ["{HOST}"]\n',
                          extra=f'[[hosts]]\nname = "{HOST}"\naddress = "192.168.1.50"\n')
    view = dns_checks.cloudflare_view(api, HOST)
    check = dns_checks.evaluate_cloudflare(HOST, view, dns_checks.expected_addresses(config, HOST))
    assert check.status == FAIL and "points to 192.168.1.60 but config says 192.168.1.50" in check.message


def test_unresolvable_name_fails_and_stops_before_tls(world) -> None:
    config = world.config("")
    report = run_doctor(config, "nothing.invalid", 443, nameservers=["127.0.0.1:9"], timeout=1)
    assert report.check("dns-resolves").status == FAIL
    assert report.check("tls-sni").status == FAIL and "--connect" in report.check("tls-sni").fix
    assert report.check("dns-cloudflare").status == WARN  # no API configured


def test_cli_json_output(doctor_env, world, cf_world, ca, tmp_path) -> None:
    config, api, zone = doctor_env
    _, inter = ca
    api.create_record(zone, type="A", name=HOST, content="127.0.0.1", proxied=False)
    leaf = pki.leaf([HOST], inter, key=pki.ec_key())
    env = dict(os.environ, CERTD_TEST_CF_TOKEN=cf_world.token)
    with serve(tmp_path, leaf, [inter], "cli") as server:
        proc = subprocess.run(
            [sys.executable, "-m", "certd", "--config", str(tmp_path / "certd.toml"), "doctor",
             f"{HOST}:{server.port}", "--resolver", cf_world.dns_addr, "--json", "--timeout", "5"],
            env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    (target,) = data["targets"]
    assert data["ok"] is False and target["port"] == server.port and target["address"] == "127.0.0.1"
    by_id = {c["id"]: c for c in target["checks"]}
    assert by_id["tls-key-type"]["status"] == "fail" and by_id["tls-key-type"]["fix"]
    assert by_id["dns-cloudflare"]["status"] == "pass"
    assert cf_world.token not in proc.stdout + proc.stderr


# -- pure evaluators --------------------------------------------------------------
def test_rebind_evaluator_cases() -> None:
    refused = dns_checks.Resolution((), "NXDOMAIN (the resolver says the name does not exist)", "192.168.1.1")
    ok = dns_checks.Resolution(("192.168.1.50",), None, "192.168.1.1")
    other = dns_checks.Resolution(("10.0.0.9",), None, "192.168.1.1")
    check = dns_checks.evaluate_rebind(HOST, refused, ["192.168.1.50"])
    assert check.status == FAIL and "DNS-rebind" in check.message and "rebind-domain-ok=/ocpp.example.com/" in check.fix
    assert dns_checks.evaluate_rebind(HOST, ok, ["192.168.1.50"]).status == PASS
    assert dns_checks.evaluate_rebind(HOST, other, ["192.168.1.50"]).status == WARN
    assert dns_checks.evaluate_rebind(HOST, refused, ["1.1.1.1"]).status == PASS


def test_validity_evaluator_uses_the_given_clock(ca) -> None:
    _, inter = ca
    leaf = pki.leaf([HOST], inter, days=30).cert
    now = pki.NOW
    assert tls_checks.evaluate_validity(leaf, now).status == PASS
    assert tls_checks.evaluate_validity(leaf, now + dt.timedelta(days=25)).status == WARN
    expired = tls_checks.evaluate_validity(leaf, now + dt.timedelta(days=31))
    assert expired.status == FAIL and "expired" in expired.message
    early = tls_checks.evaluate_validity(leaf, now - dt.timedelta(days=40))
    assert early.status == FAIL and "clock" in early.fix


def test_parse_target() -> None:
    assert parse_target("ocpp.example.com") == ("ocpp.example.com", 443)
    assert parse_target("OCPP.example.com.:8443") == ("ocpp.example.com", 8443)
    assert parse_target("[::1]:9000") == ("::1", 9000)
    with pytest.raises(CertdError, match="HOST or HOST:PORT"):
        parse_target("host:notaport")
    with pytest.raises(CertdError):
        parse_target("host:70000")


def test_doctor_against_certd_ocpp_listener_with_gsm_profile(world, cf_world, ca, tmp_path) -> None:
    """The embedded OCPP endpoint (certd/ocpp) serving an RSA fullchain with the gsm TLS profile."""
    import asyncio
    import threading

    from certd.ocpp.service import OcppService

    root, inter = ca
    world.trust_anchor(root)
    leaf = pki.leaf([HOST], inter)
    (tmp_path / "fullchain.pem").write_text(pki.pem_of(leaf, inter))
    (tmp_path / "privkey.pem").write_text(pki.key_pem(leaf.key))
    (tmp_path / "privkey.pem").chmod(0o600)
    for written in ("fullchain.pem", "privkey.pem"):  # the listener waits until files have settled
        os.utime(tmp_path / written, (pki.NOW.timestamp() - 60, pki.NOW.timestamp() - 60))
    (tmp_path / "root.pem").write_text(root.pem)
    ocpp = ocpp_toml([ocpp_listener("main", HOST, tls_profile="gsm", cert_files=[
        {"fullchain": tmp_path / "fullchain.pem", "privkey": tmp_path / "privkey.pem"}])],
        reload_check_interval=0, trust_roots=[tmp_path / "root.pem"])
    config = world.config(bundle_toml(world.anchors_dir),
                          certificates=f'[[certificates]]\nname = "ocpp"\ndomains = ["{HOST}"]\n', extra=ocpp)
    on_issued(config, world.engine, world.issue("ocpp", [HOST], leaf, [inter]), deliver=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    service = OcppService(config, world.engine)
    try:
        started = asyncio.run_coroutine_threadsafe(service.start(), loop).result(30)
        assert service.listener("main").ports, started
        port = service.listener("main").ports[0]
        report = run_doctor(config, HOST, port, engine=world.engine, connect="127.0.0.1",
                            nameservers=[cf_world.dns_addr], timeout=5)
    finally:
        asyncio.run_coroutine_threadsafe(service.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    got = statuses(report)
    for check_id in ("tls-sni", "tls-no-sni", "tls-key-type", "tls-gsm-profile", "tls-full-chain",
                     "tls-validity", "bundle-fleet-roots", "bundle-fleet-full", "tls-by-ip"):
        assert got[check_id] == PASS, (check_id, "\n".join(report.lines()))
    assert "TLS 1.2" in report.check("tls-gsm-profile").message
