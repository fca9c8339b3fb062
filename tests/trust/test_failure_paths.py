"""What the fleet must keep when things go wrong: the served chain, a jammed outbox, exports."""

from __future__ import annotations

import datetime as dt
import logging
import re

from cryptography.hazmat.primitives import hashes
from sqlmodel import select

from certd.cli import main
from certd.store.db import session_scope
from certd.store.models import ManagedCertificate
from certd.store.rollover import RolloverGate
from certd.store.trust import TrustDelivery, TrustDeliveryAttempt
from certd.store.types import utcnow
from certd.trust import outbox, versions
from certd.trust.quectel import format_checksum, xor16
from certd.trust.track import on_issued, refresh_bundles
from tests import pki
from tests.trust.conftest import bundle_toml, toml_str
from tests.trust.registry_server import RegistryServer

SECRET = "hmac-secret-for-failure-tests"
TOKEN_PART = "tok-9f8e7d6c5b4a"


# -- 1. the issuance a listener still serves keeps its CAs in the bundle ------------------
def _old_and_new(world):
    """A 1-year private-CA leaf issued 243 days ago (older than recent_days 90), then its renewal."""
    old_root, new_root = pki.root("Served Root 2025"), pki.root("Served Root 2026")
    old_inter = pki.intermediate("Served Old Issuing", old_root)
    new_inter = pki.intermediate("Served New Issuing", new_root)
    world.trust_anchor(old_root, new_root)
    config = world.config(bundle_toml(world.anchors_dir))
    old_leaf = pki.leaf(["ocpp.example.com"], old_inter,
                        not_after=pki.NOW + dt.timedelta(days=122), days=365)
    old = world.issue("ocpp", ["ocpp.example.com"], old_leaf, [old_inter],
                      issued_at=pki.NOW - dt.timedelta(days=243))
    on_issued(config, world.engine, old, deliver=False)
    new = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], new_inter, days=365),
                      [new_inter])
    return config, old, new, {c.cert.fingerprint(hashes.SHA256()).hex() for c in (old_root, old_inter)}


def _members(world, flavour: str) -> set[str]:
    with session_scope(world.engine) as session:
        row = versions.latest(session, "fleet", flavour)
        assert row is not None
        return {m.fingerprint for m in versions.members(row)}


def test_current_issuance_older_than_recent_days_keeps_its_root_and_intermediate(world) -> None:
    config, old, new, old_cas = _old_and_new(world)
    with session_scope(world.engine) as session:  # a failed deploy: the old one is still current
        managed = session.get(ManagedCertificate, "ocpp")
        managed.current_id = old.id
        session.add(managed)
    result = on_issued(config, world.engine, new, deliver=False)
    assert {c.seq for c in result.changes} == {2}
    assert all(not c.diff.removed for c in result.changes)
    assert old_cas <= _members(world, "full")
    assert len(_members(world, "roots")) == 2


def test_rollover_gate_served_issuance_keeps_its_cas_until_nothing_serves_it(world) -> None:
    config, old, new, old_cas = _old_and_new(world)
    with session_scope(world.engine) as session:  # the gate holds the new one back on a listener
        session.add(RolloverGate(listener="ocpp-main", cert_name="ocpp", bundle="fleet",
                                 served_id=old.id, pending_id=new.id, decided_id=new.id, state="pending"))
    on_issued(config, world.engine, new, deliver=False)
    assert old_cas <= _members(world, "full")
    with session_scope(world.engine) as session:  # switched: nothing serves the old one any more
        gate = session.get(RolloverGate, ("ocpp-main", "ocpp"))
        gate.served_id, gate.pending_id, gate.state = new.id, None, "idle"
        session.add(gate)
    refresh_bundles(config, world.engine, deliver=False)
    assert not old_cas & _members(world, "full")


def _issued_under_new_root(world, name: str):  # type: ignore[no-untyped-def]
    """A leaf for ocpp.example.com under a fresh root `name` + intermediate, the root trusted."""
    root = pki.root(f"{name} Root")
    inter = pki.intermediate(f"{name} Inter", root)
    world.trust_anchor(root)
    return world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])


def _hmac_secret(tmp_path):  # type: ignore[no-untyped-def]
    secret = tmp_path / "hmac"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    return secret


# -- 2./3. the outbox: a broken registry is backed off and never starves another ----------
def _registries(tmp_path, good_url: str) -> str:
    secret = _hmac_secret(tmp_path)
    return ('[[trust.registries]]\nname = "a-broken"\nurl = "https://127.0.0.1:9/x"\n'
            f'hmac_secret_file = {toml_str(secret)}\nca_file = {toml_str(tmp_path / "no-such-ca.pem")}\n'
            'flavours = ["full"]\n'
            f'[[trust.registries]]\nname = "b-good"\nurl = "{good_url}"\nhmac_secret_file = {toml_str(secret)}\n'
            'auth_env = "CERTD_TEST_FAILURE_AUTH"\nflavours = ["full"]\n')


def _issue_one(world, config) -> None:
    on_issued(config, world.engine, _issued_under_new_root(world, "Outbox"), deliver=False)


def _rows(world) -> dict[str, TrustDelivery]:
    with session_scope(world.engine) as session:
        return {d.registry_name: d for d in session.exec(select(TrustDelivery)).all()}


def test_registry_with_missing_ca_file_backs_off_and_does_not_starve_the_next(
        world, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CERTD_TEST_FAILURE_AUTH", "Bearer good")
    with RegistryServer(SECRET, auth="Bearer good") as server:
        config = world.config(bundle_toml(world.anchors_dir, registries=_registries(tmp_path, server.url)))
        _issue_one(world, config)
        now = utcnow()
        reports = {r.registry: r for r in outbox.deliver(config, world.engine, now=now)}
        assert reports["b-good"].outcome == "accepted" and len(server.state.accepted) == 1
    assert reports["a-broken"].outcome == "retry"
    assert "no-such-ca.pem" in reports["a-broken"].detail
    rows = _rows(world)
    assert rows["b-good"].state == outbox.DELIVERED
    broken = rows["a-broken"]
    assert broken.state == outbox.PENDING and broken.lease_until is None
    assert broken.next_attempt_at > now
    assert outbox.deliver(config, world.engine, now=now + dt.timedelta(seconds=1)) == []  # backed off


def test_any_push_target_exception_is_a_recorded_retry(world, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CERTD_TEST_FAILURE_AUTH", "Bearer good")
    config = world.config(bundle_toml(world.anchors_dir, registries=_registries(tmp_path, "http://127.0.0.1:9/x")))
    _issue_one(world, config)

    class CrashingTarget:
        def deliver(self, message):
            raise RuntimeError(f"secret-looking {TOKEN_PART}")

    reports = outbox.deliver(config, world.engine, target_for=lambda registry: CrashingTarget())
    assert [r.outcome for r in reports] == ["retry", "retry"]
    assert all("RuntimeError" in r.detail and TOKEN_PART not in r.detail for r in reports)
    with session_scope(world.engine) as session:
        assert {a.outcome for a in session.exec(select(TrustDeliveryAttempt)).all()} == {"retry"}


def test_auth_token_with_a_newline_never_reaches_logs_reports_or_store(
        world, tmp_path, monkeypatch, capsys, caplog) -> None:
    monkeypatch.setenv("CERTD_TEST_FAILURE_AUTH", f"Bearer {TOKEN_PART}\nX-Injected: 1")
    caplog.set_level(logging.DEBUG)
    with RegistryServer(SECRET) as server:
        config = world.config(bundle_toml(world.anchors_dir, registries=_registries(tmp_path, server.url)))
        _issue_one(world, config)
        reports = outbox.deliver(config, world.engine)
        code = main(["--config", str(world.tmp / "certd.toml"), "fleet", "push", "--retry"])
        assert server.state.seen == []  # nothing was sent with the broken header
    good = next(r for r in reports if r.registry == "b-good")
    assert good.outcome == "retry"
    assert "line break" in good.detail and "CERTD_TEST_FAILURE_AUTH" in good.detail
    assert code == 1
    with session_scope(world.engine) as session:
        stored = [d.last_error or "" for d in session.exec(select(TrustDelivery)).all()]
        stored += [a.detail or "" for a in session.exec(select(TrustDeliveryAttempt)).all()]
    everything = "\n".join([caplog.text, *capsys.readouterr(), *(r.line() for r in reports), *stored])
    assert "line break" in everything
    assert TOKEN_PART not in everything


def test_backoff_never_overflows() -> None:
    assert outbox.retry_delay(513).total_seconds() == outbox.MAX_DELAY
    assert outbox.retry_delay(10**6).total_seconds() == outbox.MAX_DELAY
    assert outbox.retry_delay(10**6, retry_after=60).total_seconds() == outbox.MAX_DELAY


# -- 4. two Quectel kits in one directory ------------------------------------------------
def test_two_quectel_kits_in_one_directory_each_match_their_own_file(world, tmp_path) -> None:
    kit = tmp_path / "kit"
    extra = (f'[[trust.bundles.exports]]\nformat = "quectel"\ndir = {toml_str(kit)}\nflavour = "roots"\n'
             f'[[trust.bundles.exports]]\nformat = "quectel"\ndir = {toml_str(kit)}\nflavour = "full"\n')
    issued = _issued_under_new_root(world, "Kit")
    config = world.config(bundle_toml(world.anchors_dir, extra=extra))
    on_issued(config, world.engine, issued, deliver=False)
    scripts = sorted(kit.glob("*.at"))
    assert [s.name for s in scripts] == ["fleet-full.quectel.at", "fleet-roots.quectel.at"]
    sizes = set()
    for script in scripts:
        text = script.read_text()
        local = re.search(r"send exactly the \d+ bytes of (\S+),", text).group(1)
        data = (kit / local).read_bytes()
        size, checksum = re.search(r"# expect: \+QFUPL: (\d+),([0-9a-f]{4})", text).groups()
        assert (int(size), checksum) == (len(data), format_checksum(xor16(data)))
        assert f'AT+QFUPL="UFS:ca.pem",{len(data)},60' in text  # the module's file name is unchanged
        sizes.add(len(data))
    assert len(sizes) == 2


# -- 5. `certd bundle refresh`: failures exit non-zero, a failed export is repaired --------
def test_refresh_exits_nonzero_on_export_failure_and_rewrites_it_once_fixed(world, tmp_path, capsys) -> None:
    _issued_under_new_root(world, "Refresh")
    blocker = tmp_path / "exports"
    blocker.write_text("a file where the directory should be")
    extra = f'[[trust.bundles.exports]]\nformat = "pem"\ndir = {toml_str(blocker / "kit")}\n'
    world.config(bundle_toml(world.anchors_dir, extra=extra))
    argv = ["--config", str(world.tmp / "certd.toml"), "bundle", "refresh"]
    assert main(argv) == 1
    assert "incomplete: 1 export(s) not written" in capsys.readouterr().out

    blocker.unlink()  # the operator fixes the directory; no bundle changes on the next refresh
    assert main(argv) == 0
    assert "no bundle changed" in capsys.readouterr().out
    exported = blocker / "kit" / "fleet-full.pem"
    with session_scope(world.engine) as session:
        latest_pem = versions.latest(session, "fleet", "full").pem
    assert exported.read_text() == latest_pem

    exported.write_text("stale\n")  # a stale copy is rewritten too
    assert main(argv) == 0
    assert exported.read_text() == latest_pem


def test_refresh_exits_nonzero_when_a_registry_does_not_accept(world, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CERTD_TEST_FAILURE_AUTH", "Bearer good")
    _issued_under_new_root(world, "Refresh Reg")
    secret = _hmac_secret(tmp_path)
    with RegistryServer(SECRET, auth="Bearer good") as server:
        server.state.fail_statuses = [503, 503]
        regs = (f'[[trust.registries]]\nname = "reg"\nurl = "{server.url}"\n'
                f'hmac_secret_file = {toml_str(secret)}\nauth_env = "CERTD_TEST_FAILURE_AUTH"\n')
        world.config(bundle_toml(world.anchors_dir, registries=regs))
        assert main(["--config", str(world.tmp / "certd.toml"), "bundle", "refresh"]) == 1
    assert "2 delivery(ies) not accepted" in capsys.readouterr().out


def test_refresh_without_push_is_not_a_failure(world, tmp_path) -> None:
    _issued_under_new_root(world, "Refresh NoPush")
    secret = _hmac_secret(tmp_path)
    regs = (f'[[trust.registries]]\nname = "reg"\nurl = "http://127.0.0.1:9/x"\n'
            f'hmac_secret_file = {toml_str(secret)}\n')
    world.config(bundle_toml(world.anchors_dir, registries=regs))
    assert main(["--config", str(world.tmp / "certd.toml"), "bundle", "refresh", "--no-push"]) == 0
