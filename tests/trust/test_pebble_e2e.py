"""Bundles from real issuances against Pebble (DNS-01 through the Cloudflare emulator)."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509

from certd.issue.flow import issue_certificate
from certd.config import parse_config
from certd.issue.keys import split_pem_chain
from certd.sandbox import PebbleServer, SandboxWorld
from certd.sandbox.certd_config import TOKEN_ENV, sandbox_config_toml, toml_str
from certd.store.db import make_engine, session_scope, upgrade
from certd.trust import versions
from certd.trust.quectel import format_checksum, xor16
from certd.trust.track import on_issued
from tests.conftest import missing_part

HOST = "ocpp.example.com"


def _config(world: SandboxWorld, pebble: PebbleServer, tmp: Path, anchors: Path):
    trust = (f"[trust.anchor_sets]\npebble = {toml_str(anchors)}\n"
             f'[[trust.bundles]]\nname = "fleet"\nanchors = "pebble"\n'
             f'[trust.bundles.quectel]\nciphersuite = "0xC02F"\n')
    certs = f'[[certificates]]\nname = "ocpp"\ndomains = ["{HOST}"]\n'
    text = sandbox_config_toml(world, pebble, tmp / "state", certs, extra=trust)
    (tmp / "certd.toml").write_text(text)
    config = parse_config(text, str(tmp / "certd.toml"))
    upgrade(config.db_url)
    return config, make_engine(config.db_url)


def _trust_pebble_roots(pebble: PebbleServer, anchors: Path) -> None:
    anchors.mkdir(exist_ok=True)
    for root in pebble.roots():
        cert = x509.load_pem_x509_certificate(root.encode())
        (anchors / f"pebble-{cert.serial_number:x}.pem").write_text(root)


def _cn(subject: str) -> str:
    return subject.split(",")[0].removeprefix("CN=")


def _subject(pem: str) -> str:
    return x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()


def test_pebble_restart_new_root_gives_new_version_naming_root_and_intermediate(
        cf_world, pebble, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, cf_world.token)
    anchors = tmp_path / "anchors"
    _trust_pebble_roots(pebble, anchors)
    config, engine = _config(cf_world, pebble, tmp_path, anchors)
    first = issue_certificate(config, engine, "ocpp")
    r1 = on_issued(config, engine, first, deliver=False)
    assert {(c.flavour, c.seq) for c in r1.changes} == {("roots", 1), ("full", 1)}
    old_root, old_inter = _subject(pebble.roots()[0]), _subject(pebble.intermediates()[0])

    pebble.restart()
    new_root, new_inter = _subject(pebble.roots()[0]), _subject(pebble.intermediates()[0])
    assert new_root != old_root
    _trust_pebble_roots(pebble, anchors)
    second = issue_certificate(config, engine, "ocpp")
    r2 = on_issued(config, engine, second, deliver=False)

    full = next(c for c in r2.changes if c.flavour == "full")
    assert full.seq == 2 and full.previous_seq == 1
    assert sorted(s.subject for s in full.diff.added) == sorted([new_root, new_inter])
    roles = {s.subject: s.role for s in full.diff.added}
    assert roles == {new_root: "root", new_inter: "intermediate"}
    roots = next(c for c in r2.changes if c.flavour == "roots")
    assert [s.subject for s in roots.diff.added] == [new_root]
    with session_scope(engine) as session:
        members = {s.subject for s in versions.members(versions.get(session, "fleet", "full"))}
    assert {old_root, old_inter, new_root, new_inter} <= members  # the previous chain stays while recent

    # export: byte counts and the Quectel checksum match the files written
    import subprocess, sys, os
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "certd", "--config", str(tmp_path / "certd.toml"),
                           "bundle", "export", "fleet", "--format", "quectel", "--out", str(out)],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = (out / "fleet-full.ca.pem").read_bytes()
    script = (out / "fleet-full.quectel.at").read_text()
    size = int(re.search(r'AT\+QFUPL="UFS:ca.pem",(\d+),60', script).group(1))
    expect = re.search(r"# expect: \+QFUPL: (\d+),([0-9a-f]{4})", script)
    assert size == len(data) == int(expect.group(1))
    assert expect.group(2) == format_checksum(xor16(data))
    assert 'AT+QSSLCFG="ciphersuite",1,0xC02F' in script
    assert data.count(b"BEGIN CERTIFICATE") == len(members)
    assert f"+QFUPL: {len(data)},{format_checksum(xor16(data))}" in proc.stdout


def test_pebble_chain_length_puts_every_intermediate_in_full(cf_world, tmp_path, monkeypatch) -> None:
    from certd.sandbox import PebbleNotFoundError, find_pebble

    try:
        find_pebble()
    except PebbleNotFoundError as exc:
        missing_part(str(exc))
    monkeypatch.setenv(TOKEN_ENV, cf_world.token)
    with PebbleServer(cf_world.dns_addr, chain_length=4) as pebble:
        anchors = tmp_path / "anchors"
        _trust_pebble_roots(pebble, anchors)
        config, engine = _config(cf_world, pebble, tmp_path, anchors)
        issued = issue_certificate(config, engine, "ocpp")
        result = on_issued(config, engine, issued, deliver=False)
        served = [_subject(p) for p in split_pem_chain(issued.chain_pem)]
        assert len(served) >= 2, "PEBBLE_CHAIN_LENGTH > 1 should serve several intermediates"
        with session_scope(engine) as session:
            full = versions.members(versions.get(session, "fleet", "full"))
            roots = versions.members(versions.get(session, "fleet", "roots"))
        inters = {s.subject for s in full if s.role != "root"}
        assert set(served) - {_subject(pebble.roots()[0])} <= inters
        assert len(inters) == len(set(served) - {_subject(pebble.roots()[0])})
        assert [s.subject for s in roots] == [_subject(pebble.roots()[0])]
        assert [role for role, _, _ in result.chain] == ["intermediate"] * len(served) + ["root"]


def test_a_deploy_that_fails_still_records_the_chain_for_the_fleet(cf_world, pebble, tmp_path, monkeypatch) -> None:
    """The certificate is issued and stored, its files cannot be written: the fleet bundles must
    still learn its chain (chargers will be served it once the files are fixed)."""
    import pytest

    from certd.renewal import pipeline
    from certd.errors import DeployError

    monkeypatch.setenv(TOKEN_ENV, cf_world.token)
    anchors = tmp_path / "anchors"
    _trust_pebble_roots(pebble, anchors)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the target directory should be\n")
    trust = (f"[trust.anchor_sets]\npebble = {toml_str(anchors)}\n"
             f'[[trust.bundles]]\nname = "fleet"\nanchors = "pebble"\n')
    certs = (f'[[certificates]]\nname = "ocpp"\ndomains = ["{HOST}"]\n'
             f'[[certificates.targets]]\nfullchain = {toml_str(blocker / "fullchain.pem")}\n')
    text = sandbox_config_toml(cf_world, pebble, tmp_path / "state", certs, extra=trust)
    config = parse_config(text, str(tmp_path / "certd.toml"))
    upgrade(config.db_url)
    engine = make_engine(config.db_url)
    try:
        with pytest.raises(DeployError, match="nothing was replaced"):
            pipeline.issue_and_deploy(config, engine, "ocpp")
        with session_scope(engine) as session:
            assert versions.latest(session, "fleet", "roots") is not None
            assert versions.latest(session, "fleet", "full") is not None
    finally:
        engine.dispose()
