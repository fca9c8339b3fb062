"""The trust rollover against Pebble: a new root reaches every charger before it is served.

20 simulated chargers (10 OCPP 1.6, 10 OCPP 2.0.1) trust Pebble's root A and
are connected; Pebble restarts (root B), certd renews, installs B on every
charger while they stay connected under A, switches only then, and every
charger reconnects under B. Variants: a charger offline during the push, a
charger that rejects, the deadline forcing the switch, certd restarting
mid-rollout.
"""

from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509

from certd.store.rollover import CHARGER_CONFIRMED, GATE_IDLE, GATE_PENDING
from tests.rollover.conftest import LISTENER, Fleet, run, until
from tests.rollover.sim import Behavior, SimCharger


def _serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


async def _connect(fleet: Fleet, sims: list[SimCharger]) -> None:
    for sim in sims:
        sim.start(fleet.url(sim))
    await until(lambda: all(s.online.is_set() for s in sims), "chargers online")


async def _stop(sims: list[SimCharger]) -> None:
    for sim in sims:
        await sim.stop()


def _verified_under(sim: SimCharger, fleet: Fleet, root: x509.Certificate) -> bool:
    """The leaf served on the sim's last connection chains to `root` through Pebble's intermediate
    (Python 3.11's ssl module shows only the leaf; the handshake itself verified against the sim's store)."""
    leaf = sim.peer_chains[-1][0]
    intermediate = x509.load_pem_x509_certificate(fleet.pebble.intermediates()[0].encode())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    return True


def test_new_root_installed_and_confirmed_on_all_20_before_the_switch(make_fleet) -> None:
    fleet: Fleet = make_fleet()
    root_a = x509.load_pem_x509_certificate(fleet.pebble.roots()[0].encode())
    first = fleet.issue()
    sims = fleet.sims(20)
    fleet.register([s.charger_id for s in sims])

    async def main() -> None:
        async with fleet.certd() as (service, rollover):
            await _connect(fleet, sims)
            assert await rollover.wait_idle(20)
            rows = fleet.charger_rows()
            # Before any change: every charger's holdings were read, nothing had to be sent.
            assert {cid: r.state for cid, r in rows.items()} == {s.charger_id: CHARGER_CONFIRMED for s in sims}
            assert all(s.install_requests == [] and s.id_requests >= 1 for s in sims)
            assert fleet.served_serial(service) == first.serial

            fleet.pebble.restart()
            root_b = fleet.trust_pebble_roots()
            assert root_b.subject != root_a.subject
            second = await fleet.renew(service, rollover)
            assert second.serial != first.serial

            await until(lambda: fleet.served_serial(service) == second.serial, "switch to the new certificate")
            gate = fleet.gate()
            assert gate.state == GATE_IDLE and gate.served_id == second.id and not gate.forced
            assert "20/20" in (gate.switch_reason or "")
            for sim in sims:
                # B was installed once, confirmed, before the switch, over the connection made under A.
                assert sim.holds(root_b), sim.charger_id
                assert len(sim.install_requests) == 1 and len(sim.accepted_installs) == 1
                assert sim.accepted_installs[0] <= gate.switched_at
                assert sim.connections == 1 and _serial(sim.peer_chains[0][0]) == first.serial
            rows = fleet.charger_rows()
            assert all(r.state == CHARGER_CONFIRMED and r.confirmed_at <= gate.switched_at
                       for r in rows.values())
            assert all('"fleet": 2' in r.bundles_json for r in rows.values())

            for sim in sims:
                sim.drop()
            await until(lambda: all(s.connections == 2 and s.online.is_set() for s in sims),
                        "every charger reconnected")
            for sim in sims:
                leaf = sim.peer_chains[-1][0]
                assert _serial(leaf) == second.serial
                assert _verified_under(sim, fleet, root_b)
            await _stop(sims)

    run(main())


def test_offline_charger_gets_the_root_after_its_boot_notification(make_fleet) -> None:
    fleet: Fleet = make_fleet()
    first = fleet.issue()
    sims = fleet.sims(4)
    late = sims.pop()
    fleet.register([s.charger_id for s in [*sims, late]])

    async def main() -> None:
        async with fleet.certd() as (service, rollover):
            await _connect(fleet, sims)
            assert await rollover.wait_idle(20)
            fleet.pebble.restart()
            root_b = fleet.trust_pebble_roots()
            second = await fleet.renew(service, rollover)
            await until(lambda: all(s.holds(root_b) for s in sims), "online chargers hold B")
            assert await rollover.wait_idle(20)
            await rollover.evaluate()
            gate = fleet.gate()
            assert gate.state == GATE_PENDING and gate.pending_id == second.id
            assert fleet.served_serial(service) == first.serial  # 3 of 4: the gate (100%) holds
            assert late.install_requests == []

            late.start(fleet.url(late))  # comes online: connects, BootNotification, then the push
            await until(lambda: fleet.served_serial(service) == second.serial, "switch after the late charger")
            assert late.holds(root_b) and len(late.boots) == 1
            assert late.accepted_installs[0] >= late.boots[0]
            assert late.accepted_installs[0] <= fleet.gate().switched_at
            await _stop([*sims, late])

    run(main())


def test_rejecting_charger_keeps_the_old_certificate_and_is_named_in_status(make_fleet) -> None:
    fleet: Fleet = make_fleet()
    first = fleet.issue()
    sims = fleet.sims(4, behaviors={2: Behavior(install="reject")})
    fleet.register([s.charger_id for s in sims])

    async def main() -> None:
        async with fleet.certd() as (service, rollover):
            await _connect(fleet, sims)
            assert await rollover.wait_idle(20)
            fleet.pebble.restart()
            root_b = fleet.trust_pebble_roots()
            second = await fleet.renew(service, rollover)
            await until(lambda: sum(s.holds(root_b) for s in sims) == 3 and sims[2].install_answers,
                        "three chargers hold B, one answered")
            assert await rollover.wait_idle(20)
            await rollover.evaluate()
            assert fleet.served_serial(service) == first.serial
            gate = fleet.gate()
            assert gate.state == GATE_PENDING and gate.pending_id == second.id
            assert sims[2].install_answers[0][1] == "Rejected"
            row = fleet.charger_rows()[sims[2].charger_id]
            assert row.state == "failed" and row.last_result == "Rejected"
            await _stop(sims)

    run(main())
    proc = fleet_status(fleet)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"listener {LISTENER}" in out
    assert "pending" in out and "3/4" in out
    assert "confirmed 3" in out and "failed 1" in out
    assert f"{sims[2].charger_id}" in out and "Rejected" in out


def fleet_status(fleet: Fleet):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "certd", "--config", str(fleet.tmp / "certd.toml"),
                           "fleet", "status"], env=dict(os.environ), capture_output=True, text=True,
                          timeout=60)


def test_deadline_forces_the_switch_with_an_alert(make_fleet, caplog) -> None:
    fleet: Fleet = make_fleet()
    first = fleet.issue()
    sims = fleet.sims(4, behaviors={1: Behavior(install="reject")})
    fleet.register([s.charger_id for s in sims if s.charger_id != sims[1].charger_id])
    fleet.register([sims[1].charger_id], heartbeat_class="gsm")  # a cellular module
    caplog.set_level(logging.ERROR, logger="certd.rollover")

    async def main() -> None:
        async with fleet.certd() as (service, rollover):
            await _connect(fleet, sims)
            assert await rollover.wait_idle(20)
            fleet.pebble.restart()
            root_b = fleet.trust_pebble_roots()
            second = await fleet.renew(service, rollover)
            await until(lambda: sum(s.holds(root_b) for s in sims) == 3 and sims[1].install_answers,
                        "three chargers hold B")
            assert await rollover.wait_idle(20)
            await rollover.evaluate()
            gate = fleet.gate()
            assert gate.state == GATE_PENDING and fleet.served_serial(service) == first.serial
            assert gate.deadline_at == first.not_after - dt.timedelta(days=7)
            assert fleet.alerts == []

            fleet.now[0] = gate.deadline_at + dt.timedelta(minutes=1)  # the previous cert's last 7 days
            await rollover.evaluate()
            assert fleet.served_serial(service) == second.serial
            gate = fleet.gate()
            assert gate.forced and gate.served_id == second.id and "deadline" in gate.switch_reason
            [alert] = fleet.alerts
            assert [item.charger_id for item in alert.lacking] == [sims[1].charger_id]
            reason = alert.lacking[0].reason
            assert "Rejected" in reason and "certd bundle export fleet --format quectel" in reason
            assert alert.environment()["CERTD_LACKING"] == sims[1].charger_id

            for sim in sims:
                sim.drop()
            others = [s for i, s in enumerate(sims) if i != 1]
            await until(lambda: all(s.connections == 2 for s in others), "the others reconnect under B")
            await until(lambda: sims[1].handshake_failures >= 1, "the rejecting charger is locked out")
            assert sims[1].connections == 1 and not sims[1].online.is_set()
            assert "CERTIFICATE_VERIFY_FAILED" in (sims[1].last_error or "")
            await _stop(sims)

    run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("switched ocpp" in m and "1 charger(s)" in m for m in errors), errors


def test_restart_mid_rollout_resumes_without_resending(make_fleet) -> None:
    fleet: Fleet = make_fleet(fixed_port=True)
    first = fleet.issue()
    sims = fleet.sims(6)
    online, later = sims[:3], sims[3:]
    fleet.register([s.charger_id for s in sims])

    async def main() -> None:
        async with fleet.certd() as (service, rollover):
            await _connect(fleet, online)
            assert await rollover.wait_idle(20)
            fleet.pebble.restart()
            root_b = fleet.trust_pebble_roots()
            second = await fleet.renew(service, rollover)
            await until(lambda: all(s.holds(root_b) for s in online), "online chargers hold B")
            assert await rollover.wait_idle(20)
        # certd stopped mid-rollout: the gate waits in the store, three chargers confirmed.
        gate = fleet.gate()
        assert gate.state == GATE_PENDING and gate.pending_id == second.id
        confirmed = {cid for cid, r in fleet.charger_rows().items() if r.state == CHARGER_CONFIRMED
                     and '"fleet": 2' in r.bundles_json}
        assert confirmed == {s.charger_id for s in online}
        asked_before = {s.charger_id: s.id_requests for s in online}

        async with fleet.certd() as (service, rollover):
            assert fleet.served_serial(service) == first.serial  # still gated after the restart
            await until(lambda: all(s.connections == 2 and s.online.is_set() for s in online),
                        "the online chargers reconnected to the restarted certd")
            await _connect(fleet, later)
            await until(lambda: fleet.served_serial(service) == second.serial, "switch after the restart")
            for sim in online:  # nothing re-sent, not even asked again
                assert len(sim.install_requests) == 1
                assert sim.id_requests == asked_before[sim.charger_id]
            for sim in later:
                assert sim.holds(root_b) and len(sim.install_requests) == 1
            await _stop(sims)

    run(main())
