"""Each NOTIFY path on its own, with the safety nets out of the picture: two `certd run` nodes whose
periodic comparisons (`[node] resync_interval`, `[rollover] check_interval`) are an hour apart and
whose listeners never re-read the store on a timer, so only the notification can bring a change
within the 2 s the tests allow.

- a charger's approval: a charger pending approval on node B; `certd chargers approve` on the
  operator's host; node B asks it for a BootNotification and answers it Accepted;
- a bundle version: the operator's `certd bundle refresh` writes a new version of the fleet bundle;
  node B's rollover engine installs the root it adds on the charger connected there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from cryptography import x509
from sqlmodel import select

from certd.ocpp import charger_registry
from certd.sandbox.certd_config import toml_str
from certd.store.db import session_scope
from certd.store.rollover import CHARGER_CONFIRMED, RolloverCharger
from tests.nodes.conftest import HOST, Fleet, Notifications, wait_until
from tests.rollover.sim import SimCharger

QUIET = "resync_interval = 3600"  # the node's safety net: not within the test


def wall(monotonic_at: float) -> dt.datetime:
    """A monotonic reading (the test's notification listener) on the wall clock (the sim's)."""
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=time.monotonic() - monotonic_at)


def noticed(notes: Notifications, kind: str, **fields: object) -> float | None:
    return next((at for at, e in notes.seen if e["k"] == kind and all(e.get(k) == v for k, v in fields.items())),
                None)


async def until(predicate, what: str, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(wait_until, predicate, limit, what)


def test_a_charger_approved_elsewhere_is_accepted_by_its_node_within_2s(make_fleet, pg_url: str) -> None:
    fleet: Fleet = make_fleet(pg_url, 2, validity=None, listeners=True, operator=True, node=QUIET,
                              ocpp='unknown_chargers = "register"\ncall_timeout = 10')
    node_b = fleet.nodes[1]
    for node in fleet.nodes:
        fleet.start(node)
    root_pem = fleet.pebble.roots()[0]
    sims = [SimCharger("CP-NEW16", "ocpp1.6", [root_pem], HOST), SimCharger("CP-NEW201", "ocpp2.0.1", [root_pem], HOST)]

    async def scenario() -> None:
        await until(lambda: fleet.current() is not None, "the first issuance", 90)
        serial = int(fleet.current().serial, 16)  # type: ignore[union-attr]
        await until(lambda: node_b.served_serial() == serial, "node-b serving", 60)
        for sim in sims:
            sim.start(f"wss://127.0.0.1:{node_b.port}/ocpp/{sim.charger_id}")
        await until(lambda: all(s.boot_statuses for s in sims), "the first BootNotifications")
        assert [[status for _, status in s.boot_statuses] for s in sims] == [["Pending"], ["Pending"]]

        def recorded() -> bool:
            rows = {r.charger_id: r for r in charger_registry.list_chargers(fleet.engine)}
            return all(s.charger_id in rows and rows[s.charger_id].registration == "pending"
                       and rows[s.charger_id].connected_node == "node-b" for s in sims)

        await until(recorded, "both recorded as pending, on node-b")

        notes = await asyncio.to_thread(Notifications, pg_url)
        try:
            for sim in sims:
                approved = await asyncio.to_thread(fleet.cli, "chargers", "approve", sim.charger_id)
                assert approved.returncode == 0, approved.stderr
            await until(lambda: all(len(s.boot_statuses) == 2 for s in sims), "BootNotifications after approval", 10)
            for sim in sims:
                at = noticed(notes, "charger", id=sim.charger_id)
                assert at is not None
                when, status = sim.boot_statuses[1]
                assert status == "Accepted" and sim.triggers == ["BootNotification"]
                assert (when - wall(at)).total_seconds() <= 2.0
        finally:
            notes.close()
        assert all(s.online.is_set() and s.connections == 1 for s in sims)  # over the same connection
        for sim in sims:
            await sim.stop()

    asyncio.run(asyncio.wait_for(scenario(), 170))


def trust_section(anchors: Path, anchors_all: Path) -> str:
    return f"""
[trust.anchor_sets]
pebble = {toml_str(anchors)}
pebble-all = {toml_str(anchors_all)}

[[trust.bundles]]
name = "fleet"
anchors = "pebble"

[rollover]
boot_wait = 1
check_interval = 3600          # the engine's own look at the store: not within the test
call_timeout = 5
"""


def confirmed(fleet: Fleet, charger_id: str) -> RolloverCharger | None:
    with session_scope(fleet.engine) as session:
        row = session.exec(select(RolloverCharger).where(RolloverCharger.charger_id == charger_id)).first()
    return row if row is not None and row.state == CHARGER_CONFIRMED else None


def test_a_new_bundle_version_reaches_the_rollover_engine_of_another_node_within_2s(
        make_fleet, pg_url: str, tmp_path: Path) -> None:
    anchors, anchors_all = tmp_path / "anchors", tmp_path / "anchors-all"
    anchors.mkdir()
    anchors_all.mkdir()
    fleet: Fleet = make_fleet(pg_url, 2, validity=None, listeners=True, operator=True, node=QUIET,
                              alternate_roots=1, ocpp='unknown_chargers = "accept"\ncall_timeout = 10',
                              extra=trust_section(anchors, anchors_all))
    root, alternate = fleet.pebble.roots()
    (anchors / "root.pem").write_text(root)
    (anchors_all / "root.pem").write_text(root)
    (anchors_all / "alternate.pem").write_text(alternate)
    alternate_cert = x509.load_pem_x509_certificate(alternate.encode())
    # The operator changed its config: the bundle's chains now also end at Pebble's alternate root.
    assert fleet.operator is not None
    operator_toml = fleet.operator.config_path.read_text()
    fleet.operator.config_path.write_text(operator_toml.replace('anchors = "pebble"', 'anchors = "pebble-all"'))
    node_b = fleet.nodes[1]
    for node in fleet.nodes:
        fleet.start(node)
    sim = SimCharger("CP-B", "ocpp1.6", [root], HOST)

    async def scenario() -> None:
        await until(lambda: fleet.current() is not None, "the first issuance", 90)
        serial = int(fleet.current().serial, 16)  # type: ignore[union-attr]
        await until(lambda: node_b.served_serial() == serial, "node-b serving", 60)
        sim.start(f"wss://127.0.0.1:{node_b.port}/ocpp/{sim.charger_id}")
        await until(lambda: confirmed(fleet, sim.charger_id) is not None, "the charger confirmed on node-b")
        before = confirmed(fleet, sim.charger_id)
        assert before is not None and not sim.holds(alternate_cert) and sim.install_requests == []

        notes = await asyncio.to_thread(Notifications, pg_url)
        try:
            refreshed = await asyncio.to_thread(fleet.cli, "bundle", "refresh", "--no-push")
            assert refreshed.returncode == 0, refreshed.stderr
            assert "bundle fleet (roots): v1 -> v2" in refreshed.stdout
            await until(lambda: sim.holds(alternate_cert), "node-b installing the added root", 10)
            at = noticed(notes, "bundle")
            assert at is not None
            installed_at = next(when for when, status in sim.install_answers if status == "Accepted")
            assert (installed_at - wall(at)).total_seconds() <= 2.0
        finally:
            notes.close()
        await until(lambda: (row := confirmed(fleet, sim.charger_id)) is not None
                    and row.bundles_json != before.bundles_json, "the new version confirmed")
        assert len(sim.install_requests) == 1 and sim.connections == 1
        await sim.stop()

    asyncio.run(asyncio.wait_for(scenario(), 170))
