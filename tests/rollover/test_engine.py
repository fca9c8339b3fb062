"""The engine with a test PKI (no Pebble): cross-signed roots for AdditionalRootCertificateCheck,
store limits, per-listener gate share, status; config errors; the migration on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import pytest
import sqlalchemy as sa

from certd.config import parse_config
from certd.errors import ConfigError
from certd.ocpp import charger_registry
from certd.rollover.engine import RolloverEngine
from certd.sandbox.certd_config import ocpp_listener, ocpp_toml
from certd.ocpp.service import OcppService
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.models import IssuedCertificate
from certd.store.rollover import RolloverCharger, RolloverGate
from certd.store.types import utcnow
from certd.rollover.gate_store import gate_specs, listener_status
from certd.trust.track import on_issued
from tests.rollover.conftest import run, until
from tests.rollover.sim import Behavior, SimCharger
from tests import pki

HOST = "ocpp.example.test"


def config_text(tmp: Path, db_url: str, rollover: str = "") -> str:
    return f"""
state_dir = {json.dumps(str(tmp / 'state'))}
database_url = {json.dumps(db_url)}

[[certificates]]
name = "ocpp"
domains = ["{HOST}"]

[trust.anchor_sets]
lab = {json.dumps(str(tmp / 'anchors'))}

[[trust.bundles]]
name = "fleet"
anchors = "lab"

{ocpp_toml([ocpp_listener("main", HOST, certificates=["ocpp"])], unknown_chargers="accept",
           reload_check_interval=0, trust_roots=[tmp / "roots.pem"])}
[rollover]
boot_wait = 0.5
check_interval = 1
call_timeout = 5
{rollover}
"""


def store_issued(engine: sa.Engine, leaf: pki.Ca, chain: list[pki.Ca],
                 alternates: list[list[pki.Ca]] | None = None) -> IssuedCertificate:
    return pki.store_issued(engine, "ocpp", [HOST], leaf, chain, alternates=alternates)


@dataclass
class Lab:
    """Two roots with an intermediate each; certd trusts both and serves a leaf under root A."""

    root_a: Any
    root_b: Any
    inter_a: Any
    inter_b: Any
    url: str
    engine: Any
    config: Any
    first: IssuedCertificate


def two_root_lab(tmp_path: Path, prefix: str, *, b_in_first_bundle: bool = False,
                 trust_b: bool = True) -> Lab:
    """`b_in_first_bundle`: the first issuance offers an alternate chain ending at root B, so
    B is in bundle version 1 already. `trust_b=False`: root B is in no anchor set (yet)."""
    root_a, root_b = pki.root(f"{prefix} Root A"), pki.root(f"{prefix} Root B")
    inter_a = pki.intermediate(f"{prefix} Inter A", root_a)
    inter_b = pki.intermediate(f"{prefix} Inter B", root_b)
    (tmp_path / "anchors").mkdir()
    (tmp_path / "anchors" / "a.pem").write_text(root_a.pem)
    if trust_b:
        (tmp_path / "anchors" / "b.pem").write_text(root_b.pem)
    (tmp_path / "roots.pem").write_text(root_a.pem + (root_b.pem if trust_b else ""))
    url = f"sqlite:///{tmp_path / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    config = parse_config(config_text(tmp_path, url))
    alternates = [[pki.cross_sign(inter_a, root_b)]] if b_in_first_bundle else None
    first = store_issued(engine, pki.leaf([HOST], inter_a), [inter_a], alternates=alternates)
    on_issued(config, engine, first, deliver=False)
    return Lab(root_a, root_b, inter_a, inter_b, url, engine, config, first)


def test_cross_sign_store_limits_and_per_listener_share(tmp_path: Path) -> None:
    lab = two_root_lab(tmp_path, "Lab")
    root_a, root_b, inter_b, url = lab.root_a, lab.root_b, lab.inter_b, lab.url
    engine, config, first = lab.engine, lab.config, lab.first
    b_by_a = pki.cross_sign(root_b, root_a)

    sims = [
        SimCharger("PLAIN", "ocpp1.6", [root_a.pem], HOST),
        SimCharger("ARCC", "ocpp2.0.1", [root_a.pem], HOST, Behavior(additional_root_check=True)),
        SimCharger("FULL16", "ocpp1.6", [root_a.pem], HOST, Behavior(store_max=1)),
        SimCharger("FULL201", "ocpp2.0.1", [root_a.pem], HOST, Behavior(store_max=1)),
    ]
    for sim in sims:
        charger_registry.insert_charger(engine, sim.charger_id, password_hash=None, heartbeat_class="default")

    async def main() -> None:
        service = OcppService(config, engine)
        await service.start()
        rollover = RolloverEngine(config, engine, service)
        await rollover.start()
        port = service.listener("main").ports[0]
        for sim in sims:
            sim.start(f"wss://127.0.0.1:{port}/ocpp/{sim.charger_id}")
        await until(lambda: all(s.online.is_set() for s in sims), "sims online")
        assert await rollover.wait_idle(20)

        # The CA moves to root B; the chain offers B cross-signed by A as an alternate.
        second = store_issued(engine, pki.leaf([HOST], inter_b), [inter_b], alternates=[[inter_b, b_by_a]])
        on_issued(config, engine, second, deliver=False)
        await service.reload("ocpp")
        await rollover.on_issued("ocpp")
        await until(lambda: sims[0].holds(root_b.cert) and sims[1].holds(b_by_a.cert), "installs")
        assert await rollover.wait_idle(20)
        await rollover.evaluate()

        assert sims[0].install_requests == [root_b.pem]          # the self-signed form
        assert sims[1].install_requests == [b_by_a.pem]          # AdditionalRootCertificateCheck: cross-sign
        assert sims[2].install_requests == []                    # 1.6 said its store is full: not sent
        assert len(sims[3].install_requests) == 1                # 2.0.1 gives no maximum: it said Rejected
        with session_scope(engine) as session:
            rows = {r.charger_id: r for r in session.exec(sa.select(RolloverCharger)).scalars()}
        assert rows["PLAIN"].state == rows["ARCC"].state == "confirmed"
        assert rows["ARCC"].additional_root_check is True
        assert rows["FULL16"].last_result == "store-full" and "at most 1" in rows["FULL16"].last_reason
        assert rows["FULL16"].store_max == 1
        assert rows["FULL201"].last_result == "Rejected" and rows["FULL201"].store_used == 1
        assert service.served("main")[0].serial == first.serial

        statuses, _ = listener_status(config, engine, now=utcnow(), live=set(service.shared.sessions))
        [status] = statuses
        assert status.counts == {"confirmed": 2, "pending": 0, "failed": 2, "offline": 0}
        [gate] = status.gates
        assert gate.state == "pending" and gate.pending.id == second.id and gate.gate is not None
        assert gate.gate.needed == 4 and len(gate.gate.confirmed) == 2
        assert gate.required == (root_b.cert.subject.rfc4514_string(),)
        await rollover.close()

        # The operator accepts half the fleet on this listener: a restarted engine opens the gate.
        lenient = parse_config(config_text(tmp_path, url, rollover=(
            '[[rollover.listeners]]\nlistener = "main"\ngate_share = 0.5\n')))
        rollover = RolloverEngine(lenient, engine, service)
        await rollover.start()
        await until(lambda: service.served("main")[0].serial == second.serial, "switch at 50%")
        with session_scope(engine) as session:
            gate_row = session.get(RolloverGate, ("main", "ocpp"))
            assert gate_row.gate_share == 0.5 and "2/4" in gate_row.switch_reason
        await rollover.close()
        for sim in sims:
            await sim.stop()
        await service.close()

    run(main())


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    bad_listener = parse_config(config_text(tmp_path, url, '[[rollover.listeners]]\nlistener = "nope"\n'))
    with pytest.raises(ConfigError, match=r"rollover.listeners\[0\].listener: no OCPP listener named 'nope'"):
        gate_specs(bad_listener)
    bad_bundle = parse_config(config_text(tmp_path, url, '[[rollover.listeners]]\nlistener = "main"\nbundle = "x"\n'))
    with pytest.raises(ConfigError, match=r"rollover.listeners\[0\].bundle: no \[\[trust.bundles\]\] entry named 'x'"):
        gate_specs(bad_bundle)
    with pytest.raises(ConfigError, match=r"rollover.gate_share"):
        parse_config(config_text(tmp_path, url, "gate_share = 1.5"))
    with pytest.raises(ConfigError, match=r"rollover: listeners: main listed twice"):
        parse_config(config_text(tmp_path, url, '[[rollover.listeners]]\nlistener = "main"\n'
                                                '[[rollover.listeners]]\nlistener = "main"\n'))
    two = config_text(tmp_path, url).replace('[[ocpp]]', '') + '\n[[trust.bundles]]\nname = "other"\nanchors = "lab"\n'
    with pytest.raises(ConfigError, match="covered by bundles fleet, other"):
        gate_specs(parse_config(two))
    specs, _ = gate_specs(parse_config(config_text(tmp_path, url, "enabled = false")))
    assert specs == []
    no_bundle = config_text(tmp_path, url).replace('[[trust.bundles]]\nname = "fleet"\nanchors = "lab"\n', "")
    specs, notes = gate_specs(parse_config(no_bundle))
    assert specs == [] and "no [[trust.bundles]] entry covers certificate ocpp" in notes[0]
    specs, _ = gate_specs(parse_config(config_text(tmp_path, url, "deadline_days = 10")))
    assert [(s.listener, s.cert_name, s.bundle, s.gate_share, s.deadline_days) for s in specs] == [
        ("main", "ocpp", "fleet", 1.0, 10.0)]


def test_migration_matches_the_tables(db_url: str) -> None:
    """0006_rollover creates exactly what the models declare (SQLite and PostgreSQL)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import certd.store.all_tables  # noqa: F401

    upgrade(db_url)
    engine = make_engine(db_url)
    ours = {"rollover_gate", "rollover_charger"}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    mine = [d for d in diff if any(t in repr(d) for t in ours)]
    assert mine == []
    assert ours <= set(sa.inspect(engine).get_table_names())
    with session_scope(engine) as session:
        session.add(RolloverCharger(charger_id="DE*BMW*E1", held_json='["ab"]'))
    with session_scope(engine) as session:
        assert session.get(RolloverCharger, "DE*BMW*E1").held_json == '["ab"]'
    engine.dispose()


def test_forced_switch_alert_runs_the_daemon_notify_hook(tmp_path: Path) -> None:
    """The default alert hands the forced switch to `[daemon] notify_hook` (env + JSON on stdin)."""
    from certd.config import Config

    if "daemon" not in Config.model_fields:
        pytest.skip("this install has no [daemon] section (certd run's notify hook)")
    from certd.rollover.alerts import ForcedSwitch, notify_hook_alert
    from certd.rollover.gates import Lacking

    out = tmp_path / "alert.json"
    env_out = tmp_path / "alert.env"
    hook = f"cat > {out} && printf '%s|%s' \"$CERTD_EVENT\" \"$CERTD_LACKING\" > {env_out}"
    config = parse_config(config_text(tmp_path, "sqlite://", f"\n[daemon]\nnotify_hook = {json.dumps(hook)}\n"))
    event = ForcedSwitch("main", "ocpp", "fleet", 2, "deadline reached",
                         (Lacking("GSM-1", "Rejected: no; certd bundle export fleet --format quectel"),))
    notify_hook_alert(config)(event)
    payload = json.loads(out.read_text())
    assert payload["event"] == "rollover-forced" and payload["listener"] == "main"
    assert payload["lacking"] == [{"charger_id": "GSM-1",
                                   "reason": "Rejected: no; certd bundle export fleet --format quectel"}]
    assert env_out.read_text() == "rollover-forced|GSM-1"


def test_disabling_rollover_releases_a_waiting_gate(tmp_path: Path) -> None:
    """A gate left pending in the store is released when the config turns the rollover off."""
    lab = two_root_lab(tmp_path, "Off")
    inter_b, url, engine, config, first = lab.inter_b, lab.url, lab.engine, lab.config, lab.first
    charger_registry.insert_charger(engine, "NEVER-SEEN", password_hash=None, heartbeat_class="default")

    async def main() -> None:
        service = OcppService(config, engine)
        await service.start()
        rollover = RolloverEngine(config, engine, service)
        await rollover.start()
        second = store_issued(engine, pki.leaf([HOST], inter_b), [inter_b])
        on_issued(config, engine, second, deliver=False)
        await rollover.on_issued("ocpp")
        await service.reload("ocpp")
        assert service.served("main")[0].serial == first.serial  # NEVER-SEEN lacks root B
        await rollover.close()

        off = parse_config(config_text(tmp_path, url, "enabled = false"))
        rollover = RolloverEngine(off, engine, service)
        await rollover.start()
        await service.reload("ocpp")
        assert service.served("main")[0].serial == second.serial
        with session_scope(engine) as session:
            assert session.get(RolloverGate, ("main", "ocpp")) is None
        await rollover.close()
        await service.close()

    run(main())
