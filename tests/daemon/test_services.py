"""What `certd run` runs next to renewals: the OCPP endpoint (reloaded after a renewal) and the
gray-cloud DNS sync, in the daemon's own loop."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from certd.sandbox.certd_config import ocpp_listener, ocpp_toml, toml_str

from tests.daemon.conftest import MovableClock, cert_toml, run, running_daemon
from tests.waits import served_certificate, until

HOSTS = """
[dns_records]
interval = 300

[[hosts]]
name = "nas.example.com"
address = "192.168.1.50"

"""


def ocpp_and_hosts(roots: Path) -> str:
    return HOSTS + ocpp_toml(
        [ocpp_listener("wallbox", "local.example.com", certificates=["web"])],
        reload_check_interval=0,  # no periodic look: only the daemon's reload after a renewal swaps
        trust_roots=[roots])  # Pebble's root of this run (a private CA for the material check)


def _served_serial(port: int) -> int:
    return served_certificate(port, "local.example.com").serial_number


def test_ocpp_listener_serves_each_renewal_and_dns_records_are_synced(make_setup, pebble_factory,
                                                                      tmp_path: Path) -> None:
    pebble = pebble_factory(validity_seconds=3600)
    roots = tmp_path / "pebble-roots.pem"
    roots.write_text("".join(pebble.roots()))
    setup = make_setup(cert_toml("web", ["local.example.com"]), pebble=pebble,
                       extra=ocpp_and_hosts(roots))
    clock = MovableClock()

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            listener = daemon.ocpp.listener("wallbox")
            assert listener.ports, "the listener opened once the first certificate was deployed"
            port = listener.ports[0]
            first = setup.current("web")
            assert await asyncio.to_thread(_served_serial, port) == int(first.serial, 16)

            clock.advance(dt.timedelta(minutes=31))
            done = daemon.checks_done
            daemon.schedule("web", clock())
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            assert daemon.results["web"].action == "renewed"
            second = setup.current("web")
            assert second.serial != first.serial
            assert await asyncio.to_thread(_served_serial, port) == int(second.serial, 16)

            records = [r for r in setup.world.emulator.records() if r["type"] == "A"]
            assert [(r["name"], r["content"], r["proxied"]) for r in records] == [
                ("nas.example.com", "192.168.1.50", False)]

    run(scenario())


def test_fleet_registry_deliveries_are_retried_by_the_daemon(make_setup, pebble_factory, tmp_path: Path,
                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.trust.registry_server import RegistryServer

    pebble = pebble_factory(validity_seconds=3600)
    anchors = tmp_path / "pebble-roots.pem"
    anchors.write_text("".join(pebble.roots()))
    secret = tmp_path / "registry.hmac"
    secret.write_text("registry-test-secret")
    secret.chmod(0o600)
    monkeypatch.setenv("CERTD_TEST_REGISTRY_AUTH", "Bearer daemon-test")
    clock = MovableClock()

    with RegistryServer("registry-test-secret", auth="Bearer daemon-test") as server:
        server.state.fail_statuses = [503]  # down when the first bundle version is pushed
        trust = f"""
[trust.anchor_sets]
pebble = {toml_str(anchors)}

[[trust.bundles]]
name = "fleet"
certificates = ["web"]
anchors = "pebble"
flavours = ["roots"]

[[trust.registries]]
name = "fleetreg"
url = {toml_str(server.url)}
hmac_secret_file = {toml_str(secret)}
auth_env = "CERTD_TEST_REGISTRY_AUTH"
"""
        setup = make_setup(cert_toml("web", ["local.example.com"]), pebble=pebble, extra=trust)

        async def scenario() -> None:
            async with running_daemon(setup, clock) as daemon:
                assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
                assert [s.status for s in server.state.seen] == [503] and not server.state.accepted
                # SIGHUP (or the outbox job's next round) sends what is due; the registry is back.
                clock.advance(dt.timedelta(minutes=5))
                assert await daemon.reload()
                await until(lambda: server.state.accepted, "the registry to accept the bundle", 15)
                assert len(server.state.accepted) == 1
                assert [s.status for s in server.state.seen] == [503, 200]

        run(scenario())


def test_records_of_hosts_removed_from_config_are_deleted_by_the_daemon(make_setup, pebble_factory) -> None:
    """The sync keeps running while certd still owns records, so removing the last host cleans up."""
    pebble = pebble_factory()
    hosts = '[[hosts]]\nname = "nas.example.com"\naddress = "192.168.1.50"\n'
    with_host = make_setup(cert_toml("web", ["local.example.com"]), pebble=pebble, extra=hosts)

    def a_records(setup) -> list[str]:  # type: ignore[no-untyped-def]
        return [r["name"] for r in setup.world.emulator.records() if r["type"] == "A"]

    async def first_run() -> None:
        async with running_daemon(with_host) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            await until(lambda: a_records(with_host), "the host's A record", 5)
    run(first_run())
    assert a_records(with_host) == ["nas.example.com"]

    without_host = make_setup(cert_toml("web", ["local.example.com"]), pebble=pebble)
    assert not without_host.config.hosts

    async def second_run() -> None:
        async with running_daemon(without_host):
            await until(lambda: not a_records(without_host), "the removed host's A record to go", 5)
    run(second_run())
    assert a_records(without_host) == []
