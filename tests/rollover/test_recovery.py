"""The engine gets out of states it used to stay in: priority roots that change without a new
bundle version, a gate blocked on unknown roots after the anchor set is fixed, and charger facts
from a failed query or contradicted by a Rejected install."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from certd.config import parse_config
from certd.ocpp import charger_registry
from certd.rollover.engine import RolloverEngine
from certd.ocpp.service import OcppService
from certd.store.db import session_scope
from certd.store.rollover import GATE_BLOCKED, GATE_IDLE, GATE_PENDING, RolloverCharger, RolloverGate
from certd.trust import versions
from certd.rollover.gate_store import listener_status
from certd.trust.track import on_issued, refresh_bundles
from tests.rollover.conftest import run, until
from tests.rollover.sim import Behavior, SimCharger
from tests.rollover.test_engine import HOST, config_text, store_issued, two_root_lab
from tests import pki


def test_arc_charger_is_given_new_priority_roots_within_the_same_bundle_version(tmp_path: Path) -> None:
    # Served chain ends at A; an alternate chain ends at B, so B is in bundle version 1 already.
    lab = two_root_lab(tmp_path, "P", b_in_first_bundle=True)
    root_a, root_b, inter_b, engine, config = lab.root_a, lab.root_b, lab.inter_b, lab.engine, lab.config
    b_by_a = pki.cross_sign(root_b, root_a)
    charger_registry.insert_charger(engine, "ARC", password_hash=None, heartbeat_class="default")

    def arc_sim() -> SimCharger:
        return SimCharger("ARC", "ocpp2.0.1", [root_a.pem], HOST, Behavior(additional_root_check=True))

    async def main() -> None:
        service = OcppService(config, engine)
        await service.start()
        rollover = RolloverEngine(config, engine, service)
        await rollover.start()
        url_ws = f"wss://127.0.0.1:{service.listener('main').ports[0]}/ocpp/ARC"
        sim = arc_sim()
        sim.start(url_ws)
        await until(lambda: sim.online.is_set(), "online")
        assert await rollover.wait_idle(20)
        with session_scope(engine) as session:
            seq_before = versions.latest(session, "fleet", "roots").seq
            assert session.get(RolloverCharger, "ARC").state == "confirmed"
        await sim.stop()
        await until(lambda: service.charger("ARC") is None, "disconnected")

        # The CA moves to B; the alternate chain offers B cross-signed by A. No new bundle version.
        second = store_issued(engine, pki.leaf([HOST], inter_b), [inter_b], alternates=[[inter_b, b_by_a]])
        on_issued(config, engine, second, deliver=False)
        await rollover.on_issued("ocpp")
        with session_scope(engine) as session:
            assert versions.latest(session, "fleet", "roots").seq == seq_before
            assert session.get(RolloverGate, ("main", "ocpp")).state == GATE_PENDING
        # `certd fleet status` agrees with the gate: the charger lacks B, so it is not confirmed.
        [status], _ = listener_status(config, engine, now=dt.datetime.now(dt.timezone.utc), live=set())
        assert status.counts["confirmed"] == 0 and status.counts["offline"] == 1
        assert status.gates[0].gate is not None and status.gates[0].gate.confirmed == ()

        sim = arc_sim()
        sim.start(url_ws)
        await until(lambda: sim.holds(b_by_a.cert), "ARC charger given B cross-signed by A", 20)
        await until(lambda: service.served("main")[0].serial == second.serial, "gate opened", 20)
        with session_scope(engine) as session:
            gate = session.get(RolloverGate, ("main", "ocpp"))
            assert gate.state == GATE_IDLE and not gate.forced
        assert sim.install_requests == [b_by_a.pem]
        await rollover.close()
        await sim.stop()
        await service.close()

    run(main())


def test_blocked_gate_opens_once_the_anchor_set_knows_the_new_root(tmp_path: Path) -> None:
    lab = two_root_lab(tmp_path, "S", trust_b=False)
    root_a, root_b, inter_b, url, engine, config = (lab.root_a, lab.root_b, lab.inter_b, lab.url,
                                                     lab.engine, lab.config)
    sim = SimCharger("P1", "ocpp1.6", [root_a.pem], HOST)
    charger_registry.insert_charger(engine, sim.charger_id, password_hash=None, heartbeat_class="default")

    async def main() -> None:
        service = OcppService(config, engine)
        await service.start()
        rollover = RolloverEngine(config, engine, service)
        await rollover.start()
        sim.start(f"wss://127.0.0.1:{service.listener('main').ports[0]}/ocpp/{sim.charger_id}")
        await until(lambda: sim.online.is_set(), "online")
        assert await rollover.wait_idle(20)
        second = store_issued(engine, pki.leaf([HOST], inter_b), [inter_b])
        await rollover.on_issued("ocpp")  # root B is in no anchor set yet
        with session_scope(engine) as session:
            assert session.get(RolloverGate, ("main", "ocpp")).state == GATE_BLOCKED
        await rollover.close()

        # The operator adds root B to the anchor set, as the error says; certd reloads.
        (tmp_path / "anchors" / "b.pem").write_text(root_b.pem)
        (tmp_path / "roots.pem").write_text(root_a.pem + root_b.pem)
        fixed = parse_config(config_text(tmp_path, url))
        refresh_bundles(fixed, engine, deliver=False)
        rollover = RolloverEngine(fixed, engine, service)
        await rollover.start()
        await until(lambda: sim.holds(root_b.cert), "charger holds B", 20)
        await until(lambda: service.served("main")[0].serial == second.serial, "gate opened", 20)
        with session_scope(engine) as session:
            gate = session.get(RolloverGate, ("main", "ocpp"))
            assert gate.state == GATE_IDLE and not gate.forced
            assert "hold the new roots" in (gate.switch_reason or "")
        await rollover.close()
        await sim.stop()
        await service.close()

    run(main())


def _facts_lab(tmp_path: Path, behavior: Behavior) -> tuple:  # type: ignore[type-arg]
    lab = two_root_lab(tmp_path, "F")
    config = parse_config(config_text(tmp_path, lab.url, "retry_after = 10"))
    sim = SimCharger("ARC", "ocpp2.0.1", [lab.root_a.pem], HOST, behavior)
    charger_registry.insert_charger(lab.engine, sim.charger_id, password_hash=None, heartbeat_class="default")
    return lab, config, sim


def _run_until_cross_signed_sent(lab, config, sim, before_issuance, after_rejection) -> None:  # type: ignore[no-untyped-def]
    """Connect, call `before_issuance`, issue under root B (with B cross-signed by A as an
    alternate), let the first install be Rejected, call `after_rejection`, then retry past
    `retry_after` until B cross-signed by A is sent and held."""
    b_by_a = pki.cross_sign(lab.root_b, lab.root_a)
    offset = [dt.timedelta(0)]

    def clock() -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + offset[0]

    async def main() -> None:
        service = OcppService(config, lab.engine)
        await service.start()
        rollover = RolloverEngine(config, lab.engine, service, clock=clock)
        await rollover.start()
        sim.start(f"wss://127.0.0.1:{service.listener('main').ports[0]}/ocpp/{sim.charger_id}")
        await until(lambda: sim.online.is_set(), "online")
        assert await rollover.wait_idle(20)
        before_issuance()
        second = store_issued(lab.engine, pki.leaf([HOST], lab.inter_b), [lab.inter_b],
                              alternates=[[lab.inter_b, b_by_a]])
        on_issued(config, lab.engine, second, deliver=False)
        await rollover.on_issued("ocpp")
        await until(lambda: len(sim.install_requests) >= 1, "first install")
        assert await rollover.wait_idle(20)
        assert sim.install_requests == [lab.root_b.pem]  # facts say: no cross-sign rule
        with session_scope(lab.engine) as session:
            row = session.get(RolloverCharger, "ARC")
            assert row.last_result == "Rejected" and row.facts_at is None
        after_rejection()
        for _ in range(3):
            offset[0] += dt.timedelta(seconds=20)  # past retry_after
            await rollover.sweep()
            assert await rollover.wait_idle(20)
        assert sim.install_requests[-1] == b_by_a.pem
        assert sim.holds(b_by_a.cert)
        with session_scope(lab.engine) as session:
            row = session.get(RolloverCharger, "ARC")
            assert row.state == "confirmed" and row.additional_root_check is True
            assert row.facts_at is not None
        await rollover.close()
        await sim.stop()
        await service.close()

    run(main())


def test_facts_from_a_failed_query_are_asked_again(tmp_path: Path) -> None:
    lab, config, sim = _facts_lab(tmp_path, Behavior(additional_root_check=True, report_limits=False))

    def query_works_again() -> None:
        sim.behavior.report_limits = True

    _run_until_cross_signed_sent(lab, config, sim, lambda: None, query_works_again)


def test_facts_are_asked_again_after_a_rejected_install(tmp_path: Path) -> None:
    # The charger answered "no AdditionalRootCertificateCheck" when it connected; then the
    # operator switched it on, so the cached facts are wrong.
    lab, config, sim = _facts_lab(tmp_path, Behavior(additional_root_check=False))

    def switch_rule_on() -> None:
        with session_scope(lab.engine) as session:
            row = session.get(RolloverCharger, "ARC")
            assert row.facts_at is not None and row.additional_root_check is False
        sim.behavior.additional_root_check = True

    _run_until_cross_signed_sent(lab, config, sim, switch_rule_on, lambda: None)
