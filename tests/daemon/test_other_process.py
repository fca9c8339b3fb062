"""A certificate issued by another certd process on the same machine is served by the running
daemon within 2 seconds, without a faster poll: the listeners' periodic store check is off here,
so only the daemon's watch on its live copy can bring the new certificate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from certd.runtime.watch import names_of
from certd.sandbox.certd_config import ocpp_listener, ocpp_toml
from certd.store.types import utcnow
from tests.daemon.conftest import cert_toml, run, running_daemon
from tests.daemon.test_services import _served_serial
from tests.obtain.test_failures import txt_records
from tests.obtain.test_orphans import killed_mid_order

REACTION_BOUND_S = 2.0


def test_names_of_changed_paths() -> None:
    live = Path("/var/lib/certd/live")
    changed = {f"{live}/web/fullchain.pem", f"{live}/web/privkey.pem", f"{live}/nas/.tmp-123",
               f"{live}/.hidden", "/elsewhere/web/cert.pem"}
    assert names_of(live, changed) == {"web", "nas"}


def test_issue_by_another_process_is_served_within_two_seconds(make_setup, pebble_factory,
                                                               tmp_path: Path) -> None:
    pebble = pebble_factory(validity_seconds=3600)
    roots = tmp_path / "pebble-roots.pem"
    roots.write_text("".join(pebble.roots()))
    setup = make_setup(cert_toml("web", ["local.example.com"]), pebble=pebble,
                       extra=ocpp_toml([ocpp_listener("wallbox", "local.example.com", certificates=["web"])],
                                       reload_check_interval=0,  # no periodic look at the store
                                       trust_roots=[roots]))

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            port = daemon.ocpp.listener("wallbox").ports[0]
            first = setup.current("web")
            assert await asyncio.to_thread(_served_serial, port) == int(first.serial, 16)

            result = await asyncio.to_thread(setup.cli, "issue", "web", "--force")
            deployed = time.monotonic()
            assert result.returncode == 0, result.stderr
            second = setup.current("web")
            assert second.serial != first.serial

            delay = 0.02
            while await asyncio.to_thread(_served_serial, port) != int(second.serial, 16):
                assert time.monotonic() - deployed < REACTION_BOUND_S, "still serving the old certificate"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    run(scenario())


def test_a_lease_left_by_a_killed_process_is_taken_over_and_its_records_removed(make_setup) -> None:
    """The daemon's next check of a certificate whose lease a killed `certd issue` left behind
    removes that order's TXT records before anything else (not only at the 10-minute cleanup)."""
    setup = make_setup(cert_toml("web", ["local.example.com", "www.example.com"]))

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            created = await asyncio.to_thread(killed_mid_order, setup, "--force")
            assert len(created) == 2 and len(txt_records(setup.world)) == 2

            done = daemon.checks_done
            daemon.schedule("web", utcnow())
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            assert txt_records(setup.world) == []
            assert daemon.results["web"].action == "none"  # still valid: nothing ordered

    run(scenario())
